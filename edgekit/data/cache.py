"""Content-keyed tensor cache: decode a dataset once, load its uint8 tensors from disk afterwards."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def cache_root() -> Path:
    """$EDGEKIT_CACHE, else ~/.cache/edgekit."""
    env = os.environ.get("EDGEKIT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edgekit"


def cache_path(key: dict, cache_dir: Path | None = None) -> Path:
    """The file that holds the entry for `key` (sha256 of the key as sorted JSON)."""
    text = json.dumps(key, sort_keys=True, default=str)
    return Path(cache_dir or cache_root()) / f"{hashlib.sha256(text.encode()).hexdigest()[:32]}.pt"


def cached(key: dict, build: Callable[[], dict[str, Any]], cache_dir: Path | None = None) -> dict[str, Any]:
    """`build()`'s result for `key`, built once and then loaded from disk.

    `build` must return tensors and plain data only (what `torch.load(weights_only=True)` accepts).
    A missing, corrupt or mismatched file is rebuilt; a cache folder that cannot be written only
    costs the rebuild next time.
    """
    path = cache_path(key, cache_dir)
    stored_key = json.loads(json.dumps(key, sort_keys=True, default=str))
    if path.is_file():
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            if entry["key"] == stored_key:  # guards against a (truncated-)hash collision
                return entry["data"]
        except Exception as e:  # any unreadable cache file is recoverable: rebuild it
            warnings.warn(f"{path}: unreadable cache file, rebuilding ({type(e).__name__})", stacklevel=2)
    data = build()
    _save(path, {"key": stored_key, "data": data})
    return data


def _save(path: Path, entry: dict[str, Any]) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    except OSError as e:
        warnings.warn(f"{path.parent}: cannot write the data cache ({e.strerror or e})", stacklevel=3)
        return
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(entry, f)
        os.replace(tmp, path)
    except OSError as e:  # e.g. a full disk: the data is built, only the cache is lost
        Path(tmp).unlink(missing_ok=True)
        warnings.warn(f"{path}: cannot write the data cache ({e.strerror or e})", stacklevel=3)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
