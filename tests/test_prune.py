"""`edgekit prune`: each family pruned to its target, rebuilt from its options, exported; CLI; bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_MOBILENET, train_tiny
from torch import nn
from typer.testing import CliRunner

from edgekit.bundle import load_eval
from edgekit.cli import app
from edgekit.errors import EdgekitError
from edgekit.export import onnx as to
from edgekit.export import parity
from edgekit.export.write import export_run
from edgekit.models import build_model, count_macs, count_params
from edgekit.prune.prune import How, prune_model
from edgekit.runs import load_checkpoint

DIGITS = {"in_channels": 1, "num_classes": 10, "image_size": 8}
TOLERANCE = 0.1  # of the target: how far under it the nearest whole-channel result may land
MOBILENET = {k: v for k, v in TINY_MOBILENET.items() if k != "arch"} | {"expansion": [1, 4]}
FAMILIES = {
    "lenet": ("lenet", {"channels": [8, 16]}),
    "lenet_dw": ("lenet", {"channels": [16, 32], "conv": "dwsep"}),
    "resnet": ("resnet_small", {"stem_channels": 8, "channels": [16, 24], "blocks": [1, 1]}),
    "resnet_dw": ("resnet_small", {"conv": "dwsep", "stem_channels": 8, "channels": [16, 24], "head": "mlp"}),
    "mobilenet": ("mobilenet_tiny", MOBILENET),  # the family's default: depthwise 3×3
    "mobilenet_std": ("mobilenet_tiny", {**MOBILENET, "conv": "standard"}),
}
runner = CliRunner()


def batch(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 8, 8, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def model_of(arch: str, options: dict) -> nn.Module:
    torch.manual_seed(0)
    return build_model(arch, options, **DIGITS)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_family_reaches_its_target_rebuilds_and_exports(name, tmp_path):
    arch, options = FAMILIES[name]
    model = model_of(arch, options)
    x, y = batch()
    pruned = prune_model(model, How("macs", 0.5), (x, y))
    before, after = count_macs(model, (1, 8, 8)), count_macs(pruned, (1, 8, 8))
    assert 0.5 * (1 - TOLERANCE) * before <= after <= 0.5 * before
    assert pruned(x).shape == (64, 10)
    assert pruned.classifier.out_features == 10
    # What a checkpoint holds: plain options and tensors; weights_only loading refuses anything else.
    torch.save({"options": pruned.spec.options, "model": pruned.state_dict()}, tmp_path / "ckpt.pt")
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert json.loads(json.dumps(ckpt["options"])) == ckpt["options"]
    rebuilt = build_model(arch, ckpt["options"], **DIGITS)
    rebuilt.load_state_dict(ckpt["model"])
    pruned.eval(), rebuilt.eval()
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), pruned(x), atol=1e-5)
    assert count_params(rebuilt) < count_params(model)
    sess = parity.session(to.to_onnx(rebuilt, (1, 8, 8), 18, None).SerializeToString())
    assert parity.check_parity(rebuilt, sess, x.numpy())["top1_agreement"] == 1.0


@pytest.mark.parametrize(
    "how",
    [
        How("params", 0.4, "l2", global_pruning=True),
        How("macs", 0.5, "taylor", steps=2),
        How("macs", 0.6, "bn-scale"),
    ],
    ids=["params-l2-global", "taylor-iterative", "bn-scale"],
)
def test_targets_importances_and_steps(how):
    model = model_of("lenet", {"channels": [16, 32], "hidden": [32]})
    pruned = prune_model(model, how, batch())
    measure = count_params if how.metric == "params" else lambda m: count_macs(m, (1, 8, 8))
    assert how.keep * (1 - TOLERANCE) * measure(model) <= measure(pruned) <= how.keep * measure(model)


def test_round_to_keeps_channel_counts_multiples():
    model = model_of("lenet", {"channels": [16, 32], "hidden": [24]})
    pruned = prune_model(model, How("macs", 0.5, round_to=8), batch())
    widths = pruned.widths()
    assert all(c % 8 == 0 for c in widths["channels"] + widths["hidden"]), widths
    assert widths["channels"] != [16, 32]


@pytest.mark.parametrize("norm", ["group", "instance", "layer"])
def test_group_norms_prune_and_rebuild(norm):
    # `group` on 8 channels and `instance` have one channel per group, which torch-pruning's own
    # GroupNorm handling could never remove.
    model = model_of("lenet", {"channels": [8, 16], "norm": norm})
    pruned = prune_model(model, How("macs", 0.5), batch())
    assert count_macs(pruned, (1, 8, 8)) <= 0.5 * count_macs(model, (1, 8, 8))
    assert pruned.spec.options["channels"] != [8, 16]


def test_out_of_reach_and_unprunable_are_one_line_errors():
    with pytest.raises(EdgekitError, match="out of reach"):
        prune_model(model_of("lenet", {"channels": [8, 16]}), How("params", 0.01), batch())
    with pytest.raises(EdgekitError, match="no BatchNorm"):
        prune_model(
            model_of("lenet", {"channels": [8, 16], "norm": "group"}), How("macs", 0.5, "bn-scale"), batch()
        )
    with pytest.raises(EdgekitError, match="cannot be pruned: its widths"):
        prune_model(model_of("torchvision", {"name": "resnet18"}), How("macs", 0.5), batch())


def test_widths_keep_shortcuts_when_pruning_makes_widths_equal():
    # A projected block pruned to equal widths keeps its 1×1 conv; an unprojected MobileNet block with
    # equal widths gains no residual: the rebuilt model must have the pruned one's layers, no more.
    resnet = model_of("resnet_small", {"stem_channels": 8, "channels": [8], "projection": [True]})
    assert not isinstance(resnet.features.stage0.block0.shortcut, nn.Identity)
    assert resnet.widths()["projection"] == [True]
    equal = {**MOBILENET, "channels": [8, 8], "strides": [1, 1], "residual": [True, False, True]}
    mobilenet = model_of("mobilenet_tiny", equal)
    assert [b.residual for b in mobilenet.features.stage1.children()] == [False, True]
    for model in (resnet, mobilenet):
        rebuilt = model.spec.with_options(model.widths()).build()
        rebuilt.load_state_dict(model.state_dict())
    with pytest.raises(EdgekitError, match="model.projection"):
        model_of("resnet_small", {"channels": [48], "projection": [False]})


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A lenet run on digits, trained one epoch (copied by tests that write next to it)."""
    root = tmp_path_factory.mktemp("trained")
    return train_tiny(root, "tiny", {"arch": "lenet", "channels": [8, 16]}, batch_size=128)


def test_cli_prunes_fine_tunes_exports_and_resumes(trained, tmp_path):
    run = shutil.copytree(trained, tmp_path / "runs" / "tiny")
    # Overrides reach the fine-tune, a section the source left out (distill: null) included.
    kd = [f"distill.teacher={trained}", "distill.min_teacher_acc=0"]
    args = ["prune", str(run), "--macs", "0.5", "--finetune-epochs", "1", "train.batch_size=256", *kd]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = tmp_path / "runs" / "tiny-pruned"
    summary = json.loads((out / "summary.json").read_text())
    report = summary["pruned_from"]
    assert report["before"]["macs"] == count_macs(model_of("lenet", {"channels": [8, 16]}), (1, 8, 8))
    assert summary["macs"] == report["pruned"]["macs"] <= 0.5 * report["before"]["macs"]
    assert report["kept"]["macs"] <= 0.5 and report["target"] == {"macs": 0.5}
    assert summary["epochs"] == 1 and summary["test_acc"] is not None
    assert summary["distill"]["teachers"] == [str(trained / "best.pt")]
    assert "before" in result.output and "fine-tuned" in result.output
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert recipe["train"]["batch_size"] == 256 and recipe["model"]["channels"] != [8, 16]
    ckpt = load_checkpoint(out / "best.pt")  # weights_only
    assert ckpt["options"] == {k: v for k, v in recipe["model"].items() if k != "arch"}
    bundle = export_run(out, tmp_path / "export")
    x, _ = load_eval(bundle)
    assert parity.session((bundle / "model.onnx").read_bytes()).run(None, {"input": x})[0].shape[1] == 10
    result = runner.invoke(app, ["train", "--resume", str(out), "train.epochs=2"])
    assert result.exit_code == 0, result.output
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["epochs"] == 2 and resumed["pruned_from"] == report


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--macs", "1.5"], "--macs 1.5: expected the fraction of macs kept, in (0, 1)"),
        (["--params", "0"], "--params 0.0: expected"),
        (["--macs", "-0.2"], "--macs -0.2: expected"),
        (["--macs", "0.5", "--params", "0.5"], "give one of --macs or --params"),
        ([], "give one of --macs or --params"),
        (["--macs", "0.5", "--importance", "l3"], "unknown importance 'l3'"),
        (["--macs", "0.5", "--steps", "0"], "--steps 0: expected"),
        (["--macs", "0.5", "train.epohcs=3"], "train.epohcs: unknown key"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(trained, extra, message):
    before = sorted(p.name for p in trained.parent.iterdir())
    result = runner.invoke(app, ["prune", str(trained), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert sorted(p.name for p in trained.parent.iterdir()) == before


def test_run_without_checkpoint_is_one_line_exit_2(trained, tmp_path):
    run = shutil.copytree(trained, tmp_path / "tiny")
    (run / "best.pt").unlink()
    result = runner.invoke(app, ["prune", str(run), "--macs", "0.5"])
    assert result.exit_code == 2 and "best.pt: no such checkpoint" in result.output, result.output
    result = runner.invoke(app, ["prune", str(tmp_path / "nowhere"), "--macs", "0.5"])
    assert result.exit_code == 2 and "no such run folder" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]
