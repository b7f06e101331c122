"""`Run`: a run folder's files, recipe, checkpoints, summary and status; atomic writes; checkpoints."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from zipfile import BadZipFile

from edgekit.errors import EdgekitError

CHECKPOINT_FORMAT = "edgekit-checkpoint/1"
# The files of a run folder; only this module spells their names.
RECIPE_FILE = "recipe.yaml"
BEST_FILE = "best.pt"
LAST_FILE = "last.pt"
SUMMARY_FILE = "summary.json"
ORIGIN_FILE = "origin.json"  # what a run was made from (e.g. the run it was pruned from)

# Why a run stopped, as summary.json's "stop" field ("stopped" keeps the sentence for people).
StopKind = Literal["finished", "early stop", "diverged", "interrupted"]
DONE: tuple[StopKind, ...] = ("finished", "early stop", "diverged")  # a diverged run would diverge again


@dataclass(frozen=True)
class Status:
    """new: nothing to resume from; partial: running, or interrupted with a checkpoint; finished."""

    state: Literal["new", "partial", "finished"]
    stop: StopKind | None  # why it stopped, once it has a summary
    epoch: int  # epochs in last.pt


class Run:
    """A run folder: the one owner of its file names, its recipe, its checkpoints and whether it is done."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    @classmethod
    def open(cls, path: Path) -> Run:
        """The run named by `path` (a run folder or a checkpoint inside one), or a clear error."""
        path = Path(path)
        folder = path.parent if path.suffix == ".pt" else path
        if not folder.is_dir():
            raise EdgekitError(f"{path}: no such run folder")
        if not (folder / RECIPE_FILE).is_file() or not (folder / LAST_FILE).is_file():
            raise EdgekitError(f"{path}: not an edgekit run (expected {RECIPE_FILE} and {LAST_FILE} in it)")
        return cls(folder)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def best(self) -> Path:
        return self.folder / BEST_FILE

    @property
    def last(self) -> Path:
        return self.folder / LAST_FILE

    @property
    def recipe_file(self) -> Path:
        return self.folder / RECIPE_FILE

    @property
    def summary_file(self) -> Path:
        return self.folder / SUMMARY_FILE

    def raw_recipe(self) -> dict[str, Any]:
        import yaml

        return yaml.safe_load(self.recipe_file.read_text())

    def recipe(self, overrides: list[str] | tuple[str, ...] = ()):
        """The run's resolved recipe, validated, with `overrides` applied (e.g. to extend a run)."""
        from edgekit.recipe import apply_overrides, validate

        raw = self.raw_recipe()
        apply_overrides(raw, overrides, str(self.recipe_file))
        return validate(raw, str(self.recipe_file))

    def write_recipe(self, recipe) -> None:
        import yaml

        write_text(self.recipe_file, yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))

    def summary(self) -> dict[str, Any] | None:
        return json.loads(self.summary_file.read_text()) if self.summary_file.is_file() else None

    def status(self) -> Status:
        summary = self.summary()
        stop = stop_kind(summary) if summary is not None else None
        epoch = load_checkpoint(self.last)["epoch"] if self.last.is_file() else 0
        if stop in DONE:
            return Status("finished", stop, epoch)
        if epoch == 0:
            return Status("new", stop, epoch)
        # Stopped after its last checkpoint but before its summary: nothing is left to train.
        done = epoch >= self.raw_recipe()["train"]["epochs"]
        return Status("finished" if done else "partial", "finished" if done else stop, epoch)


def stop_kind(summary: dict[str, Any]) -> StopKind:
    """summary.json's "stop"; summaries written before that field existed are read from "stopped"."""
    if "stop" in summary:
        return summary["stop"]
    reason = summary.get("stopped") or "interrupted"
    legacy = {"early stop": "early stop", "loss became": "diverged", "finished": "finished"}
    return next((kind for start, kind in legacy.items() if reason.startswith(start)), "interrupted")


def new_run_dir(runs_dir: Path, name: str) -> Path:
    """Create `runs/name`, or `name-2`, `name-3`, … : an existing run is never written into."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        path = runs_dir / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir()  # atomic: two runs started together get different folders
            return path
        except FileExistsError:
            continue
    raise EdgekitError(f"{runs_dir}: too many runs named '{name}'")


def atomic_write_bytes(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: a kill never leaves half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path, expected_format: str, what: str) -> dict[str, Any]:
    """A JSON file edgekit wrote, checked by its "format" key; one clear error when it is anything else."""
    try:
        data = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgekitError(f"{path}: not valid JSON ({e})") from None
    found = data.get("format") if isinstance(data, dict) else None
    if found != expected_format:
        raise EdgekitError(f"{path}: {what} format {found!r}, expected '{expected_format}'")
    return data


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    import torch

    payload = {"format": CHECKPOINT_FORMAT, **payload}
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint (tensors and plain data only) and check it is one edgekit can read."""
    import pickle

    import torch

    if not path.is_file():
        raise EdgekitError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    # Truncated: OSError; a damaged zip: KeyError or BadZipFile. Each is one line, not a traceback.
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, KeyError, BadZipFile) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EdgekitError(f"{path}: not a readable edgekit checkpoint ({first})") from None
    found = ckpt.get("format") if isinstance(ckpt, dict) else None
    if found != CHECKPOINT_FORMAT:
        raise EdgekitError(f"{path}: checkpoint format {found!r}, expected '{CHECKPOINT_FORMAT}'")
    return ckpt


def run_dir_of(path: Path) -> Path:
    """The run folder named by `path` (a run folder or a checkpoint inside one), or a clear error."""
    return Run.open(path).folder


def newest_run(runs_dir: Path) -> Path:
    """The most recently written run under `runs_dir` (recursing one level for sweeps)."""
    found = [p.parent for p in Path(runs_dir).glob(f"**/{LAST_FILE}")]
    if not found:
        raise EdgekitError(f"{runs_dir}: no runs found (train one with `edgekit train recipes/x.yaml`)")
    return max(found, key=lambda p: (p / LAST_FILE).stat().st_mtime)
