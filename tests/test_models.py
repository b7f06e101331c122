"""Model zoo: the contract for every registered architecture, the knobs, the size ladder, the counters."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from edgekit.errors import EdgekitError
from edgekit.export import onnx as to
from edgekit.export import parity
from edgekit.models import MODELS, Classifier, build_model, count_macs, count_params
from edgekit.prune.prune import How, prune_model

DIGITS = {"in_channels": 1, "num_classes": 10, "image_size": 8}
FAMILIES = ["lenet", "resnet_small", "mobilenet_tiny"]  # the families built from edgekit's own layers

# The configs recipes use on digits, with the parameter range each must land in.
LADDER = {
    "lenet_small": ("lenet", {}, 17_000, 23_000),
    "lenet_small_dw": ("lenet", {"conv": "dwsep", "stem_conv": "standard"}, 2_500, 3_500),
    "lenet_2k": ("lenet", {"channels": [8, 16]}, 1_700, 2_300),
    "lenet_1k": ("lenet", {"channels": [6, 10]}, 800, 1_200),
    "resnet_small": ("resnet_small", {}, 50_000, 150_000),
    "mobilenet_tiny": ("mobilenet_tiny", {}, 80_000, 120_000),
}


def digits_model(arch: str, options: dict | None = None, **spec) -> Classifier:
    return build_model(arch, options or {}, **{**DIGITS, **spec})


def forward_backward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.train()
    logits = model(x)
    logits.sum().backward()
    return logits


@pytest.mark.parametrize("arch", MODELS.names())
def test_contract(arch):
    torch.manual_seed(0)
    model = digits_model(arch)
    logits = forward_backward(model, torch.randn(2, 1, 8, 8))
    assert logits.shape == (2, 10)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert isinstance(model.classifier, nn.Linear) and model.classifier.out_features == 10
    assert set(dict(model.named_children())) == {"features", "head"}
    model.eval()
    x = torch.randn(3, 1, 8, 8)
    assert torch.allclose(model.head(model.features(x)), model(x))
    # A checkpoint holds only model.spec's plain values: they must rebuild the same model.
    rebuilt = model.spec.build()
    assert count_params(rebuilt) == count_params(model)
    rebuilt.load_state_dict(model.state_dict())
    assert torch.allclose(model(x), rebuilt.eval()(x))


@pytest.mark.parametrize("arch", MODELS.names())
def test_contract_export_and_prune(arch):
    """Every registered family exports to ONNX with parity, and is pruned to half its MACs and rebuilt
    from plain options, or refuses pruning in one line: a new family is covered without a list to edit."""
    torch.manual_seed(0)
    model = digits_model(arch).eval()
    x, y = torch.randn(16, 1, 8, 8), torch.arange(16) % 10
    session = parity.session(to.to_onnx(model, (1, 8, 8), 18, None).SerializeToString())
    assert parity.check_parity(model, session, x.numpy())["top1_agreement"] == 1.0
    if not model.widths():
        with pytest.raises(EdgekitError, match=f"architecture '{arch}' cannot be pruned"):
            prune_model(model, How("macs", 0.5), (x, y))
        return
    pruned = prune_model(model.train(), How("macs", 0.5), (x, y))
    assert count_macs(pruned, (1, 8, 8)) <= 0.5 * count_macs(model, (1, 8, 8))
    rebuilt = pruned.spec.load(pruned.state_dict(), arch)  # a pruned model's spec carries its widths
    assert torch.allclose(rebuilt(x), pruned.eval()(x), atol=1e-5)


@pytest.mark.parametrize("arch", MODELS.names())
def test_rgb_32(arch):
    model = build_model(arch, {}, in_channels=3, num_classes=5, image_size=32)
    assert forward_backward(model, torch.randn(2, 3, 32, 32)).shape == (2, 5)


@pytest.mark.parametrize(
    "arch, options",
    [
        ("lenet", {"hidden": [32]}),
        ("lenet", {"conv": "dwsep", "pool": "avg"}),
        ("resnet_small", {"channels": [16, 32], "blocks": [1, 2], "head": "bottleneck"}),
        ("resnet_small", {"conv": "dwsep", "head": "mlp", "hidden": 32}),
        ("mobilenet_tiny", {}),
        (
            "mobilenet_tiny",
            {
                "conv": "standard",
                "channels": [8, 16],
                "expansion": [1, 4],
                "repeats": [1, 2],
                "strides": [1, 2],
            },
        ),
    ],
)
def test_pruned_model_rebuilds_from_widths(arch, options):
    tp = pytest.importorskip("torch_pruning")
    torch.manual_seed(0)
    model = digits_model(arch, options)
    x = torch.randn(2, 1, 8, 8)
    pruner = tp.pruner.MagnitudePruner(
        model,
        x,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=0.5,
        ignored_layers=[model.classifier],
    )
    pruner.step()
    rebuilt = digits_model(arch, {**model.spec.options, **model.widths()})
    assert count_params(rebuilt) == count_params(model) < count_params(digits_model(arch, options))
    rebuilt.load_state_dict(model.state_dict())
    model.eval(), rebuilt.eval()
    assert torch.allclose(model(x), rebuilt(x), atol=1e-6)


@pytest.mark.parametrize("norm", ["batch", "group", "layer", "instance", "none"])
@pytest.mark.parametrize("arch", FAMILIES)
def test_every_norm(arch, norm):
    model = digits_model(arch, {"norm": norm})
    assert forward_backward(model, torch.randn(2, 1, 8, 8)).shape == (2, 10)
    convs = [m for m in model.features.modules() if isinstance(m, nn.Conv2d)]
    # A conv feeding a norm needs no bias; without a norm the conv's bias is the only offset.
    assert any(c.bias is not None for c in convs) == (norm == "none")


@pytest.mark.parametrize("arch", FAMILIES)
def test_dwsep_lowers_params(arch):
    standard = count_params(digits_model(arch, {"conv": "standard"}))
    dwsep = count_params(digits_model(arch, {"conv": "dwsep"}))
    print(f"{arch}: standard {standard:,} → dwsep {dwsep:,}")
    assert dwsep < standard
    groups = [m.groups for m in digits_model(arch, {"conv": "dwsep"}).modules() if isinstance(m, nn.Conv2d)]
    assert max(groups) > 1


@pytest.mark.parametrize("arch", FAMILIES)
def test_stem_conv_sets_only_the_conv_that_reads_the_image(arch):
    """stem_conv=standard: one full conv on the image, the rest stay depthwise-separable; unset, the stem
    follows `conv` as before, so checkpoints saved without the option rebuild to the same shapes."""

    def convs(options):
        return [m for m in digits_model(arch, options).modules() if isinstance(m, nn.Conv2d)]

    dwsep, stem = convs({"conv": "dwsep"}), convs({"conv": "dwsep", "stem_conv": "standard"})
    reads_image = [c for c in stem if c.in_channels == DIGITS["in_channels"]]
    assert len(reads_image) == 1 and reads_image[0].groups == 1 and reads_image[0].kernel_size == (3, 3)
    assert max(c.groups for c in stem) > 1  # later convs still depthwise
    assert len(stem) == len(dwsep) - 1  # the stem's depthwise + pointwise pair became one conv
    assert [c.weight.shape for c in convs({"conv": "dwsep", "stem_conv": None})] == [
        c.weight.shape for c in dwsep
    ]
    standard = convs({"conv": "standard", "stem_conv": "dwsep"})
    assert standard[0].groups == 1 and standard[0].kernel_size == (3, 3) and standard[1].kernel_size == (1, 1)


@pytest.mark.parametrize("name", LADDER)
def test_ladder_sizes(name):
    arch, options, low, high = LADDER[name]
    model = digits_model(arch, options)
    params, macs = count_params(model), count_macs(model, (1, 8, 8))
    print(f"{name}: {arch} {options} → {params:,} params, {macs:,} MACs")
    assert low <= params <= high


def test_resnet_bottleneck_head_cuts_params():
    linear = count_params(digits_model("resnet_small", {"head": "linear"}))
    bottleneck = count_params(digits_model("resnet_small", {"head": "bottleneck"}))
    mlp = count_params(digits_model("resnet_small", {"head": "mlp"}))
    print(f"resnet_small heads: linear {linear:,}, bottleneck {bottleneck:,}, mlp {mlp:,}")
    assert linear / bottleneck > 1.8
    assert mlp / bottleneck > 4


def test_width_multiplier_scales_channels():
    half = digits_model("lenet", {"width": 0.5})
    assert half.widths()["channels"] == [8, 16, 24]
    assert count_params(half) < count_params(digits_model("lenet"))
    assert digits_model("lenet", {"width": 0.01}).widths()["channels"] == [1, 1, 1]


@pytest.mark.parametrize("arch", FAMILIES)
def test_dropout_modules_appear_when_set(arch):
    # Head dropout needs a hidden layer in lenet and resnet; dropout2d needs two blocks.
    options = {
        "lenet": {"hidden": [16], "channels": [8, 16]},
        "resnet_small": {"head": "mlp", "hidden": 16, "channels": [8, 16]},
        "mobilenet_tiny": {},
    }[arch]
    plain = digits_model(arch, options)
    dropped = digits_model(arch, {**options, "dropout": 0.2, "dropout2d": 0.1})
    kinds = {type(m) for m in dropped.modules()}
    assert nn.Dropout in kinds and nn.Dropout2d in kinds
    assert not {nn.Dropout, nn.Dropout2d} & {type(m) for m in plain.modules()}
    # Named children: switching dropout on does not rename any weight.
    assert plain.state_dict().keys() == dropped.state_dict().keys()


def test_torchvision_resnet18_on_digits():
    model = digits_model("torchvision", {"name": "resnet18"})
    assert forward_backward(model, torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert isinstance(model.features.resize, nn.Upsample)  # 8×8 is upsampled to min_size
    assert model.head is model.classifier  # resnet's fc is the head


def test_torchvision_bad_name_suggests():
    with pytest.raises(EdgekitError, match="did you mean 'resnet18'"):
        digits_model("torchvision", {"name": "resnet19"})


def test_torchvision_rejects_knobs():
    with pytest.raises(ValidationError, match="norm"):
        digits_model("torchvision", {"name": "resnet18", "norm": "group"})


def test_unknown_option_and_bad_values():
    with pytest.raises(ValidationError, match="dropuot"):
        digits_model("lenet", {"dropuot": 0.1})
    with pytest.raises(ValidationError, match="allowed: elu, gelu"):
        digits_model("lenet", {"act": "swish"})
    with pytest.raises(ValidationError):
        digits_model("resnet_small", {"dropout": 1.0})
    with pytest.raises(ValidationError, match="blocks has 1 entries"):
        digits_model("resnet_small", {"channels": [8, 16], "blocks": [1]})
    with pytest.raises(EdgekitError, match="did you mean 'lenet'"):
        digits_model("lenett")


@pytest.mark.parametrize("act", ["relu", "relu6", "silu", "gelu", "hardswish", "leaky_relu", "elu", "tanh"])
def test_every_activation(act):
    model = digits_model("lenet", {"act": act, "channels": [4, 8]})
    assert forward_backward(model, torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("groups, stride", [(1, 1), (1, 2), (4, 1)])
def test_count_macs_matches_conv_arithmetic(groups, stride):
    conv = nn.Conv2d(8, 16, 3, stride=stride, padding=1, groups=groups)
    out = (9 + 2 - 3) // stride + 1
    assert count_macs(conv, (8, 9, 9)) == 16 * (8 // groups) * 3 * 3 * out * out


def test_count_macs_keeps_training_mode_and_params_skip_frozen():
    model = digits_model("lenet")
    model.train()
    assert count_macs(model, (1, 1, 8, 8)) > 0 and model.training
    total = count_params(model)
    model.classifier.weight.requires_grad_(False)
    assert count_params(model) == total - model.classifier.weight.numel()


def test_from_checkpoint_rebuilds_and_refuses_weights_of_another_shape():
    from edgekit.models import from_checkpoint

    model = build_model("lenet", {"channels": [4, 8]}, 1, 10, 8)
    ckpt = {**model.spec.plain(), "model": model.state_dict()}
    rebuilt = from_checkpoint(ckpt, "a.pt")
    assert not rebuilt.training
    before, after = model.state_dict(), rebuilt.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(EdgekitError, match=r"a.pt: weights do not fit lenet"):
        from_checkpoint({**ckpt, "options": {**ckpt["options"], "channels": [4, 6]}}, "a.pt")


def test_lenet_downsample_skips_pooling_without_adding_parameters():
    options = {"channels": [4, 8, 8], "conv": "dwsep", "pool": "avg"}
    pooled = digits_model("lenet", options)
    kept = digits_model("lenet", {**options, "downsample": [False, True, True]})
    assert count_params(kept) == count_params(pooled)
    x = torch.randn(2, 1, 8, 8)
    assert pooled.features(x).shape[-1] == 1  # 8 → 4 → 2 → 1
    assert kept.features(x).shape[-1] == 2  # 8 → 8 → 4 → 2
    assert forward_backward(kept, x).shape == (2, 10)
    with pytest.raises(ValidationError, match="downsample has 2 flags for 3 channels"):
        digits_model("lenet", {**options, "downsample": [False, True]})


@pytest.mark.parametrize("act", ["relu", "relu6"])
def test_lenet_pools_before_an_activation_that_commutes_with_it_bit_for_bit(act):
    # Two copies of one model, one forced back to conv → norm → act → pool; trained alike, they must stay
    # identical (values and gradients), in training and eval mode.
    options = {"channels": [4, 8, 8], "act": act, "downsample": [False, True, True]}
    fast = digits_model("lenet", options)
    slow = digits_model("lenet", options)
    slow.load_state_dict(fast.state_dict())
    assert [s.pool_first for s in fast.features] == [False, True, True]  # stage0 has no pool
    for stage in slow.features:
        stage.pool_first = False
    torch.manual_seed(0)
    opts = [torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.9) for m in (fast, slow)]
    for _ in range(5):
        x, y = torch.randn(16, 1, 8, 8) * 3, torch.randint(0, 10, (16,))
        for model, opt in zip((fast, slow), opts, strict=True):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for a, b in zip(fast.state_dict().values(), slow.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(fast.eval()(x), slow.eval()(x))


def test_lenet_keeps_the_canonical_order_where_pooling_first_would_change_it():
    assert not digits_model("lenet", {"act": "silu"}).features[0].pool_first  # silu is not monotone
    # ONNX gets conv → relu → pool (onnxruntime fuses Conv+Relu; int8 calibrates the conv's output ≥ 0).
    proto = to.to_onnx(digits_model("lenet", {"channels": [4, 8]}).eval(), (1, 8, 8), 18, None)
    nodes = [n.op_type for n in proto.graph.node if n.op_type in {"Relu", "MaxPool"}]
    assert nodes == ["Relu", "MaxPool", "Relu", "MaxPool"]
