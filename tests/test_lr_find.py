"""`edgekit lr-find` and `train.optimizer.lr: auto`: the learning-rate range test (Smith 2017)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import train_tiny
from typer.testing import CliRunner

import edgekit.train  # noqa: F401  (binds the registries recipes choose from)
from edgekit.cli import app
from edgekit.errors import EdgekitError
from edgekit.recipe import load
from edgekit.train import objectives
from edgekit.train.lr_find import Finding, RangeParams, RangeTest, find_lr, range_test

runner = CliRunner()
RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def test_the_suggestion_lies_below_where_the_loss_diverges():
    recipe = load(RECIPES / "lenet_2k.yaml", ["train.optimizer.lr=0.001"])
    result = range_test(recipe, RangeParams(start=1e-5, end=1e4, steps=120))
    assert result.diverged_at is not None  # SGD at lr 1e4 blows any net up
    assert result.lrs[-1] < result.diverged_at * 1.5 and len(result.lrs) < 120  # it stopped there
    assert 1e-4 < result.steepest() < result.diverged_at / 10
    assert result.min_loss_tenth() < result.diverged_at / 10
    assert min(result.smoothed) < result.smoothed[0]  # the loss did fall on the way


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_it_minimises_a_distillation_loss_with_any_optimizer(tmp_path, optimizer):
    """With a `distill:` section the range test runs the KD objective (the teacher on the same batch)."""
    teacher = train_tiny(tmp_path, "teacher", {"arch": "lenet", "channels": [8, 16]}, epochs=2)
    overrides = [
        f"distill.teacher={teacher}",
        "distill.min_teacher_acc=0",
        f"train.optimizer.name={optimizer}",
    ]
    recipe = load(RECIPES / "lenet_1k_kd.yaml", overrides)
    seen = []
    original = objectives.Distill.__call__

    def spy(self, model, x, y):
        seen.append(self.method)
        return original(self, model, x, y)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(objectives.Distill, "__call__", spy)
        result = range_test(recipe, RangeParams(start=1e-5, end=10, steps=40))
    assert seen and set(seen) == {"hinton"} and len(result.lrs) == len(seen)
    assert 1e-5 <= result.steepest() <= 10


def test_a_loss_that_is_nan_from_the_first_step_is_one_clear_error(monkeypatch):
    def nan_loss(self, model, x, y):
        logits = model(x)
        return logits.sum() * torch.tensor(float("nan")), logits

    monkeypatch.setattr(objectives.Supervised, "__call__", nan_loss)
    with pytest.raises(
        EdgekitError, match=r"the loss is nan at the first step \(lr 1e-06\); lower the start"
    ):
        range_test(load(RECIPES / "lenet_1k.yaml"), RangeParams())


def test_lr_find_writes_its_curve_into_a_new_folder_each_time(tmp_path):
    args = ["lr-find", str(RECIPES / "lenet_1k.yaml"), "--steps", "40", "--runs-dir", str(tmp_path)]
    first, second = runner.invoke(app, args), runner.invoke(app, args)
    assert first.exit_code == 0 and second.exit_code == 0, first.output
    assert "suggested lr" in first.output
    for folder in ("lenet_1k", "lenet_1k-2"):  # never overwritten
        out = tmp_path / "lr_find" / folder
        assert (out / "lr_find.png").stat().st_size > 0
        rows = list(csv.DictReader((out / "lr_find.csv").open()))
        assert {r["repeat"] for r in rows} == {"0", "1", "2"}  # three tests by default
        for repeat in "012":
            lrs = [float(r["lr"]) for r in rows if r["repeat"] == repeat]
            assert lrs and lrs == sorted(lrs)


def test_the_suggestion_is_the_median_of_tests_at_successive_seeds():
    found = find_lr(load(RECIPES / "lenet_1k.yaml", ["seed=5"]), RangeParams(steps=40, repeats=3))
    curves = [t.smoothed for t in found.tests]
    assert len(curves) == 3 and curves[0] != curves[1] != curves[2]  # other weights, other batches
    again = range_test(load(RECIPES / "lenet_1k.yaml", ["seed=6"]), RangeParams(steps=40))
    assert again.smoothed == curves[1]  # the second test is the recipe at seed + 1
    each = sorted(t.steepest() for t in found.tests)
    assert found.rule("steepest") == pytest.approx(each[1])
    assert found.rule("min loss / 10") == pytest.approx(sorted(t.min_loss_tenth() for t in found.tests)[1])


def test_each_rule_on_a_made_up_curve():
    """A drop centred on lr 1e-2 (a sigmoid in log lr), a slow fall on to the lowest point at lr 1, then a
    climb: steepest is the drop's centre, min loss / 10 (the suggestion) a tenth of 1; the median of equal
    tests is theirs."""
    logs = [k / 10 for k in range(-40, 11)]  # log10 lr from -4 to 1, ten points a decade
    lrs = [10**x for x in logs]
    smoothed = [1 / (1 + math.exp(5 * (x + 2))) - 0.05 * x + (x if x > 0 else 0) for x in logs]
    test = RangeTest(lrs=lrs, losses=smoothed, smoothed=smoothed)
    assert test.steepest() == pytest.approx(1e-2)
    assert test.min_loss_tenth() == pytest.approx(1 / 10)
    found = Finding([test, test, test])
    assert found.suggestion() == pytest.approx(0.1)  # min loss / 10 (bench/tune_fashion_fresh.md)
    rules = found.rules()
    assert list(rules) == ["min loss / 10", "steepest"]  # the suggestion first
    assert rules["steepest"] == pytest.approx(1e-2) and rules["min loss / 10"] == pytest.approx(0.1)


@pytest.mark.parametrize(
    "option, message",
    [
        (["--start", "1", "--end", "0.1"], "lr-find: the lr range must increase: start 1 ≥ end 0.1"),
        (["--steps", "3"], "lr-find: --steps 3: Input should be greater than or equal to 20"),
        (["--repeats", "0"], "lr-find: --repeats 0: Input should be greater than or equal to 1"),
    ],
)
def test_bad_range_is_one_line_and_exit_2(tmp_path, option, message):
    result = runner.invoke(
        app, ["lr-find", str(RECIPES / "lenet_1k.yaml"), *option, "--runs-dir", str(tmp_path)]
    )
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "lr_find").exists()


def test_lr_auto_runs_the_test_and_writes_the_number_into_the_run(tmp_path):
    args = ["train", str(RECIPES / "lenet_1k.yaml"), "train.optimizer.lr=auto", "train.epochs=1"]
    result = runner.invoke(app, [*args, "track.wandb=disabled", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    run = tmp_path / "lenet_1k"
    lr = yaml.safe_load((run / "recipe.yaml").read_text())["train"]["optimizer"]["lr"]
    summary = json.loads((run / "summary.json").read_text())
    assert isinstance(lr, float) and lr == summary["lr_auto"]["lr"] > 0
    assert lr == float(f"{summary['lr_auto']['rules']['min loss / 10']:.3g}")  # the suggestion, rounded
    assert (run / "lr_find.png").is_file() and f"train.optimizer.lr: auto → {lr:g}" in result.output
    again = runner.invoke(app, ["train", "--resume", str(run), "train.epochs=2"])  # reruns on the number
    assert again.exit_code == 0, again.output
    assert "lr range test" not in again.output
