"""`torchrun --nproc_per_node 2 -m edgekit train …` on CPU (gloo) matches a single-process run."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekit.cli import app

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["train", str(ROOT / "recipes" / "lenet_2k.yaml"), "train.epochs=5", "track.wandb=disabled"]


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_two_processes_match_one(tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*launcher, "-m", "edgekit", *ARGS, "--runs-dir", str(tmp_path / "ddp")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "× 2 processes" in " ".join(done.stdout.split())
    assert [p.name for p in (tmp_path / "ddp").iterdir()] == ["lenet_2k"]  # rank 0 alone made a folder
    run = tmp_path / "ddp" / "lenet_2k"
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(float(r["epoch"])) for r in rows] == [1, 2, 3, 4, 5]  # written once, not once per rank
    ddp = json.loads((run / "summary.json").read_text())

    assert CliRunner().invoke(app, [*ARGS, "--runs-dir", str(tmp_path / "single")]).exit_code == 0
    single = json.loads((tmp_path / "single" / "lenet_2k" / "summary.json").read_text())
    # Same global batch and epochs: the two differ only in per-rank BatchNorm statistics and which
    # augmentation draw each image gets, so after 5 epochs they land within a few points.
    assert ddp["test_acc"] > 0.7 and single["test_acc"] > 0.7
    assert abs(ddp["test_acc"] - single["test_acc"]) < 0.08
    assert abs(ddp["val_acc"] - single["val_acc"]) < 0.08
