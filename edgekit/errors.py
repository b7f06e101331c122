"""`EdgekitError` and the one table that turns exceptions into a one-line message and exit code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgekitError(Exception):
    """A user-facing error: one line naming the thing, the bad value and what is allowed."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown(kind: str, value: str, choices: Iterable[str], where: str = "") -> EdgekitError:
    """The standard error for a name that is not one of `choices`."""
    choices = sorted(choices)
    place = f"{where}: " if where else ""
    return EdgekitError(
        f"{place}unknown {kind} '{value}'{did_you_mean(value, choices)}; allowed: {', '.join(choices)}"
    )


def _os_error(e: OSError) -> str:
    return f"{e.filename or ''}: {e.strerror or e}".lstrip(": ")


# What the `train` extra installs: a device install (`pip install edgekit`) has none of these, and the
# commands that need them say so in one line instead of a traceback.
TRAIN_EXTRA = {
    "torch",
    "torchvision",
    "torch_pruning",
    "wandb",
    "sklearn",
    "matplotlib",
    "onnxslim",
    "optuna",
}


def _missing_module(e: ModuleNotFoundError) -> str | None:
    top = (e.name or "").split(".")[0]
    if top not in TRAIN_EXTRA:
        return None  # a module edgekit's base install should have: a bug, keep the traceback
    return f"this command needs the `train` extra ({top} is not installed): pip install 'edgekit[train]'"


# Exceptions a user can cause with bad input, and how to say them in one line. Anything else is a bug
# and keeps its traceback.
MESSAGES: dict[type[BaseException], callable] = {
    EdgekitError: str,
    FileNotFoundError: lambda e: f"{e.filename}: no such file or folder",
    IsADirectoryError: lambda e: f"{e.filename}: is a folder, expected a file",
    PermissionError: _os_error,
    ModuleNotFoundError: _missing_module,
}

EXIT_BAD_INPUT = 2


def message_for(exc: BaseException) -> str | None:
    """The one-line message for a user error, or None when `exc` is a bug."""
    for kind in type(exc).__mro__:
        if kind in MESSAGES:
            return MESSAGES[kind](exc)
    return None
