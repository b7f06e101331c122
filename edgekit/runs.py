"""Run folders (`x`, `x-2`, …), atomic checkpoint writes, the checkpoint schema, newest-run lookup."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError

CHECKPOINT_FORMAT = "edgekit-checkpoint/1"
RECIPE_FILE = "recipe.yaml"

# What every checkpoint holds besides tensors, so a model can be rebuilt without its recipe file.
MODEL_KEYS = ("arch", "options", "in_channels", "num_classes", "image_size", "mean", "std", "class_names")


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
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EdgekitError(f"{path}: not a readable edgekit checkpoint ({first})") from None
    found = ckpt.get("format") if isinstance(ckpt, dict) else None
    if found != CHECKPOINT_FORMAT:
        raise EdgekitError(f"{path}: checkpoint format {found!r}, expected '{CHECKPOINT_FORMAT}'")
    return ckpt


def run_dir_of(path: Path) -> Path:
    """The run folder named by `path` (a run folder or a checkpoint inside one), or a clear error."""
    path = Path(path)
    folder = path.parent if path.suffix == ".pt" else path
    if not folder.is_dir():
        raise EdgekitError(f"{path}: no such run folder")
    if not (folder / RECIPE_FILE).is_file() or not (folder / "last.pt").is_file():
        raise EdgekitError(f"{path}: not an edgekit run (expected {RECIPE_FILE} and last.pt in it)")
    return folder


def newest_run(runs_dir: Path) -> Path:
    """The most recently written run under `runs_dir` (recursing one level for sweeps)."""
    found = [p.parent for p in Path(runs_dir).glob("**/last.pt")]
    if not found:
        raise EdgekitError(f"{runs_dir}: no runs found (train one with `edgekit train recipes/x.yaml`)")
    return max(found, key=lambda p: (p / "last.pt").stat().st_mtime)
