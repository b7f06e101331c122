"""Shared fixtures: every test gets its own cache folder and wandb stays off the network."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` run only where torch sees a GPU (`pytest -m cuda` on one: bench/gpu_check.sh)."""
    marked = [item for item in items if item.get_closest_marker("cuda")]
    if not marked:
        return
    try:
        import torch

        reason = None if torch.cuda.is_available() else "no CUDA device here"
    except ImportError:
        reason = "torch is not installed"
    for item in marked if reason else ():
        item.add_marker(pytest.mark.skip(reason=reason))


def train_tiny(root, name: str, model: dict, epochs: int = 1, batch_size: int = 64):
    """Train `model` (arch + options) on digits into root/runs/<name>/, quietly, without wandb; the run."""
    import io

    import yaml
    from rich.console import Console

    from edgekit.train import run

    recipe = {
        "model": model,
        "train": {"epochs": epochs, "batch_size": batch_size},
        "track": {"wandb": "disabled"},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return run.start(path, [], root / "runs", Console(file=io.StringIO()))


# A MobileNet small enough to train in a second on digits: the family's structure, few channels.
TINY_MOBILENET = {
    "arch": "mobilenet_tiny",
    "channels": [8, 16],
    "expansion": [1, 2],
    "repeats": [1, 2],
    "strides": [1, 2],
    "stem_channels": 8,
    "last_channels": 32,
}


def train_tiny_runs(tmp_path_factory, folder: str, specs: dict) -> dict:
    """`specs`: name → (model, epochs). Trained once per test module, in its own folder and data cache."""
    import pytest

    root = tmp_path_factory.mktemp(folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEKIT_CACHE", str(root / "cache"))
        return {name: train_tiny(root, name, model, epochs) for name, (model, epochs) in specs.items()}
