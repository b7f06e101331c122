"""A sweep's results: trial rows read from run folders, the ranked table, sweep.csv and pareto.png."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from edgekit.orchestrate import sweep_insight
from edgekit.orchestrate.sweep import PRUNED_FILE, Metric, Sweep
from edgekit.runs import Run, atomic_write_bytes, stop_kind, write_text

SUMMARY_KEYS = (
    "val_acc",
    "test_acc",
    "test_loss",
    "best_val",
    "params",
    "macs",
    "epochs",
    "stopped",
    "wall_s",
)


def _get(recipe: dict[str, Any], dotted: str) -> Any:
    node: Any = recipe
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def status(summary: dict[str, Any] | None) -> str:
    """finished, early stop, diverged or interrupted (no summary: killed before it could write one)."""
    return stop_kind(summary) if summary is not None else "interrupted"


def rows(sweep_dir: Path, keys: list[str], metric: Metric) -> list[dict[str, Any]]:
    """One row per run folder in the sweep, best first by `metric` (trials without it last)."""
    found = []
    for run in [Run(p) for p in sorted(sweep_dir.iterdir()) if Run(p).recipe_file.is_file()]:
        folder, recipe, summary = run.folder, run.raw_recipe(), run.summary()
        row = {"trial": folder.name, **{k: _get(recipe, k) for k in keys}}
        row |= {k: (summary or {}).get(k) for k in SUMMARY_KEYS}
        stopped = "pruned" if (folder / PRUNED_FILE).is_file() else status(summary)
        row |= {"status": stopped, "run_dir": str(folder)}
        found.append(row)
    sign = -1 if metric.goal == "maximize" else 1
    found.sort(key=lambda r: (r[metric.name] is None, sign * (r[metric.name] or 0), r["trial"]))
    return [{"rank": i + 1, **r} for i, r in enumerate(found)]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "–" if value is None else str(value)


def table(rows_: list[dict[str, Any]], keys: list[str], metric: Metric, title: str) -> Table:
    on_test = " — on the TEST split (--rank-on-test): its figures are no longer unseen" * (
        metric.name.startswith("test")
    )
    table = Table(title=f"{title}: ranked by {metric.name} ({metric.goal}){on_test}", title_justify="left")
    shown = [metric.name] + [m for m in ("test_acc",) if m != metric.name]
    for name in ["#", "trial", *[k.rsplit(".", 1)[-1] for k in keys], *shown, "params", "MACs", "epochs"]:
        table.add_column(name, justify="left" if name == "trial" else "right", overflow="fold")
    table.add_column("status", overflow="fold")
    for r in rows_:
        accs = [f"{r[m]:.2%}" if "acc" in m and r[m] is not None else _cell(r[m]) for m in shown]
        sizes = [f"{r[k]:,}" if r[k] is not None else "–" for k in ("params", "macs")]
        table.add_row(
            str(r["rank"]),
            r["trial"],
            *[_cell(r[k]) for k in keys],
            *accs,
            *sizes,
            _cell(r["epochs"]),
            r["status"],
        )
    return table


def to_csv(rows_: list[dict[str, Any]], keys: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, ["rank", "trial", *keys, *SUMMARY_KEYS, "status", "run_dir"])
    writer.writeheader()
    writer.writerows({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()} for r in rows_)
    return buf.getvalue()


def pareto_front(rows_: list[dict[str, Any]], metric: Metric) -> list[dict[str, Any]]:
    """Trials that no other trial beats on both fewer parameters and a better metric, by parameters."""
    better = (lambda a, b: a > b) if metric.goal == "maximize" else (lambda a, b: a < b)
    front, best = [], None
    done = [r for r in rows_ if r[metric.name] is not None and r["params"] is not None]
    sign = -1 if metric.goal == "maximize" else 1
    for r in sorted(done, key=lambda r: (r["params"], sign * r[metric.name])):
        if best is None or better(r[metric.name], best):
            front.append(r)
            best = r[metric.name]
    return front


def plot(rows_: list[dict[str, Any]], metric: Metric, title: str) -> bytes:
    """pareto.png: the metric against parameters for every trial, the Pareto front joined and ringed."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state to disturb

    done = [r for r in rows_ if r[metric.name] is not None and r["params"] is not None]
    front = pareto_front(rows_, metric)
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax = fig.subplots()
    ax.scatter([r["params"] for r in done], [r[metric.name] for r in done], alpha=0.6, label="trial")
    ax.plot([r["params"] for r in front], [r[metric.name] for r in front], "o--", mfc="none", ms=11, c="C3")
    ax.lines[-1].set_label("Pareto front")
    labels: dict[tuple, list[str]] = {}  # trials that tie share one label instead of overprinting
    for r in done:
        labels.setdefault((r["params"], r[metric.name]), []).append(str(r["rank"]))
    for xy, ranks in labels.items():
        ax.annotate(",".join(ranks), xy, xytext=(5, 3), textcoords="offset points", fontsize=8)
    if done and max(r["params"] for r in done) > 10 * min(r["params"] for r in done):
        ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel(metric.name)
    ax.set_title(f"{title}: {metric.name} against parameters (labels: rank)", fontsize=9)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def write(sweep_dir: Path, sweep: Sweep, console) -> list[dict[str, Any]]:
    """Rank the sweep's trials; write sweep.csv and pareto.png (rewritten: they only summarise the runs)."""
    metric = sweep.file.metric
    found = rows(sweep_dir, list(sweep.file.parameters), metric)
    write_text(sweep_dir / "sweep.csv", to_csv(found, list(sweep.file.parameters)))
    png = plot(found, metric, sweep_dir.name)
    atomic_write_bytes(sweep_dir / "pareto.png", lambda f: f.write(png))
    console.print(table(found, sweep.varying, metric, f"sweep {sweep.name}"))
    written = [sweep_dir / "sweep.csv", sweep_dir / "pareto.png"]
    by_parameter = sweep_insight.by_parameter_png(found, sweep)
    if by_parameter is not None:
        atomic_write_bytes(sweep_dir / "params.png", lambda f: f.write(by_parameter))
        written.append(sweep_dir / "params.png")
    weights = sweep_insight.importance(found, sweep)
    if weights:
        write_text(sweep_dir / "importance.json", json.dumps(weights, indent=2) + "\n")
        written.append(sweep_dir / "importance.json")
        shares = ", ".join(f"{k} {v:.0%}" for k, v in weights.items())
        console.print(f"parameter importance (Optuna fANOVA, {metric.name}): {shares}", highlight=False)
    console.print(f"wrote {', '.join(str(p) for p in written)}")
    return found
