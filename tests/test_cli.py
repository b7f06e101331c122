"""The `edgekit` command as a user runs it: exit codes, one-line errors, files written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgekit.cli import app

ROOT = Path(__file__).parent.parent
runner = CliRunner()


def test_train_end_to_end_on_digits_beats_chance_by_far(tmp_path):
    result = runner.invoke(
        app,
        [
            "train",
            str(ROOT / "recipes" / "lenet_2k.yaml"),
            "train.epochs=15",
            "track.wandb=disabled",
            "--runs-dir",
            str(tmp_path / "runs"),
        ],
    )
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "lenet_2k"
    assert "parameters" in result.output and "MACs" in result.output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test_acc"] > 0.8  # chance is 0.1
    assert {p.name for p in run_dir.iterdir()} >= {
        "recipe.yaml",
        "last.pt",
        "best.pt",
        "metrics.csv",
        "curves.png",
        "summary.json",
    }


def test_resume_through_the_cli(tmp_path):
    args = [
        "train",
        str(ROOT / "recipes" / "lenet_1k.yaml"),
        "train.epochs=1",
        "track.wandb=disabled",
        "--runs-dir",
        str(tmp_path / "runs"),
    ]
    assert runner.invoke(app, args).exit_code == 0
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "runs" / "lenet_1k"), "train.epochs=2"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "runs" / "lenet_1k" / "summary.json").read_text())
    assert summary["epochs"] == 2


def test_bad_recipe_key_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"model": {"arch": "lenet"}}))
    result = runner.invoke(app, ["train", str(path), "train.epohcs=3", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "train.epohcs: unknown key (did you mean 'epochs'?)" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()  # nothing written for a bad recipe


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.train_per_class=0", "data.train_per_class = 0: Input should be greater than or equal to 1"),
        ("data.train_per_class=1", "the split leaves 0 training images of class"),
    ],
)
def test_bad_train_per_class_is_one_line_and_exit_2(tmp_path, override, message):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"model": {"arch": "lenet"}}))
    result = runner.invoke(app, ["train", str(path), override, "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output and not (tmp_path / "runs").exists()


def test_a_capped_run_says_what_it_trains_on_and_records_it(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"model": {"arch": "lenet", "channels": [4]}, "train": {"epochs": 1}}))
    args = [
        "train",
        str(path),
        "data.train_per_class=40",
        "track.wandb=disabled",
        "--runs-dir",
        str(tmp_path),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "data: train 340 (34/class), val 60 (6/class), test 270" in said
    recorded = json.loads((tmp_path / "r" / "summary.json").read_text())["split"]
    assert recorded.startswith("train 340 (34/class), val 60 (6/class), test 270")
    assert yaml.safe_load((tmp_path / "r" / "recipe.yaml").read_text())["data"]["train_per_class"] == 40


def test_missing_recipe_and_bad_resume_exit_2(tmp_path):
    result = runner.invoke(app, ["train", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "no such recipe file" in result.output
    result = runner.invoke(app, ["train", "--resume", str(tmp_path)])
    assert result.exit_code == 2 and "not an edgekit run" in result.output


def test_missing_dataset_root_exit_2(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"data": {"dataset": "imagefolder", "root": str(tmp_path / "none")}}))
    result = runner.invoke(app, ["train", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and str(tmp_path / "none") in result.output


def test_models_lists_architectures_and_recipes():
    result = runner.invoke(app, ["models", "--recipes", str(ROOT / "recipes")])
    assert result.exit_code == 0, result.output
    for name in ("lenet", "resnet_small", "mobilenet_tiny", "lenet_2k", "fashion/r2k_kd"):
        assert name in result.output
    assert "invalid" not in result.output and "digits_edge" not in result.output  # sweeps, pipelines skipped
    assert "_teacher_ensemble" not in result.output  # a fragment recipes extend, not a recipe


def test_export_then_bench_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["train", str(ROOT / "recipes" / "lenet_1k.yaml"), "train.epochs=1", "track.wandb=disabled"]
    assert runner.invoke(app, args).exit_code == 0
    result = runner.invoke(app, ["export", "--onnx"])  # newest run → ./export/lenet_1k
    assert result.exit_code == 0, result.output
    assert (tmp_path / "export" / "lenet_1k" / "model.onnx").is_file()
    result = runner.invoke(app, ["bench", "--runtime", "ort-cpu", "--threads", "1", "--batch", "1,8"])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "bench" / "results.json").read_text())["rows"]
    assert any(r.get("runtime") == "ort-cpu" and r.get("bundle") == "lenet_1k" for r in rows)


def test_bench_bad_input_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["bench", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "nope" in result.output
    result = runner.invoke(app, ["bench", "--batch", "1,x"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["export", "--onnx"])
    assert result.exit_code == 2 and "no runs found" in result.output
