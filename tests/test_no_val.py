"""`data.val_fraction: 0`: a run that trains on every non-test image, and what needs val says so."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from edgekit.bundle import read_bundle
from edgekit.cli import app
from edgekit.errors import EdgekitError
from edgekit.export.write import export_run
from edgekit.orchestrate import sweep
from edgekit.quantize.quantize import quantize_bundle
from edgekit.recipe import load
from edgekit.train import run

QUIET = Console(file=io.StringIO())
runner = CliRunner()
NO_VAL = {
    "model": {"arch": "lenet", "channels": [4, 8]},
    "data": {"val_fraction": 0},
    "train": {"epochs": 3, "batch_size": 64, "select": "last"},
    "track": {"wandb": "disabled"},
}


def _recipe(tmp_path: Path, name: str = "noval", **train) -> Path:
    raw = yaml.safe_load(yaml.safe_dump(NO_VAL))
    raw["train"] |= train
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_run_without_val_trains_on_every_image_and_keeps_its_last_epoch(tmp_path):
    with_val = run.start(_recipe(tmp_path, "val"), ["data.val_fraction=0.15"], tmp_path / "runs", QUIET)
    out = run.start(_recipe(tmp_path), [], tmp_path / "runs", QUIET)
    summary = json.loads((out / "summary.json").read_text())
    other = json.loads((with_val / "summary.json").read_text())
    # digits' 1,797 images less the 270 test images all train: the 270 val images of the other run too.
    assert summary["split"].startswith("train 1527 ") and "val 0 (0/class)" in summary["split"]
    assert other["split"].startswith("train 1257 ")
    assert summary["val_acc"] is None and summary["best_val"] is None and summary["kept_epoch"] == 3
    assert summary["test_acc"] > 0.3  # 3 epochs of a tiny LeNet: well above chance (10%)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and all(r["val_acc"] == "" for r in rows)
    assert (out / "best.pt").is_file()


@pytest.mark.parametrize(
    "override, setting",
    [
        ("train.select=best", "train.select = best"),
        ("train.early_stop.patience=3", "train.early_stop.patience = 3"),
        ("train.scheduler={name: plateau}", "train.scheduler.name = plateau"),
    ],
)
def test_what_waits_on_val_is_refused_in_one_line_exit_2(tmp_path, override, setting):
    path = _recipe(tmp_path)
    with pytest.raises(EdgekitError, match=f"data.val_fraction = 0 leaves no val split, but {setting}"):
        load(path, [override])
    result = runner.invoke(app, ["train", str(path), override, "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_a_distilled_run_without_val_checks_its_teacher_on_the_training_images(tmp_path):
    teacher = run.start(_recipe(tmp_path, "teacher"), ["data.val_fraction=0.15"], tmp_path / "runs", QUIET)
    student = run.start(
        _recipe(tmp_path, "student"), [f"distill.teacher={teacher}"], tmp_path / "runs", QUIET
    )
    distill = json.loads((student / "summary.json").read_text())["distill"]
    assert distill["checked_on"] == "train" and distill["teacher_val_acc"][0] > 0.3
    # A teacher below the floor is still refused, naming the split it was scored on.
    with pytest.raises(EdgekitError, match="on the student's train split, below 99.0%"):
        run.start(
            _recipe(tmp_path, "refused"),
            [f"distill.teacher={teacher}", "distill.min_teacher_acc=0.99"],
            tmp_path / "runs",
            QUIET,
        )


def test_a_bundle_without_val_exports_with_parity_on_its_calibration_images_and_quantize_says_why_not(
    tmp_path,
):
    out = run.start(_recipe(tmp_path), [], tmp_path / "runs", QUIET)
    bundle = export_run(out, tmp_path / "export")
    meta, _ = read_bundle(bundle)
    assert meta.val is None and not (bundle / "val.npz").exists()
    assert meta.parity.images == len(np.load(bundle / "calib.npz")["x"]) and meta.parity.top1_agreement == 1
    with pytest.raises(EdgekitError, match="its run had none, data.val_fraction: 0"):
        quantize_bundle(bundle, "int8")


def test_a_sweep_ranking_on_val_refuses_a_recipe_without_val(tmp_path):
    base = _recipe(tmp_path)
    spec = {
        "recipe": str(base),
        "method": "grid",
        "metric": {"name": "val_acc", "goal": "maximize"},
        "parameters": {"train.optimizer.lr": {"values": [0.05, 0.3]}},
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    loaded = sweep.read(path)
    with pytest.raises(EdgekitError, match="leaves no val split for metric.name = val_acc to rank on"):
        sweep.check_trial(loaded, loaded.trials()[0])
