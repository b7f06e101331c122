"""`torchvision`: any torchvision classifier (random init, never downloads), adapted to the input."""

from __future__ import annotations

from collections import OrderedDict
from functools import cache

from pydantic import Field, field_validator, model_validator
from torch import nn

from edgekit.errors import EdgekitError, unknown
from edgekit.models.contract import MODELS, Classifier
from edgekit.models.layers import Knobs

# Where torchvision keeps each model's final classifier, in the order to look.
HEAD_ATTRS = ("fc", "classifier", "head", "heads")


@cache
def names() -> list[str]:
    # Imported here, not at the top: torchvision takes ~1.5 s to import, and every recipe check would
    # pay it through the model registry even when no recipe names a torchvision model.
    import torchvision.models

    return torchvision.models.list_models(module=torchvision.models)


class TorchvisionParams(Knobs):
    name: str = "resnet18"
    # Smaller images are upsampled to this inside `features` (resnet18 needs ≥ 32 to keep a 1×1 map,
    # inception_v3 75; a vit_* is built for this size, which must be a multiple of its patch size).
    min_size: int = Field(32, ge=1)

    @field_validator("name")
    @classmethod
    def _known_name(cls, value: str) -> str:
        # EdgekitError, not ValueError: pydantic passes it through unwrapped, as the standard name error.
        if value not in names():
            raise unknown("torchvision model", value, names(), "model.name")
        return value

    @model_validator(mode="after")
    def _no_knobs(self):
        # torchvision builds its own layers; a knob we cannot apply must fail loudly, not be ignored.
        changed = [
            k
            for k, f in Knobs.model_fields.items()
            if getattr(self, k) != f.get_default(call_default_factory=True)
        ]
        if changed:
            raise ValueError(f"torchvision models build their own layers; remove {', '.join(changed)}")
        return self


class RepeatChannels(nn.Module):
    """Grayscale → RGB by repeating the channel: no parameters, so pretrained-style stems apply as-is."""

    def forward(self, x):
        return x.expand(-1, 3, -1, -1)


def _adapter(in_channels: int) -> nn.Module:
    # Other channel counts (e.g. 4) get a learned 1×1 conv to 3 channels.
    table = {1: RepeatChannels, 3: nn.Identity}
    return table.get(in_channels, lambda: nn.Conv2d(in_channels, 3, 1))()


def _extra_kwargs(name: str, size: int) -> dict:
    # Auxiliary heads return tuples in training mode, which a features/head split cannot carry; a ViT
    # takes its image size as a constructor argument.
    extras = {
        "googlenet": {"aux_logits": False, "init_weights": False},
        "inception": {"aux_logits": False, "init_weights": False},
        "vit_": {"image_size": size},
    }
    return next((kw for prefix, kw in extras.items() if name.startswith(prefix)), {})


@MODELS.register("torchvision", TorchvisionParams)
def torchvision_model(
    p: TorchvisionParams, in_channels: int, num_classes: int, image_size: int
) -> Classifier:
    size = max(image_size, p.min_size)
    import torchvision.models

    body = torchvision.models.get_model(
        p.name, weights=None, num_classes=num_classes, **_extra_kwargs(p.name, size)
    )
    attr = next(a for a in HEAD_ATTRS if isinstance(getattr(body, a, None), nn.Module))
    head = getattr(body, attr)
    if not any(isinstance(m, nn.Linear) for m in head.modules()):
        raise EdgekitError(f"model.name: torchvision '{p.name}' has no Linear classifier to split off")
    setattr(body, attr, nn.Identity())
    resize = (
        nn.Upsample(size=size, mode="bilinear", align_corners=False) if size > image_size else nn.Identity()
    )
    features = nn.Sequential(OrderedDict(adapt=_adapter(in_channels), resize=resize, body=body))
    return Classifier(features, head)
