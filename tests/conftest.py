"""Shared fixtures: every test gets its own cache folder and wandb stays off the network."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


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
