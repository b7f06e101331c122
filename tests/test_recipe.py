"""Recipe loading: extends, overrides, and one clear line per bad key, type or value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

import edgekit.train  # noqa: F401  (binds the registries recipes choose from)
from edgekit.errors import EdgekitError
from edgekit.listing import recipe_files
from edgekit.models import build_model, count_params
from edgekit.recipe import load

ROOT_RECIPES = Path(__file__).parent.parent / "recipes"
RUNG = r"r(\d+)k"  # a small-data ladder rung's file stem: its parameter bound in thousands
# Every training recipe, the small-data ladder in recipes/fashion/ included: what `edgekit models` lists
# (sweeps, pipelines and the `_*.yaml` fragments that recipes extend aside).
RECIPES = recipe_files(ROOT_RECIPES)


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT_RECIPES)))
def test_every_shipped_recipe_loads(path):
    recipe = load(path)
    assert recipe.name == path.stem
    if path.parent.name == "fashion":  # the small-data benchmark: 180 images per class, mirror flips
        assert recipe.data.dataset == "fashion_mnist" and recipe.data.train_per_class == 180
        assert recipe.data.augment["hflip"]
        rung = re.fullmatch(rf"{RUNG}(_kd)?", path.stem)  # a rung or its distilled twin
        if rung:  # a ladder rung keeps under its bound at Fashion's 28×28, whatever its family
            model = build_model(recipe.model.arch, recipe.options("model"), 1, 10, 28)
            assert count_params(model) <= int(rung[1]) * 1000
    else:
        assert recipe.data.dataset == "digits"


def test_defaults_are_resolved_into_the_recipe(tmp_path):
    recipe = load(write(tmp_path / "r.yaml", {"model": {"arch": "lenet"}}))
    assert recipe.name == "r"
    assert recipe.train.optimizer.name == "sgd"
    assert "lr" in recipe.options("train", "optimizer")  # the optimizer's own defaults are filled in
    assert "conv" in recipe.options("model")
    assert recipe.data.augment["hflip"] is False


def test_extends_merges_and_child_wins(tmp_path):
    write(
        tmp_path / "base.yaml",
        {"seed": 3, "train": {"epochs": 7, "batch_size": 32}, "model": {"arch": "lenet"}},
    )
    child = write(tmp_path / "child.yaml", {"extends": "base.yaml", "train": {"epochs": 9}})
    recipe = load(child)
    assert (recipe.seed, recipe.train.epochs, recipe.train.batch_size, recipe.name) == (3, 9, 32, "child")


def test_extends_with_another_arch_drops_the_parents_model_options(tmp_path):
    write(tmp_path / "base.yaml", {"model": {"arch": "lenet", "channels": [4, 8]}})
    child = write(tmp_path / "child.yaml", {"extends": "base.yaml", "model": {"arch": "mobilenet_tiny"}})
    assert load(child).model.arch == "mobilenet_tiny"


def test_extends_a_list_merges_the_parents_in_order_then_the_file(tmp_path):
    write(tmp_path / "rung.yaml", {"model": {"arch": "lenet", "channels": [4, 8]}, "train": {"epochs": 7}})
    write(tmp_path / "_kd.yaml", {"train": {"epochs": 9, "batch_size": 16}, "distill": {"teacher": "runs/t"}})
    child = write(tmp_path / "child.yaml", {"extends": ["rung.yaml", "_kd.yaml"], "train": {"batch_size": 8}})
    recipe = load(child)
    assert recipe.options("model")["channels"] == [4, 8] and recipe.distill.teacher == "runs/t"
    assert (recipe.train.epochs, recipe.train.batch_size, recipe.name) == (9, 8, "child")


@pytest.mark.parametrize("extends", [[], [3], {"a": 1}])
def test_extends_that_is_not_files_is_an_error(tmp_path, extends):
    path = write(tmp_path / "r.yaml", {"extends": extends})
    with pytest.raises(EdgekitError, match="extends.*expected a recipe file or a list of them"):
        load(path)


def test_fashion_kd_recipes_share_one_teacher_block():
    rungs = sorted(p.stem for p in (ROOT_RECIPES / "fashion").glob("*.yaml") if re.fullmatch(RUNG, p.stem))
    assert rungs == sorted(f"r{k}k" for k in (1, 2, 5, 10, 20))  # RUNG found the whole ladder
    kd = [load(ROOT_RECIPES / "fashion" / f"{r}_kd.yaml") for r in rungs]  # every rung has one
    assert all(r.distill == kd[0].distill and len(r.distill.teachers()) == 7 for r in kd)
    # each keeps its own rung's model
    assert [r.model for r in kd] == [load(ROOT_RECIPES / "fashion" / f"{r}.yaml").model for r in rungs]


def test_extends_loop_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", {"extends": "b.yaml"})
    write(tmp_path / "b.yaml", {"extends": "a.yaml"})
    with pytest.raises(EdgekitError, match="loops back"):
        load(tmp_path / "a.yaml")


def test_dotted_overrides_are_yaml_scalars(tmp_path):
    path = write(tmp_path / "r.yaml", {"model": {"arch": "lenet"}})
    recipe = load(path, ["train.epochs=2000", "model.dropout=0.1", "train.ema=null", "train.amp=false"])
    assert recipe.train.epochs == 2000
    assert recipe.options("model")["dropout"] == 0.1
    assert recipe.train.amp is False


def test_override_switching_arch_drops_old_options(tmp_path):
    path = write(tmp_path / "r.yaml", {"model": {"arch": "lenet", "channels": [4, 8]}})
    assert load(path, ["model.arch=mobilenet_tiny"]).model.arch == "mobilenet_tiny"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train.epohcs=5"], r"r\.yaml: train\.epohcs: unknown key \(did you mean 'epochs'\?\)"),
        (["model.dropuot=0.1"], r"r\.yaml: model\.dropuot: unknown key \(did you mean 'dropout'\?\)"),
        (["train.epochs=abc"], r"r\.yaml: train\.epochs = 'abc': Input should be a valid integer"),
        (["train.epochs=0"], r"r\.yaml: train\.epochs = 0: Input should be greater than or equal to 1"),
        (["model.dropout=1.5"], r"r\.yaml: model\.dropout = 1\.5: Input should be less than 1"),
        (["train.val_every=0"], r"train\.val_every = 0: Input should be greater than or equal to 1"),
        (
            ["model.arch=lenett"],
            r"r\.yaml: model\.arch: unknown architecture 'lenett' \(did you mean 'lenet'\?\)",
        ),
        (["data.dataset=digit"], r"unknown dataset 'digit' \(did you mean 'digits'\?\)"),
        (["train.optimizer.name=adam"], r"unknown optimizer 'adam' \(did you mean 'adamw'\?\)"),
        (["train.scheduler.name=cosin"], r"unknown scheduler 'cosin' \(did you mean 'cosine'\?\)"),
        (["data.augment.hflp=true"], r"data\.augment\.hflp: unknown key \(did you mean 'hflip'\?\)"),
        (
            ["train.optimizer.momentun=0.5"],
            r"train\.optimizer\.momentun: unknown key \(did you mean 'momentum'\?\)",
        ),
        (["epochs"], r"expected dotted\.key=value"),
    ],
)
def test_bad_recipe_values_name_file_key_value_and_what_is_allowed(tmp_path, overrides, expected):
    path = write(tmp_path / "r.yaml", {"model": {"arch": "lenet"}})
    with pytest.raises(EdgekitError, match=expected) as info:
        load(path, overrides)
    assert len(str(info.value).splitlines()) == 1


def test_unknown_top_level_section(tmp_path):
    with pytest.raises(EdgekitError, match=r"trian: unknown key \(did you mean 'train'\?\)"):
        load(write(tmp_path / "r.yaml", {"trian": {"epochs": 3}}))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(EdgekitError, match="no such recipe file"):
        load(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("train: [epochs: 3\n")
    with pytest.raises(EdgekitError, match="bad.yaml.*not valid YAML"):
        load(tmp_path / "bad.yaml")


def test_distill_section_is_validated_by_its_method(tmp_path):
    path = write(tmp_path / "r.yaml", {"distill": {"teacher": "runs/t", "method": "hinton", "alpha": 0.3}})
    recipe = load(path)
    assert recipe.distill.teachers() == ["runs/t"] and recipe.options("distill")["temperature"] == 4.0
    with pytest.raises(EdgekitError, match="distill.teacher: Field required"):
        load(write(tmp_path / "n.yaml", {"distill": {"method": "hinton"}}))
    with pytest.raises(EdgekitError, match=r"distill.tckd: unknown key.*allowed: alpha, temperature"):
        load(path, ["distill.tckd=2"])  # a DKD option under hinton
    # Switching the method drops the old method's options but keeps the teacher.
    switched = load(path, ["distill.method=dkd"])
    assert switched.distill.teachers() == ["runs/t"] and switched.options("distill")["alpha"] == 0.5
    assert load(path, ["distill=null"]).distill is None


def test_switching_dataset_keeps_the_data_sections_own_keys(tmp_path):
    path = write(
        tmp_path / "r.yaml", {"data": {"dataset": "digits", "augment": {"rotate": 5}, "val_fraction": 0.2}}
    )
    recipe = load(path, ["data.dataset=fashion_mnist"])
    assert recipe.data.augment["rotate"] == 5 and recipe.data.val_fraction == 0.2


def test_override_fills_in_a_null_section(tmp_path):
    path = write(tmp_path / "r.yaml", {"distill": None})
    assert load(path, ["distill.teacher=runs/t"]).distill.teachers() == ["runs/t"]
