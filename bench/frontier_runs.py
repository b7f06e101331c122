"""bench/frontier.py's runs: the cache of finished runs keyed by resolved recipe, and `--jobs` waves."""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from common import ROOT, train
from rich.console import Console

import edgekit.train  # noqa: F401  (binds the registries the recipes are validated against)
from edgekit.recipe import load

# What every run in a frontier cache is given: the same overrides make the same keys, so the frontier, the
# teacher study and the bank's benchmark reuse each other's runs.
COMMON = ("train.device=cpu",)

# Schema fields added after runs were cached, each with the default that reproduces the behaviour from
# before: left out of the key while they hold it, so a growing schema does not throw the cache away.
# distill.precompute changes how often the teacher is asked, not what it answers (docs/train.md).
LATER_DEFAULTS: dict[tuple[str, str], object] = {
    ("model", "downsample"): None,
    ("distill", "precompute"): "auto",
    ("train", "select"): "best",  # which epoch best.pt holds; "best" is what every earlier run kept
    ("train", "val_every"): 1,
}


def cache_key(resolved: dict) -> str:
    """The hash of a resolved recipe (as dumped to JSON), without `track` and later fields at default."""
    resolved = {section: dict(v) if isinstance(v, dict) else v for section, v in resolved.items()}
    resolved.pop("track")
    for (section, name), default in LATER_DEFAULTS.items():
        values = resolved.get(section) or {}  # distill is None for a run trained alone
        if values.get(name, default) == default:
            values.pop(name, None)
    return hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:16]


class Cache:
    """Finished runs' summaries by the hash of their resolved recipe: reruns skip what is done."""

    def __init__(self, folder: Path, console: Console, planning: bool = False):
        self.folder, self.console = folder, console
        self.file = folder / "cache.jsonl"
        folder.mkdir(parents=True, exist_ok=True)
        self.done: dict[str, dict] = {}
        # Planning: a miss is noted in `missing` (unless it needs a run not yet made) and answered with
        # PENDING, so one pass over the benchmark lists what can be trained now, in parallel.
        self.planning, self.missing = planning, {}
        self.reload()

    def reload(self) -> None:
        """What every process sharing the cache has finished (workers may split the rungs between them)."""
        lines = self.file.read_text().splitlines() if self.file.exists() else []
        self.done = {d["key"]: d["summary"] for d in map(json.loads, lines)}

    def train(self, recipe: str, overrides: list[str]) -> dict:
        key = cache_key(load(ROOT / "recipes" / f"{recipe}.yaml", overrides).model_dump(mode="json"))
        if key not in self.done:
            self.reload()
        if key not in self.done and self.planning:
            if not any(PENDING["run"] in o for o in overrides):
                self.missing[key] = (recipe, overrides)
            return PENDING
        if key not in self.done:
            started = time.perf_counter()
            summary = train(recipe, overrides, self.folder / "runs")
            summary["bench_s"] = round(time.perf_counter() - started, 1)
            summary["finished_at"] = time.time()  # which call trained it: the whole-run goal needs to know
            with self.file.open("a") as f:
                f.write(
                    json.dumps({"key": key, "recipe": recipe, "overrides": overrides, "summary": summary})
                )
                f.write("\n")
            self.done[key] = summary
        s = self.done[key]
        val = "—" if s["val_acc"] is None else f"{s['val_acc']:.2%}"  # None: no val split
        self.console.print(
            f"{recipe} {' '.join(overrides)} → val {val} test {s['test_acc']:.2%}",
            markup=False,  # overrides hold brackets (lists), which are rich markup
        )
        return s


# What a planning Cache answers for a run not made yet; a run whose overrides name it waits a wave.
PENDING = {
    "val_acc": math.nan,
    "test_acc": math.nan,
    "params": 0,
    "run": "<pending>",
    "distill": {"teacher_test_acc": math.nan},
}


def _train_one(folder: Path, recipe: str, overrides: list[str]) -> None:
    """A worker process of `--jobs`: one thread, since the workers share the cores."""
    import torch

    torch.set_num_threads(1)
    Cache(folder, Console()).train(recipe, overrides)


def _exit_with_parent(parent: int) -> None:
    """A worker of a benchmark that was killed stops too, rather than train on as an orphan."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


@dataclass
class Wave:
    minutes: float  # wall time of the wave, from its first submission to its last run's end
    first: bool  # a wave of the runs `first` picked (the teachers), trained before everything else
    processes: int


def train_in_waves(measure, folder: Path, jobs: int, console: Console, first=None) -> list[Wave]:
    """Train everything `measure(cache)` asks for with `jobs` processes: each wave is what a planning
    pass finds missing and ready. Runs for which `first(recipe, overrides)` holds (the teachers) get
    waves of their own before the rest, so the others' time is measured apart from theirs."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no thread pools inherited
    waves = []
    with ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_exit_with_parent, initargs=(os.getpid(),)
    ) as pool:
        while True:
            plan = Cache(folder, console, planning=True)
            measure(plan)
            if not plan.missing:
                return waves
            jobs_now = list(plan.missing.values())
            leading = [job for job in jobs_now if first and first(*job)]
            jobs_now = leading or jobs_now
            console.print(f"[bold]wave of {len(jobs_now)} runs on {jobs} processes[/]")
            started = time.perf_counter()
            for done in [pool.submit(_train_one, folder, *job) for job in jobs_now]:
                done.result()  # a failed run stops the benchmark with its error
            minutes = (time.perf_counter() - started) / 60
            waves.append(Wave(minutes, bool(leading), jobs))
