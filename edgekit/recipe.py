"""Recipe loading: YAML → validated `Recipe` (recipe_schema.py), with `extends:`, dotted overrides and
one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from edgekit.errors import EdgekitError, did_you_mean
from edgekit.recipe_schema import AUTO, REGISTRIES, SELECTORS, Recipe


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe file (following `extends:`), apply `key=value` overrides, validate."""
    path = Path(path)
    raw = _read(path, seen=())
    apply_overrides(raw, overrides, str(path))
    raw.setdefault("name", path.stem)
    return validate(raw, str(path))


def validate(raw: dict[str, Any], source: str) -> Recipe:
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as e:
        raise EdgekitError(describe(e, Recipe, (), source)) from None
    _validate_choices(recipe, source)
    _check_without_val(recipe, source)
    return recipe


def _check_without_val(recipe: Recipe, source: str) -> None:
    """With `data.val_fraction: 0` nothing scores an epoch, so nothing may wait on val's verdict."""
    if recipe.data.val_fraction > 0:
        return
    t = recipe.train
    needs_val = {
        "train.select = best": t.select == "best",
        f"train.early_stop.patience = {t.early_stop.patience}": t.early_stop.patience is not None,
        "train.scheduler.name = plateau": t.scheduler.name == "plateau",
    }
    for setting, wrong in needs_val.items():
        if wrong:
            raise EdgekitError(
                f"{source}: data.val_fraction = 0 leaves no val split, but {setting} needs one: "
                "use train.select: last, no early stopping and a schedule that does not watch val"
            )


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...], source: str) -> None:
    """Set dotted `a.b.c=value` pairs; values are parsed as YAML scalars (never eval'd)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise EdgekitError(f"override '{item}': expected dotted.key=value, e.g. train.epochs=50")
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            value = text
        node = raw
        *parents, leaf = key.split(".")
        for i, part in enumerate(parents):
            if node.get(part) is None:  # an absent or null section (e.g. distill: null) gets filled in
                node[part] = {}
            child = node[part]
            if not isinstance(child, dict):
                raise EdgekitError(f"override '{item}': {'.'.join(parents[: i + 1])} is not a section")
            node = child
        # Switching a choice (e.g. model.arch) drops the options of the old one, keeps the section's own.
        if SELECTORS.get(tuple(parents)) == leaf and node.get(leaf) != value:
            own = _own_fields(tuple(parents))
            for key in [k for k in node if k not in own]:
                del node[key]
        node[leaf] = value


def _read(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if path.is_dir():
        raise EdgekitError(f"{path}: is a folder, expected a recipe .yaml file")
    if not path.exists():
        raise EdgekitError(f"{path}: no such recipe file")
    if path.resolve() in seen:
        raise EdgekitError(f"{path}: 'extends' loops back to itself")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise EdgekitError(f"{path}:{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(raw, dict):
        raise EdgekitError(f"{path}: expected a mapping of sections (data, model, train, ...)")
    parents = raw.pop("extends", None)
    if parents is None:
        return raw
    parents = [parents] if isinstance(parents, str) else parents
    if not (isinstance(parents, list) and parents and all(isinstance(p, str) for p in parents)):
        raise EdgekitError(f"{path}: extends = {parents!r}: expected a recipe file or a list of them")
    base: dict[str, Any] = {}
    for parent in parents:  # merged in order: a later parent wins, and the file itself wins over all
        part = _read(path.parent / parent, seen + (path.resolve(),))
        part.pop("name", None)  # a recipe is named after its own file unless it says otherwise
        base = _merge(base, part, ())
    return _merge(base, raw, ())


def _merge(base: dict, child: dict, at: tuple[str, ...]) -> dict:
    selector = SELECTORS.get(at)
    if selector and selector in child and child[selector] != base.get(selector):
        # A different architecture/dataset/...: the parent's options for the old one don't apply.
        base = {k: v for k, v in base.items() if k in _own_fields(at)}
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, at + (key,))
        else:
            out[key] = value
    return out


def _own_fields(section: tuple[str, ...]) -> set[str]:
    """The keys a choice section has whatever its choice (e.g. data.image_size, distill.teacher)."""
    cls: type[BaseModel] = Recipe
    for part in section:
        cls = next(a for a in _union_args(cls.model_fields[part].annotation) if isinstance(a, type))
    return set(cls.model_fields)


def _union_args(annotation: Any) -> tuple:
    return getattr(annotation, "__args__", None) or (annotation,)


def _registry(section: tuple[str, ...]):
    if section not in REGISTRIES:  # a programming error, not bad input: say which import is missing
        raise RuntimeError(
            f"no registry bound to recipe section {'.'.join(section)}: import the stage that defines it "
            "first (edgekit.train for train.* and distill)"
        )
    return REGISTRIES[section]


def _validate_choices(recipe: Recipe, source: str) -> None:
    """Validate each choice section's options with its registry entry's params class."""
    import edgekit.models  # noqa: F401  (the shared layer's registries bind on import: data, model)
    from edgekit.data.loader import AugmentParams

    augment = _check(AugmentParams, recipe.data.augment, ("data", "augment"), source)
    recipe.data.augment = augment.model_dump(mode="json")
    for section, selector in SELECTORS.items():
        node: BaseModel | None = recipe
        for part in section:
            node = getattr(node, part)
        if node is None:  # an optional section left out (distill)
            continue
        name = getattr(node, selector)
        entry = _registry(section).get(name, f"{source}: {'.'.join(section + (selector,))}")
        options = node.model_extra or {}
        # `auto` keys are checked without their value; training resolves them and saves the number.
        auto = [k for k in AUTO.get(section, ()) if options.get(k) == "auto"]
        params = _check(entry.params, {k: v for k, v in options.items() if k not in auto}, section, source)
        for key, value in params.model_dump(mode="json").items():
            setattr(node, key, "auto" if key in auto else value)  # keep the resolved defaults


def _check(cls: type[BaseModel], values: dict, at: tuple[str, ...], source: str) -> BaseModel:
    try:
        return cls.model_validate(values)
    except ValidationError as e:
        raise EdgekitError(describe(e, cls, at, source)) from None


def describe(error: ValidationError, cls: type[BaseModel], at: tuple[str, ...], source: str) -> str:
    """One line per bad field: file, dotted key, bad value, what is allowed."""
    lines = []
    for err in error.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join(list(at) + loc)
        if err["type"] == "extra_forbidden":
            allowed = _fields_at(cls, loc[:-1])
            hint = did_you_mean(loc[-1], allowed)
            lines.append(f"{source}: {key}: unknown key{hint}; allowed: {', '.join(sorted(allowed))}")
        else:
            value = err.get("input")
            shown = f" = {value!r}" if not isinstance(value, dict) else ""
            lines.append(f"{source}: {key}{shown}: {err['msg']}")
    return "\n".join(lines)


def _fields_at(cls: type[BaseModel], loc: list[str]) -> list[str]:
    """The keys allowed at `loc` inside `cls`, for did-you-mean suggestions."""
    for part in loc:
        field = cls.model_fields.get(part)
        inner = getattr(field, "annotation", None)
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return []
        cls = inner
    return list(cls.model_fields)
