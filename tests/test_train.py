"""The trainer on digits: runs, resume weight-for-weight, extension, schedules, NaN stop, bad resumes."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from edgekit.data import prepare_for
from edgekit.errors import EdgekitError
from edgekit.recipe import load
from edgekit.runs import load_checkpoint
from edgekit.train import device, run
from edgekit.train.loop import ema_decay, make_ema
from edgekit.train.objectives import Supervised
from edgekit.train.track import Tracker

QUIET = Console(file=open("/dev/null", "w"))  # noqa: SIM115
TINY = {
    "model": {"arch": "lenet", "channels": [4, 8], "hidden": [16], "dropout": 0.1, "dropout2d": 0.05},
    "train": {"epochs": 4, "batch_size": 64},
    "track": {"wandb": "disabled"},
    "data": {"augment": {"crop_padding": 1, "rotate": 10, "erasing": 0.2}},
}


def recipe(tmp_path: Path, name: str = "tiny", **changes) -> Path:
    data = yaml.safe_load(yaml.safe_dump(TINY))
    for section, values in changes.items():
        data.setdefault(section, {}).update(values)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_run_folder_contents(tmp_path):
    run_dir = run.start(recipe(tmp_path), [], tmp_path / "runs", QUIET)
    assert run_dir == tmp_path / "runs" / "tiny"
    for name in ("recipe.yaml", "last.pt", "best.pt", "metrics.csv", "curves.png", "summary.json"):
        assert (run_dir / name).is_file(), name
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [int(float(r["epoch"])) for r in rows] == [1, 2, 3, 4]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["params"] > 0 and summary["macs"] > 0 and summary["epochs"] == 4
    assert 0 <= summary["test_acc"] <= 1
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert ckpt["class_names"] == [str(i) for i in range(10)] and ckpt["in_channels"] == 1
    assert len(ckpt["mean"]) == 1 and ckpt["arch"] == "lenet"
    saved = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    assert saved["model"]["channels"] == [4, 8] and "lr" in saved["train"]["optimizer"]


def test_same_seed_same_metrics(tmp_path):
    a = run.start(recipe(tmp_path), ["train.epochs=2"], tmp_path / "runs", QUIET)
    b = run.start(recipe(tmp_path), ["train.epochs=2"], tmp_path / "runs", QUIET)
    assert b.name == "tiny-2"

    def strip(p):
        return [
            {k: v for k, v in r.items() if k not in ("images_per_s", "epoch_s", "elapsed_s")}
            for r in csv.DictReader((p / "metrics.csv").open())
        ]

    assert strip(a) == strip(b)


def test_ema_decay_is_the_recipes_unless_its_time_constant_exceeds_a_fifth_of_the_run():
    assert ema_decay(0.999, 5_000) == 0.999 and ema_decay(0.999, 14_400) == 0.999  # long runs: as set
    assert ema_decay(0.999, 240) == pytest.approx(1 - 5 / 240)  # 10 epochs of 24 steps
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = make_ema(model, 0.999, updates=240)
    ema.update_parameters(model)  # the first update copies the starting weights, 0
    with torch.no_grad():
        model.weight.fill_(1.0)
    for _ in range(240):
        ema.update_parameters(model)
    assert ema.module.weight.item() > 0.99  # the start keeps under e^-5 of the average


def test_ema_equals_torchs_averaged_model_bit_for_bit_and_restores_from_its_state():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.Flatten())
    ours = make_ema(model, 0.9, updates=10_000)
    theirs = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(6):
        model(torch.randn(4, 1, 5, 5)).square().mean().backward()
        optimizer.step()
        ours.update_parameters(model)
        theirs.update_parameters(model)
        if step == 2:  # a resumed run: a fresh average loaded from the saved state goes on alike
            state, ours = ours.state_dict(), make_ema(model, 0.9, updates=10_000)
            ours.load_state_dict(state)
    mine, reference = ours.state_dict(), theirs.state_dict()
    assert mine.keys() == reference.keys()
    assert all(torch.equal(mine[k], reference[k]) for k in mine)
    assert not torch.equal(mine["module.0.weight"], model[0].weight)  # it did average, not copy


def test_a_short_run_with_ema_learns(tmp_path):
    changes = {"train": {"epochs": 4, "batch_size": 64, "ema": 0.999}}
    run_dir = run.start(recipe(tmp_path, **changes), [], tmp_path / "runs", QUIET)
    summary = json.loads((run_dir / "summary.json").read_text())
    # A fixed 0.999 over these 4 × 22 updates scored 11% (chance: 10%), this net without EMA 43%.
    assert summary["test_acc"] > 0.3


def test_raw_val_logs_the_weights_under_the_ema_as_a_run_without_ema_scores_them(tmp_path):
    """track.raw_val: val_acc_raw/val_loss_raw are the trained weights' own scores (the EMA never feeds
    back into training, so they equal a run without EMA epoch for epoch), while val_acc is the average's."""
    steps = {"epochs": 3, "batch_size": 64}
    with_ema = run.start(
        recipe(tmp_path, "ema", train={**steps, "ema": 0.99}, track={"raw_val": True}),
        [],
        tmp_path / "runs",
        QUIET,
    )
    plain = run.start(
        recipe(tmp_path, "plain", train=steps, track={"raw_val": True}), [], tmp_path / "runs", QUIET
    )
    ema_rows = list(csv.DictReader((with_ema / "metrics.csv").open()))
    plain_rows = list(csv.DictReader((plain / "metrics.csv").open()))
    for key in ("acc", "loss"):
        assert [float(r[f"val_{key}_raw"]) for r in ema_rows] == [float(r[f"val_{key}"]) for r in plain_rows]
    # val itself stays the average's.
    assert [r["val_loss"] for r in ema_rows] != [r["val_loss"] for r in plain_rows]
    assert all(r["val_acc_raw"] == "" for r in plain_rows)  # without an EMA the raw weights are val's own


def test_select_last_keeps_the_final_epochs_weights_whatever_val_says(tmp_path):
    """train.select: last: best.pt holds the last epoch's weights to deploy (here the EMA's), and the
    summary's val and test accuracy are theirs; the best epoch by val is still reported beside them."""
    steps = {"epochs": 4, "batch_size": 64, "ema": 0.9}
    last = run.start(
        recipe(tmp_path, "last", train={**steps, "select": "last"}), [], tmp_path / "runs", QUIET
    )
    best = run.start(recipe(tmp_path, "best", train=steps), [], tmp_path / "runs", QUIET)
    final = load_checkpoint(last / "last.pt")["ema"]
    kept = weights(last / "best.pt")
    assert all(torch.equal(kept[k], final[f"module.{k}"]) for k in kept)
    summary = json.loads((last / "summary.json").read_text())
    rows = list(csv.DictReader((last / "metrics.csv").open()))
    assert summary["kept_epoch"] == 4 and summary["select"] == "last"
    assert summary["val_acc"] == float(rows[-1]["val_acc"])
    # The same trajectory either way: only which epoch best.pt holds differs.
    other = json.loads((best / "summary.json").read_text())
    assert (other["best_epoch"], other["best_val"]) == (summary["best_epoch"], summary["best_val"])
    assert other["kept_epoch"] == other["best_epoch"]


class Killed(Exception):
    pass


def test_resume_after_kill_equals_uninterrupted_run_weight_for_weight(tmp_path, monkeypatch):
    changes = {"train": {"epochs": 4, "batch_size": 64, "ema": 0.9}}
    full = run.start(recipe(tmp_path, "full", **changes), [], tmp_path / "runs", QUIET)

    original = Tracker.log

    def killed_in_epoch_3(self, row):
        if row["epoch"] == 3:
            raise Killed  # as if the process died during epoch 3: last.pt holds epoch 2
        original(self, row)

    monkeypatch.setattr(Tracker, "log", killed_in_epoch_3)
    with pytest.raises(Killed):
        run.start(recipe(tmp_path, "part", **changes), [], tmp_path / "runs", QUIET)
    assert load_checkpoint(tmp_path / "runs" / "part" / "last.pt")["epoch"] == 2
    monkeypatch.setattr(Tracker, "log", original)
    part = run.resume(tmp_path / "runs" / "part", [], QUIET)

    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(part / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["ema"]:
        assert torch.equal(a["ema"][key], b["ema"][key]), key
    rows = list(csv.DictReader((part / "metrics.csv").open()))
    assert [int(float(r["epoch"])) for r in rows] == [1, 2, 3, 4]


def test_finished_run_can_be_extended(tmp_path):
    run_dir = run.start(recipe(tmp_path), ["train.epochs=2"], tmp_path / "runs", QUIET)
    with pytest.raises(EdgekitError, match="already trained 2 epochs; to extend it pass train.epochs=N"):
        run.resume(run_dir, [], QUIET)
    run.resume(run_dir, ["train.epochs=3"], QUIET)
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 3
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["train"]["epochs"] == 3
    assert len(list(csv.DictReader((run_dir / "metrics.csv").open()))) == 3


def test_resume_refuses_other_model_or_data(tmp_path):
    run_dir = run.start(recipe(tmp_path), ["train.epochs=1"], tmp_path / "runs", QUIET)
    before = (run_dir / "last.pt").read_bytes()
    with pytest.raises(EdgekitError, match="cannot resume: options"):
        run.resume(run_dir, ["train.epochs=2", "model.channels=[4,6]"], QUIET)
    with pytest.raises(EdgekitError, match="cannot resume: image_size"):
        run.resume(run_dir, ["train.epochs=2", "data.image_size=12"], QUIET)
    assert (run_dir / "last.pt").read_bytes() == before  # nothing written over


def test_resume_of_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(EdgekitError, match="not an edgekit run"):
        run.resume(tmp_path, [], QUIET)


@pytest.mark.parametrize("channels_last", [True, False])
def test_the_recipes_memory_layout_holds_on_cpu_and_gives_the_same_logits(tmp_path, channels_last):
    flag = f"train.channels_last={str(channels_last).lower()}"
    state = run.build_state(*_recipe_and_data(recipe(tmp_path), [flag, "train.device=cpu"]))
    assert state.device.type == "cpu" and state.channels_last == channels_last
    # The second conv: 4 input channels, so its two layouts differ in memory (a 1-channel one does not).
    weight = [p for p in state.model.parameters() if p.ndim == 4 and p.shape[1] > 1][0]
    assert weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    model, x = state.model.eval(), next(iter(state.val))[0]
    with torch.no_grad():
        nhwc, nchw = model(x.contiguous(memory_format=torch.channels_last)), model(x.contiguous())
    torch.testing.assert_close(nhwc, nchw, rtol=1e-4, atol=1e-5)


def _recipe_and_data(path: Path, overrides: list[str]):
    loaded = load(path, overrides)
    return loaded, prepare_for(loaded)


@pytest.mark.parametrize("scheduler", ["cosine", "step", "constant", "plateau", "onecycle"])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_every_optimizer_and_schedule_trains(tmp_path, optimizer, scheduler):
    extra = {"warmup_epochs": 1} if scheduler != "onecycle" else {}
    run_dir = run.start(
        recipe(tmp_path),
        ["train.epochs=2", f"train.optimizer.name={optimizer}", f"train.scheduler.name={scheduler}"]
        + [f"train.scheduler.{k}={v}" for k, v in extra.items()],
        tmp_path / "runs",
        QUIET,
    )
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert len(rows) == 2 and float(rows[0]["lr"]) > 0 and all(float(r["lr"]) >= 0 for r in rows)


def test_warmup_ramps_the_learning_rate(tmp_path):
    run_dir = run.start(
        recipe(tmp_path),
        ["train.epochs=4", "train.scheduler.name=constant", "train.scheduler.warmup_epochs=2"],
        tmp_path / "runs",
        QUIET,
    )
    lrs = [float(r["lr"]) for r in csv.DictReader((run_dir / "metrics.csv").open())]
    assert lrs[0] < lrs[1] == lrs[2] == lrs[3]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    honest = Supervised.__call__

    def diverging(self, model, x, y):  # the loss turns NaN during epoch 2, as with too high an LR
        calls["n"] += 1
        loss, logits = honest(self, model, x, y)
        return (loss * float("nan") if calls["n"] > 25 else loss), logits

    monkeypatch.setattr(Supervised, "__call__", diverging)
    with pytest.raises(EdgekitError, match="loss became nan at epoch 2"):
        run.start(recipe(tmp_path), ["train.epochs=3"], tmp_path / "runs", QUIET)
    run_dir = tmp_path / "runs" / "tiny"
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1
    assert "loss became nan" in json.loads((run_dir / "summary.json").read_text())["stopped"]


@pytest.mark.parametrize("capability, dtype", [((7, 5), torch.float16), ((8, 0), torch.bfloat16)])
def test_amp_picks_bf16_by_compute_capability(monkeypatch, capability, dtype):
    """bf16 only where the hardware has it (8.0+); a Turing card gets fp16 (with a GradScaler in
    build_state), whatever `is_bf16_supported` says about emulation. CPU: no autocast at all."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert device.amp_dtype_for(torch.device("cuda")) == dtype
    assert device.amp_dtype_for(torch.device("cpu")) is None


def test_the_nan_check_reads_the_device_once_per_epoch(tmp_path, monkeypatch):
    """No host sync per step: reading a tensor's value (`.item()`, `if tensor:`) happens a few times per
    epoch, not once per batch."""
    reads = {"n": 0}

    def counting(honest):
        def read(self):
            reads["n"] += 1
            return honest(self)

        return read

    monkeypatch.setattr(torch.Tensor, "item", counting(torch.Tensor.item))
    monkeypatch.setattr(torch.Tensor, "__bool__", counting(torch.Tensor.__bool__))
    run.start(recipe(tmp_path), ["train.epochs=1", "train.batch_size=16"], tmp_path / "runs", QUIET)
    assert reads["n"] < 1257 // 16 / 2  # 78 training steps


def test_early_stopping(tmp_path):
    run_dir = run.start(
        recipe(tmp_path),
        [
            "train.epochs=30",
            "train.optimizer.lr=1e-9",
            "train.early_stop.patience=2",
            "train.monitor=val_loss",
            "train.early_stop.min_delta=1",
        ],
        tmp_path / "runs",
        QUIET,
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["stopped"].startswith("early stop")


def scored_epochs(run_dir: Path) -> list[int]:
    rows = csv.DictReader((run_dir / "metrics.csv").open())
    return [int(float(r["epoch"])) for r in rows if r["val_acc"]]


def test_val_every_scores_val_on_its_epochs_and_the_last_and_changes_no_weight(tmp_path):
    """Val is only observed under `select: last`: scoring it on fewer epochs trains the same weights."""
    runs, log = {}, io.StringIO()
    for every in (1, 3):
        runs[every] = run.start(
            recipe(tmp_path, f"every{every}"),
            ["train.epochs=7", f"train.val_every={every}", "train.select=last"],
            tmp_path / "runs",
            Console(file=log, width=200),
        )
    assert scored_epochs(runs[1]) == [1, 2, 3, 4, 5, 6, 7]
    assert scored_epochs(runs[3]) == [3, 6, 7]
    # Without a terminal the log shows epochs 1-3, then only epochs that scored val.
    shown = [line for line in log.getvalue().splitlines() if line.startswith("epoch ") and "/7" in line]
    assert [line.split()[1] for line in shown[-5:]] == ["1/7", "2/7", "3/7", "6/7", "7/7"]
    assert "val_acc —" in shown[-5] and all("val_acc —" not in line for line in shown[-3:])
    for name in ("best.pt", "last.pt"):
        a, b = weights(runs[1] / name), weights(runs[3] / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    summaries = [json.loads((runs[e] / "summary.json").read_text()) for e in (1, 3)]
    assert summaries[0]["test_acc"] == summaries[1]["test_acc"]
    assert summaries[0]["val_acc"] == summaries[1]["val_acc"] and summaries[1]["kept_epoch"] == 7
    assert (runs[3] / "curves.png").is_file()


def test_val_every_keeps_the_best_scored_epoch_and_counts_patience_in_epochs(tmp_path):
    best = run.start(
        recipe(tmp_path, "best"), ["train.epochs=9", "train.val_every=2"], tmp_path / "runs", QUIET
    )
    summary = json.loads((best / "summary.json").read_text())
    assert summary["best_epoch"] in scored_epochs(best) == [2, 4, 6, 8, 9]
    # Nothing improves by 1 after the first scored epoch (2): 4 epochs stale at epoch 6 ≥ patience 3.
    stopped = run.start(
        recipe(tmp_path, "stop"),
        [
            "train.epochs=30",
            "train.val_every=2",
            "train.optimizer.lr=1e-9",
            "train.early_stop.patience=3",
            "train.monitor=val_loss",
            "train.early_stop.min_delta=1",
        ],
        tmp_path / "runs",
        QUIET,
    )
    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["epochs"] == 6 and summary["stopped"].startswith("early stop")


def test_mixup_cutmix_and_label_smoothing_train(tmp_path):
    run_dir = run.start(
        recipe(tmp_path),
        [
            "train.epochs=2",
            "data.augment.mixup=0.2",
            "data.augment.cutmix=1.0",
            "train.label_smoothing=0.1",
            "train.clip_grad=1.0",
        ],
        tmp_path / "runs",
        QUIET,
    )
    assert json.loads((run_dir / "summary.json").read_text())["epochs"] == 2


def test_wandb_mode_comes_from_wandb_mode_when_the_recipe_leaves_it_unset(tmp_path, monkeypatch):
    """WANDB_MODE=disabled, wandb's own switch, trains without importing wandb (a machine without it)."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setitem(sys.modules, "wandb", None)  # any `import wandb` now fails
    unset = recipe(tmp_path, track={"wandb": None})
    run_dir = run.start(unset, ["train.epochs=1"], tmp_path / "runs", QUIET)
    assert (run_dir / "summary.json").is_file() and not (run_dir / "wandb").exists()
    monkeypatch.setenv("WANDB_MODE", "online")
    assert load(unset).wandb_mode() == "online"
    assert load(recipe(tmp_path, "set", track={"wandb": "offline"})).wandb_mode() == "offline"  # recipe wins
    monkeypatch.setenv("WANDB_MODE", "dryrun")  # not one of the three: the usual default
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert load(unset).wandb_mode() == "offline"


def test_wandb_offline_writes_locally(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run_dir = run.start(recipe(tmp_path), ["train.epochs=1", "track.wandb=offline"], tmp_path / "runs", QUIET)
    assert list((run_dir / "wandb").glob("offline-run-*"))
