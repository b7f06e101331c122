"""`edgekit predict`: image files through the bundle's preprocessing, parity with training, bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from rich.console import Console
from test_bench import _without_train_extra
from typer.testing import CliRunner

from edgekit.cli import app
from edgekit.data import prepare_for
from edgekit.data.loader import DeviceLoader
from edgekit.export.write import export_run
from edgekit.models import from_checkpoint
from edgekit.predict import Predictor
from edgekit.recipe import load
from edgekit.runs import load_checkpoint
from edgekit.train import run

runner = CliRunner()
COLOURS = {"cat": (200, 60, 60), "dog": (60, 200, 60), "fish": (60, 60, 200)}


def photos(root: Path, per_class: dict[str, int]) -> None:
    """RGB photos of mixed sizes, one tint per class, some grayscale: what a user's folder holds."""
    rng = np.random.default_rng(0)
    for part, n in per_class.items():
        for name, colour in COLOURS.items():
            (root / part / name).mkdir(parents=True)
            for i in range(n):
                size = (20 + 3 * (i % 4), 24 + 2 * (i % 3))
                pixels = (rng.random((*size, 3)) * 90 + np.array(colour)).clip(0, 255).astype(np.uint8)
                image = Image.fromarray(pixels)
                (image.convert("L") if i % 4 == 3 else image).save(root / part / name / f"{i}.png")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A 3-channel 16×16 model trained two epochs on a photo folder, and its bundle."""
    root = tmp_path_factory.mktemp("predict")
    photos(root / "photos", {"train": 12, "test": 4})
    recipe = {
        "data": {
            "dataset": "imagefolder",
            "root": str(root / "photos"),
            "image_size": 16,
            "val_fraction": 0.25,
        },
        "model": {"arch": "lenet", "channels": [8, 16], "pool": "avg"},
        "train": {"epochs": 2, "batch_size": 8},
        "track": {"wandb": "disabled"},
    }
    (root / "photos.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEKIT_CACHE", str(root / "cache"))
        run_dir = run.start(root / "photos.yaml", [], root / "runs", Console(file=io.StringIO()))
        bundle = export_run(run_dir, root / "export")
    return {"root": root, "run": run_dir, "bundle": bundle, "recipe": root / "photos.yaml"}


def test_predict_matches_the_trained_model_on_the_same_files(trained, monkeypatch):
    """The files through `predict` (PIL decode and resize, the bundle's mean/std, onnxruntime) give the
    logits the torch model gives on the test split as training decoded it."""
    monkeypatch.setenv("EDGEKIT_CACHE", str(trained["root"] / "cache"))
    data = prepare_for(load(trained["recipe"]))
    ckpt = load_checkpoint(trained["run"] / "best.pt")
    model = from_checkpoint(ckpt, "best.pt")
    loader = DeviceLoader(*data.test, batch_size=1000, mean=ckpt["mean"], std=ckpt["std"])
    with torch.no_grad():
        expected = torch.cat([model(x) for x, _ in loader]).numpy()
    files = sorted((trained["root"] / "photos" / "test").rglob("*.png"))
    predictor = Predictor(trained["bundle"])
    got = predictor.logits(predictor.pixels(files))
    assert np.abs(got - expected).max() <= 1e-4
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_a_folder_of_class_folders_gets_accuracy_recall_and_a_file(trained, tmp_path):
    test = trained["root"] / "photos" / "test"
    out = tmp_path / "p.json"
    result = runner.invoke(
        app, ["predict", str(trained["bundle"]), str(test), "--top", "2", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "on 12 labelled images; recall: cat" in said and "images converted to RGB" in said
    written = json.loads(out.read_text())
    assert len(written["predictions"]) == 12 and len(written["predictions"][0]["top"]) == 2
    assert sum(t["probability"] for t in written["predictions"][0]["top"]) <= 1 + 1e-6
    assert written["scores"]["images"] == 12 and set(written["scores"]["recall"]) == set(COLOURS)
    csv_out = tmp_path / "p.csv"
    one = runner.invoke(
        app, ["predict", str(trained["bundle"]), str(test / "cat" / "0.png"), "--out", str(csv_out)]
    )
    assert one.exit_code == 0 and csv_out.read_text().startswith("file,class1,probability1")


def test_predict_runs_where_torch_cannot_be_imported(trained, tmp_path):
    args = [
        "predict",
        str(trained["bundle"]),
        str(trained["root"] / "photos" / "test" / "dog"),
        "--out",
        "p.csv",
    ]
    done = _without_train_extra(args, tmp_path)
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 1 + 4


def test_bad_input_is_one_line_and_exit_2(trained, tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "empty").mkdir()
    np.save(tmp_path / "floats.npy", np.zeros((2, 3, 8, 8), np.float32))
    bundle = str(trained["bundle"])
    cases = [
        ([str(tmp_path / "notes.png")], "notes.png: cannot read image"),
        ([str(tmp_path / "empty")], "empty: no images in it"),
        ([str(tmp_path / "nope.jpg")], "nope.jpg: no such file or folder"),
        ([str(tmp_path / "floats.npy")], "floats.npy: float32 (2, 3, 8, 8); expected uint8 images"),
        ([str(tmp_path / "empty"), "--variant", "int4"], "no variant 'int4'"),
        ([str(tmp_path / "empty"), "--out", str(tmp_path / "p.txt")], "expected a .csv or .json file"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["predict", bundle, *args])
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output
