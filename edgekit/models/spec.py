"""`ModelSpec`: what rebuilds a model (arch, options, input, classes, normalization), as plain data."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edgekit.errors import EdgekitError


class ModelSpec(BaseModel):
    """Built once when a run starts and saved in every checkpoint (as its top-level plain keys), so export,
    teachers, pruning, runtimes and summaries rebuild the model without its recipe."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    arch: str
    options: dict[str, Any] = Field(default_factory=dict)
    in_channels: int
    num_classes: int
    image_size: int
    # What the model expects of its input and what its outputs mean: the data's, when it was trained.
    mean: list[float] | None = None
    std: list[float] | None = None
    class_names: list[str] | None = None

    @classmethod
    def of(cls, checkpoint: dict[str, Any]) -> ModelSpec:
        """The spec a checkpoint (or any dict with the same keys) holds."""
        return cls.model_validate(checkpoint)

    def plain(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def with_options(self, options: dict[str, Any]) -> ModelSpec:
        """The same model with some options changed (e.g. the widths pruning left)."""
        return self.model_copy(update={"options": {**self.options, **options}})

    def build(self):
        """A freshly initialised model of this spec (options validated by the family's params class)."""
        from edgekit.models.contract import build_model

        return build_model(self.arch, self.options, self.in_channels, self.num_classes, self.image_size)

    def load(self, weights: dict[str, Any], source: Any):
        """The model with `weights`, in eval mode; weights of another shape are a one-line error."""
        model = self.build()
        try:
            model.load_state_dict(weights)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise EdgekitError(f"{source}: weights do not fit {self.arch} {self.options} ({first})") from None
        return model.eval()
