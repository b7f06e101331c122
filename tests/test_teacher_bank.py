"""The teacher bank: logits precomputed per augmented view are exactly what the teacher says on each batch."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from edgekit.cli import app
from edgekit.data.loader import AugmentParams, DeviceLoader
from edgekit.train.teacher_bank import TeacherBank, identity, worthwhile

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def _loader(augment: dict) -> DeviceLoader:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (100, 1, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (100,), generator=g)
    return DeviceLoader(
        images, labels, 16, [0.3], [0.3], augment=AugmentParams(**augment), shuffle=True, generator=g
    )


@pytest.mark.parametrize(
    ("augment", "views"),
    [({"crop_padding": 2, "hflip": True}, 50), ({"crop_padding": 1}, 9), ({"hflip": True}, 2), ({}, 1)],
)
def test_bank_gives_the_teachers_logits_for_every_batch_drawn(augment, views):
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 10))
    loader = _loader(augment)
    bank = TeacherBank(teacher, loader)
    assert loader.view_count() == views and bank.logits.shape == (100, views, 10)
    with torch.no_grad():
        for _ in range(3):  # epochs: different shuffles, shifts and flips
            for x, _ in loader:
                assert torch.allclose(bank.current(), teacher(x), atol=1e-5)


@pytest.mark.parametrize("augment", [{"rotate": 5}, {"scale": [0.9, 1.1]}, {"erasing": 0.2}, {"mixup": 0.2}])
def test_continuous_augmentation_has_no_bank(augment):
    loader = _loader({"crop_padding": 1, **augment})
    assert loader.view_count() is None
    assert not worthwhile(loader, epochs=1000)


def test_bank_only_when_it_asks_the_teacher_less_than_the_run_would():
    loader = _loader({"crop_padding": 1})  # 9 views
    assert worthwhile(loader, epochs=10)
    assert not worthwhile(loader, epochs=9)
    assert not worthwhile(loader, epochs=10, world=2)  # each rank sees half the images


def _metrics(run: Path) -> list[dict]:
    return list(csv.DictReader((run / "metrics.csv").open()))


def test_banked_run_matches_the_live_teacher_and_the_next_student_reuses_the_bank(tmp_path):
    teacher = ["train.epochs=3", "name=teacher", "track.wandb=disabled", "--runs-dir", str(tmp_path)]
    result = runner.invoke(app, ["train", str(ROOT / "recipes" / "lenet_small.yaml"), *teacher])
    assert result.exit_code == 0, result.output
    runs = {}
    for name, mode, seed in (("auto", "auto", 0), ("never", "never", 0), ("again", "auto", 1)):
        args = [
            f"distill.teacher={tmp_path / 'teacher'}",
            f"distill.precompute={mode}",
            "data.augment={crop_padding: 1}",
            "train.epochs=10",
            f"seed={seed}",
            f"name={name}",
            "track.wandb=disabled",
        ]
        recipe = str(ROOT / "recipes" / "lenet_2k_kd.yaml")
        result = runner.invoke(app, ["train", recipe, *args, "--runs-dir", str(tmp_path)])
        assert result.exit_code == 0, result.output
        runs[name] = json.loads((tmp_path / name / "summary.json").read_text())["distill"].get("precomputed")
    assert runs["auto"]["views"] == 9 and not runs["auto"]["reused"]
    assert runs["never"] is None
    assert runs["again"]["reused"]  # another student of the same teacher on the same images
    # Same batches, same teacher logits: the first epoch agrees to float rounding (later ones may drift).
    first = [_metrics(tmp_path / name)[0] for name in ("auto", "never")]
    assert float(first[0]["train_loss"]) == pytest.approx(float(first[1]["train_loss"]), rel=1e-5)
    assert first[0]["val_acc"] == first[1]["val_acc"]


def test_a_retrained_teacher_or_another_split_gets_a_new_bank(tmp_path):
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    loader = _loader({"hflip": True})
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"weights, first training")
    first = TeacherBank(teacher, loader, identity([checkpoint], "split-a"))
    assert not first.reused and TeacherBank(teacher, loader, identity([checkpoint], "split-a")).reused
    assert not TeacherBank(teacher, loader, identity([checkpoint], "split-b")).reused
    checkpoint.write_bytes(b"weights, second training")
    torch.nn.init.zeros_(teacher[1].weight)
    second = TeacherBank(teacher, loader, identity([checkpoint], "split-a"))
    assert not second.reused and not torch.equal(first.logits, second.logits)
