"""The `edgekit models` table: each architecture's defaults and each recipe, with parameters and MACs."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from edgekit.errors import EdgekitError
from edgekit.models.contract import MODELS, build_model
from edgekit.models.count import count_macs, count_params

# Folders of the recipes tree that hold other YAML files (sweep and pipeline specs), not recipes; a file
# named `_*.yaml` is a fragment that recipes extend (fashion/_teacher_ensemble.yaml), not one on its own.
NOT_RECIPES = {"sweeps", "pipelines"}


def _row(arch: str, options: dict, shape: tuple[int, int, int], num_classes: int) -> tuple[str, str]:
    model = build_model(arch, options, shape[0], num_classes, shape[1])
    return f"{count_params(model):,}", f"{count_macs(model, (1, *shape)):,}"


def zoo_table(recipes_dir: Path, in_channels: int, image_size: int, num_classes: int) -> Table:
    """Architectures at their defaults, then every recipe under `recipes_dir` (subfolders such as
    `fashion/` too, named by their path), counted for one input shape."""
    import edgekit.train  # noqa: F401  (binds the train registries the recipes are validated against)
    from edgekit.recipe import load

    shape = (in_channels, image_size, image_size)
    table = Table(
        title=f"input {in_channels}×{image_size}×{image_size}, {num_classes} classes", title_justify="left"
    )
    for column in ("name", "kind", "arch", "params", "MACs"):
        table.add_column(column, justify="right" if column in ("params", "MACs") else "left")
    for arch in MODELS.names():
        if arch == "torchvision":  # needs a model name; any torchvision classifier works
            table.add_row(arch, "architecture", arch, "—", "—")
            continue
        table.add_row(arch, "architecture", arch, *_row(arch, {}, shape, num_classes))
    for path in recipe_files(Path(recipes_dir)):
        name = path.relative_to(recipes_dir).with_suffix("").as_posix()
        try:
            recipe = load(path)
        except EdgekitError as e:
            table.add_row(name, "recipe", "[red]invalid[/]", str(e).splitlines()[0], "")
            continue
        table.add_row(
            name,
            "recipe",
            recipe.model.arch,
            *_row(recipe.model.arch, recipe.options("model"), shape, num_classes),
        )
    return table


def recipe_files(recipes_dir: Path) -> list[Path]:
    """Top-level recipes first, then each subfolder's, skipping sweep and pipeline folders and fragments."""
    files = [
        p
        for p in recipes_dir.rglob("*.yaml")
        if not NOT_RECIPES & set(p.relative_to(recipes_dir).parts) and not p.name.startswith("_")
    ]
    return sorted(files, key=lambda p: (len(p.relative_to(recipes_dir).parts), p.as_posix()))
