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
from edgekit.data import prepare_for
from edgekit.recipe import load

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


# Each rank runs `fit` with val figures scripted per rank: rank 0 improves every epoch; rank 1, alone, would
# see its best at epoch 1, halve its lr at epoch 2 (plateau, patience 0) and stop early (patience 1).
RANK_WORKER = """
import json, os, sys
from pathlib import Path
from edgekit.data import prepare_for
from edgekit.recipe import load
from edgekit.train import ddp, loop, run
from edgekit.train.track import Silent

seen = {"0": [0.5, 0.6, 0.7, 0.8], "1": [0.9, 0.1, 0.1, 0.1]}[os.environ["RANK"]]
real = loop.evaluate
lrs = []

def scripted(s, loader, model=None):
    lrs.append(s.optimizer.param_groups[0]["lr"])
    return {**real(s, loader, model), "acc": seen[s.epoch - 1]}  # val follows the epoch it scores

loop.evaluate = scripted
recipe = load(sys.argv[1], [])
state = run.build_state(recipe, prepare_for(recipe))
out = Path(sys.argv[2])
reason = loop.fit(state, out, Silent())
lrs.append(state.optimizer.param_groups[0]["lr"])
(out / f"rank{ddp.rank()}.json").write_text(json.dumps(
    {"reason": reason, "epoch": state.epoch, "best_epoch": state.best_epoch, "best": state.best, "lrs": lrs}
))
ddp.teardown(state)  # as `edgekit train` leaves: the DDP wrapper released before the process group
"""


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_ranks_take_rank_zeros_decisions_when_their_val_differs(tmp_path):
    import yaml

    recipe = {
        "model": {"arch": "lenet", "channels": [4, 8]},
        "data": {"train_per_class": 10},
        "train": {
            "epochs": 4, "batch_size": 32, "device": "cpu",
            "early_stop": {"patience": 1},
            "scheduler": {"name": "plateau", "patience": 0, "factor": 0.5},
        },
        "track": {"wandb": "disabled"},
    }  # fmt: skip
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    (tmp_path / "worker.py").write_text(RANK_WORKER)
    # The data cache (this test's EDGEKIT_CACHE, which the ranks inherit) is filled here once, not by both.
    import edgekit.train.run  # noqa: F401  (binds the train.* registries the recipe is checked with)

    prepare_for(load(tmp_path / "r.yaml", []))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*launcher, str(tmp_path / "worker.py"), str(tmp_path / "r.yaml"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,  # a rank that stopped alone would leave the other waiting at its next all-reduce
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # same stop, best epoch, best value and lr at every epoch
    assert ranks[0]["reason"] == "finished" and ranks[0]["epoch"] == 4  # rank 0's figures kept improving
    assert ranks[0]["best_epoch"] == 4 and ranks[0]["best"] == 0.8
    assert len(set(ranks[0]["lrs"])) == 1  # the plateau never fired: rank 1's drop did not count


def test_sync_bn_is_a_no_op_in_one_process():
    import torch
    from torch import nn

    from edgekit.train import ddp

    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    assert ddp.sync_batchnorm(model, torch.device("cpu")) is model
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())


def test_sync_bn_on_cpu_ranks_is_a_one_line_error():
    import torch
    import torch.distributed as dist
    from torch import nn

    from edgekit.errors import EdgekitError
    from edgekit.train import ddp

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        with pytest.raises(EdgekitError, match="CUDA devices only.*train.sync_bn=false"):
            ddp.sync_batchnorm(nn.Sequential(nn.BatchNorm2d(4)), torch.device("cpu"))
    finally:
        dist.destroy_process_group()


def test_sync_bn_is_a_recipe_key(tmp_path):
    import yaml

    import edgekit.train.run  # noqa: F401  (binds the train.* registries)

    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"model": {"arch": "lenet"}}))
    assert load(tmp_path / "r.yaml", []).train.sync_bn is False
    assert load(tmp_path / "r.yaml", ["train.sync_bn=true"]).train.sync_bn is True
