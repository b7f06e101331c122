"""A run's `summary.json`: what was trained, how it ended, and the test accuracy of the weights to deploy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from edgekit.data.cache import cached
from edgekit.data.loader import DeviceLoader
from edgekit.models import from_checkpoint
from edgekit.runs import ORIGIN_FILE, Run, load_checkpoint
from edgekit.train.loop import State, evaluate
from edgekit.train.teacher_bank import identity

EVAL_BATCH = 1024  # images per evaluation forward on an accelerator
# On CPU, 64: batches of 1,024 28×28 images ran 1.4–5.4× slower for models of 8k parameters and up
# (MobileNet most); the 2k-parameter nets gain at most 0.2 s per 10,000 images (bench/eval_batch.md).
CPU_EVAL_BATCH = 64


def eval_batch(device: torch.device) -> int:
    """Images per evaluation forward on `device`: big batches feed a GPU; on CPU a big batch's
    activations outgrow the cache (MobileNet's expanded maps most)."""
    return CPU_EVAL_BATCH if device.type == "cpu" else EVAL_BATCH


def summarize(state: State, run_dir: Path, test, reason: str, wall_s: float, rows: list) -> dict[str, Any]:
    """summary.json: sizes, how and when training stopped, speed, and the test accuracy of best.pt."""
    summary: dict[str, Any] = {"test_acc": None, "test_loss": None, "val_acc": None}
    summary |= {
        "params": state.meta["params"],
        "macs": state.meta["macs"],
        "epochs": state.epoch,
        "stopped": reason,
        "monitor": state.monitor,
        "best_val": state.best,
        "best_epoch": state.best_epoch,
        "select": state.select,
        "kept_epoch": state.kept_epoch,  # best.pt's epoch: best_epoch, or the last with train.select: last
        "wall_s": round(wall_s, 2),
        "images_per_s": round(sum(r["images_per_s"] for r in rows) / max(len(rows), 1), 1),
        "device": str(state.device),
        "torch": torch.__version__,
        "split": state.meta.get("split"),  # images per split and class: what the run learnt from
    }
    if "distill" in state.meta:
        summary["distill"] = state.meta["distill"]
    if (run_dir / ORIGIN_FILE).is_file():  # where the run came from, kept when it is resumed
        summary |= json.loads((run_dir / ORIGIN_FILE).read_text())
    best = Run(run_dir).best
    if best.exists():  # test accuracy of the weights that will be deployed
        model = from_checkpoint({**state.meta, "model": load_checkpoint(best)["model"]}, best).to(
            state.device
        )
        loader = DeviceLoader(
            *test,
            batch_size=eval_batch(state.device),
            mean=state.meta["mean"],
            std=state.meta["std"],
            device=state.device,
        )
        result = evaluate(state, loader, model)
        if "distill" in summary:  # the teacher (ensemble) on the same test images: the gap KD works on
            summary["distill"] = {**summary["distill"], "teacher_test_acc": teacher_test_acc(state, loader)}
        kept_row = next((r for r in rows if r["epoch"] == state.kept_epoch), None)
        summary.update(
            test_acc=result["acc"],
            test_loss=result["loss"],
            val_acc=kept_row.get("val_acc") if kept_row else None,
        )
    return summary


def teacher_test_acc(state: State, test: DeviceLoader) -> float:
    """The teacher's test accuracy, scored once per teacher files, split and precision and then read from
    edgekit's cache: every student of one teacher (seeds, sweep trials, a ladder) asks the same question,
    and for a 7-member ensemble on 10,000 images the answer was most of the ~9 s more a distilled Fashion
    student spent outside its training loop than one trained alone (bench/frontier.md)."""
    key = {
        "kind": "teacher_test_acc",
        **identity([Path(f) for f in state.meta["distill"]["teachers"]], state.meta["data_fingerprint"]),
        "mean": state.meta["mean"],  # the teacher converts from the student's normalization
        "std": state.meta["std"],
        "device": state.device.type,
        "amp": str(state.amp_dtype),
    }
    scored = cached(key, lambda: {"acc": evaluate(state, test, state.objective.teacher)["acc"]})
    return float(scored["acc"])
