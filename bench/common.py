"""What the bench scripts share: training a shipped recipe quietly, mean ± std, the Markdown they write."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent


def train(recipe: str, overrides: list[str], runs: Path) -> dict:
    """`edgekit train recipes/<recipe>.yaml overrides…` (same code path, no output, no wandb) → its
    summary.json, plus the run folder under "run"."""
    from edgekit.train import run

    path = ROOT / "recipes" / f"{recipe}.yaml"
    run_dir = run.start(path, ["track.wandb=disabled", *overrides], runs, Console(quiet=True))
    return {**json.loads((run_dir / "summary.json").read_text()), "run": str(run_dir)}


def cpu() -> str:
    """'AMD EPYC, 2 cores': the CPU every figure must name, as `edgekit bench` names it."""
    from edgekit.bench.machine import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} cores"


def mean_std(values: list[float]) -> str:
    """'97.78% ± 0.37%' over seeds (a single value alone)."""
    if len(values) == 1:
        return f"{values[0]:.2%}"
    return f"{statistics.mean(values):.2%} ± {statistics.stdev(values):.2%}"


def row(cells: list[str], console: Console) -> str:
    """One Markdown table row, printed as soon as it is measured."""
    line = "| " + " | ".join(cells) + " |"
    console.print(line, highlight=False)
    return line


def write_markdown(
    path: Path, title: str, command: str, details: str, columns: dict[str, str], rows: list[str], console
) -> None:
    """`# title`, the command that made it with the date, the CPU and `details`, then the table.

    `columns`: header → alignment ("l" or "r")."""
    align = {"l": "---", "r": "---:"}
    lines = [
        f"# {title}",
        "",
        f"`{command}` — {time.strftime('%Y-%m-%d')}, {cpu()}. {details}".rstrip(),
        "",
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join(align[a] for a in columns.values()) + " |",
        *rows,
        "",
    ]
    path.write_text("\n".join(lines))
    console.print(f"wrote {path}")
