"""What every model exposes (features/head split, classifier, spec, widths) and the one factory."""

from __future__ import annotations

from typing import Any

from torch import nn

from edgekit.errors import EdgekitError
from edgekit.models.spec import ModelSpec
from edgekit.recipe_schema import bind
from edgekit.registry import Registry

MODELS = Registry("architecture")
bind(("model",), MODELS)


class Classifier(nn.Module):
    """`features` (image → feature map or vector) then `head` (features → logits).

    `spec` is the `ModelSpec` `build_model` was called with (arch, options with defaults filled in,
    in_channels, num_classes, image_size), so a checkpoint can rebuild the model without its recipe.
    """

    def __init__(self, features: nn.Module, head: nn.Module):
        super().__init__()
        self.features = features
        self.head = head
        self.spec: ModelSpec | None = None

    def forward(self, x):
        return self.head(self.features(x))

    @property
    def classifier(self) -> nn.Linear:
        """The last Linear of the head (timm's accessor), e.g. to reset it for new classes."""
        linears = [m for m in self.head.modules() if isinstance(m, nn.Linear)]
        if not linears:
            # Not AttributeError: nn.Module.__getattr__ would swallow it and blame a missing attribute.
            raise EdgekitError(f"{type(self).__name__}: the head has no Linear classifier")
        return linears[-1]

    def widths(self) -> dict[str, Any]:
        """Options overrides that give this instance's actual channel widths (after pruning).

        `build_model(arch, {**options, **model.widths()}, ...)` rebuilds a pruned model with the same
        shapes. Families whose widths cannot be written as options return {}.
        """
        return {}


def build_model(arch: str, options: dict, in_channels: int, num_classes: int, image_size: int) -> Classifier:
    """Look up `arch`, validate `options` with its params class, and build it for this input."""
    entry = MODELS.get(arch, "model.arch")
    params = entry.params.model_validate(options)
    model = entry.fn(params, in_channels=in_channels, num_classes=num_classes, image_size=image_size)
    model.spec = ModelSpec(
        arch=arch,
        options=params.model_dump(mode="json"),
        in_channels=in_channels,
        num_classes=num_classes,
        image_size=image_size,
    )
    return model


def from_checkpoint(ckpt: dict[str, Any], source: Any) -> Classifier:
    """The model a checkpoint describes, with its weights, in eval mode: the one way to rebuild one."""
    return ModelSpec.of(ckpt).load(ckpt["model"], source)
