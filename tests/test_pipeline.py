"""`edgekit pipeline`: the whole chain on digits in miniature, its resume, and its bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from edgekit.cli import app
from edgekit.orchestrate.pipeline import run_pipeline
from edgekit.train import loop

runner = CliRunner()
RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def _write(tmp_path: Path, **changes) -> Path:
    spec = {
        "name": "mini",
        "teacher": {"recipe": str(RECIPES / "lenet_small.yaml"), "overrides": ["train.epochs=3"]},
        "student": {"recipe": str(RECIPES / "lenet_2k_kd.yaml"), "overrides": ["train.epochs=3"]},
        "prune": {"macs": 0.5, "finetune_epochs": 2},
        "quantize": {"kind": "int8", "options": {"calib": 64}},
        "bench": {"runtimes": ["ort-cpu"], "threads": 1, "batch": [1]},
    } | changes
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_pipeline_runs_every_stage_then_skips_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path)
    result = runner.invoke(app, ["pipeline", str(path)])
    assert result.exit_code == 0, result.output
    runs = tmp_path / "runs" / "mini"
    assert sorted(p.name for p in runs.iterdir()) == ["student", "student-pruned", "teacher"]
    student = json.loads((runs / "student" / "summary.json").read_text())
    assert student["distill"]["teachers"] == [str(runs / "teacher" / "best.pt")]
    pruned = json.loads((runs / "student-pruned" / "summary.json").read_text())
    assert pruned["macs"] < student["macs"]
    meta = json.loads((tmp_path / "export" / "mini" / "student-pruned" / "edgekit.json").read_text())
    assert "int8" in meta["variants"]
    results = json.loads((tmp_path / "bench" / "mini" / "results.json").read_text())
    rows = {(r["bundle"], r["variant"]) for r in results["rows"]}
    assert {("teacher", "fp32"), ("student", "fp32"), ("student-pruned", "int8")} <= rows
    assert (tmp_path / "bench" / "mini" / "pareto.png").is_file()

    again = runner.invoke(app, ["pipeline", str(path)])  # nothing left to do but measure
    assert again.exit_code == 0, again.output
    assert " ".join(again.output.split()).count("done:") == 7  # 3 runs, 3 bundles, the int8 variant
    assert sorted(p.name for p in runs.iterdir()) == ["student", "student-pruned", "teacher"]


def test_an_assistant_teaches_the_student(tmp_path, monkeypatch):
    """teacher → assistant → student (Mirzadeh et al. 2020), each an ordinary distilled run."""
    monkeypatch.chdir(tmp_path)
    assistant = {"recipe": str(RECIPES / "lenet_small_dw.yaml"), "overrides": ["train.epochs=3"]}
    path = _write(tmp_path, assistant=assistant, prune=None, quantize=None)
    result = runner.invoke(app, ["pipeline", str(path)])
    assert result.exit_code == 0, result.output
    runs = tmp_path / "runs" / "mini"
    assert sorted(p.name for p in runs.iterdir()) == ["assistant", "student", "teacher"]
    taught = {
        stage: json.loads((runs / stage / "summary.json").read_text())["distill"]["teachers"]
        for stage in ("assistant", "student")
    }
    assert taught == {
        "assistant": [str(runs / "teacher" / "best.pt")],
        "student": [str(runs / "assistant" / "best.pt")],
    }


def test_an_ensemble_of_teachers_teaches_the_student(tmp_path, monkeypatch):
    """teacher.members: 2 → two teacher runs with seeds 0 and 1, and the student distils from both."""
    monkeypatch.chdir(tmp_path)
    teacher = {"recipe": str(RECIPES / "lenet_small.yaml"), "overrides": ["train.epochs=2"], "members": 2}
    path = _write(tmp_path, teacher=teacher, prune=None, quantize=None)
    result = runner.invoke(app, ["pipeline", str(path)])
    assert result.exit_code == 0, result.output
    runs = tmp_path / "runs" / "mini"
    assert sorted(p.name for p in runs.iterdir()) == ["student", "teacher", "teacher_seed1"]
    members = ("teacher", "teacher_seed1")
    assert [yaml.safe_load((runs / t / "recipe.yaml").read_text())["seed"] for t in members] == [0, 1]
    student = json.loads((runs / "student" / "summary.json").read_text())
    assert student["distill"]["teachers"] == [str(runs / t / "best.pt") for t in members]


def test_an_interrupted_pipeline_resumes_the_run_it_stopped_in(tmp_path, monkeypatch):
    path = _write(tmp_path, prune=None, quantize=None)
    real, calls = loop.train_epoch, {"n": 0}

    def killed_in_the_students_second_epoch(state):
        calls["n"] += 1
        if calls["n"] == 3 + 2:  # the teacher's 3 epochs, then the student's 2nd
            raise KeyboardInterrupt
        return real(state)

    monkeypatch.setattr(loop, "train_epoch", killed_in_the_students_second_epoch)
    folders = (tmp_path / "runs", tmp_path / "export", tmp_path / "bench")
    quiet = Console(quiet=True)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(path, *folders, quiet)
    student = tmp_path / "runs" / "mini" / "student"
    assert json.loads((student / "summary.json").read_text())["stopped"] == "interrupted"
    run_pipeline(path, *folders, quiet)
    summary = json.loads((student / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["stopped"] == "finished"
    assert json.loads((student / "history.jsonl").read_text().splitlines()[0])["resumed_at_epoch"] == 1
    assert calls["n"] == 3 + 3 + 1  # the teacher was not retrained; the student ran its epochs 2-3


def test_bad_pipeline_input_exit_2(tmp_path):
    result = runner.invoke(app, ["pipeline", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "no such pipeline file" in result.output
    path = _write(tmp_path, prune={"macs": 1.5})
    result = runner.invoke(app, ["pipeline", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "--macs 1.5" in result.output
    assert not (tmp_path / "runs").exists()  # refused before the teacher trained
    path = _write(tmp_path, teacher={"recipe": "missing.yaml"})
    result = runner.invoke(app, ["pipeline", str(path)])
    assert result.exit_code == 2 and "missing.yaml" in result.output
    path = _write(tmp_path, studnet={"recipe": "x.yaml"})
    result = runner.invoke(app, ["pipeline", str(path)])
    assert result.exit_code == 2 and "studnet: unknown key (did you mean 'student'?)" in " ".join(
        result.output.split()
    )
