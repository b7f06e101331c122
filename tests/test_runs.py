"""Run folders are never overwritten; checkpoints are atomic and checked on load."""

from __future__ import annotations

import os

import pytest
import torch

from edgekit.errors import EdgekitError
from edgekit.runs import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    new_run_dir,
    newest_run,
    run_dir_of,
    save_checkpoint,
)


def test_new_run_dir_never_reuses_a_folder(tmp_path):
    first = new_run_dir(tmp_path, "lenet")
    (first / "keep.txt").write_text("mine")
    second, third = new_run_dir(tmp_path, "lenet"), new_run_dir(tmp_path, "lenet")
    assert [p.name for p in (first, second, third)] == ["lenet", "lenet-2", "lenet-3"]
    assert (first / "keep.txt").read_text() == "mine"


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "arch": "lenet", "epoch": 3})
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["epoch"] == 3
    assert torch.equal(ckpt["model"]["w"], torch.ones(2))
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away


def test_checkpoint_errors(tmp_path):
    with pytest.raises(EdgekitError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EdgekitError, match="junk.pt: not a readable edgekit checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    save_checkpoint(tmp_path / "good.pt", {"model": {"w": torch.randn(100, 100)}, "epoch": 1})
    whole = (tmp_path / "good.pt").read_bytes()
    for name, data in (("half.pt", whole[: len(whole) // 2]), ("tail.pt", whole[:-30])):  # killed copies
        (tmp_path / name).write_bytes(data)
        with pytest.raises(EdgekitError, match=f"{name}: not a readable edgekit checkpoint"):
            load_checkpoint(tmp_path / name)
    torch.save({"format": "other/9"}, tmp_path / "old.pt")
    with pytest.raises(EdgekitError, match="format 'other/9', expected 'edgekit-checkpoint/1'"):
        load_checkpoint(tmp_path / "old.pt")


def test_run_dir_of_and_newest_run(tmp_path):
    with pytest.raises(EdgekitError, match="no such run folder"):
        run_dir_of(tmp_path / "nope")
    with pytest.raises(EdgekitError, match="not an edgekit run"):
        run_dir_of(tmp_path)
    with pytest.raises(EdgekitError, match="no runs found"):
        newest_run(tmp_path)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "recipe.yaml").write_text("{}")
        save_checkpoint(tmp_path / name / "last.pt", {})
    os.utime(tmp_path / "a" / "last.pt", (1, 1))  # make "b" unambiguously the newest
    assert run_dir_of(tmp_path / "a" / "last.pt") == tmp_path / "a"
    assert newest_run(tmp_path) == tmp_path / "b"
