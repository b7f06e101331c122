"""Where a bundle fails, class by class: per-class accuracy, the confusion matrix and its picture."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.runs import atomic_write_bytes


def per_class(predicted: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """`confusion` (rows: true class, columns: predicted; counts) and `per_class_accuracy` (recall)."""
    k = len(class_names)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    totals = confusion.sum(1)
    recall = {
        name: (float(confusion[c, c] / totals[c]) if totals[c] else None)
        for c, name in enumerate(class_names)
    }
    return {"confusion": confusion.tolist(), "per_class_accuracy": recall}


def confusion_png(row: dict[str, Any], class_names: list[str]) -> bytes | None:
    """The row's confusion matrix as a PNG (counts in the cells); None when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    matrix = np.array(row["confusion"])
    k = len(class_names)
    fig = Figure(figsize=(1.2 + 0.45 * k, 1.0 + 0.45 * k), layout="constrained")
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            dark = count > matrix.max() / 2
            ax.text(
                j, i, str(count), ha="center", va="center", fontsize=7, color="white" if dark else "black"
            )
    ax.set_xticks(range(k), class_names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(k), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{row['bundle']} {row['variant']} ({row['runtime']}): {row['accuracy']:.1%}", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()


def confusions(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """confusion_<bundle>.png: each bundle's first measured row (its fp32 variant on the first runtime)."""
    files, seen = {}, set()
    for row in results["rows"]:
        if row["bundle"] in seen or "confusion" not in row:
            continue
        seen.add(row["bundle"])
        png = confusion_png(row, results["class_names"][row["bundle"]])
        if png is not None:
            path = out_dir / f"confusion_{row['bundle']}.png"
            atomic_write_bytes(path, lambda f, data=png: f.write(data))
            files[f"confusion {row['bundle']}"] = path
    return files
