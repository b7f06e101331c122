"""Bench results as a rich table, results.json/.csv/.md, pareto.png; `compare` sets machines side by side."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from edgekit.bench.classes import confusions
from edgekit.errors import EdgekitError
from edgekit.runs import atomic_write_bytes, read_json, write_text

# ------------------------------------------------------------------------------------------------ rows

COLUMNS = [
    "bundle", "variant", "runtime", "device", "accuracy", "accuracy_lo", "accuracy_hi", "agreement",
    "latency_batch", "latency_ms", "p50_ms", "p90_ms", "p99_ms",
]  # fmt: skip
TAIL = [
    "bytes",
    "bytes_per_param",
    "params",
    "macs",
    "threads",
    "mem_added_mb",
    "process_peak_rss_mb",
    "file",
]


def _flat(row: dict[str, Any], batches: list[int]) -> dict[str, Any]:
    flat = {k: row.get(k) for k in COLUMNS + TAIL}
    flat["accuracy_lo"], flat["accuracy_hi"] = row.get("accuracy_ci95") or (None, None)
    for b in batches[1:]:
        flat[f"images_per_s_b{b}"] = (row.get("throughput") or {}).get(str(b))
    flat["notes"] = "; ".join(row.get("notes") or [])
    return flat


def flat_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    batches = results["machine"]["timing"]["batches"]
    return [_flat(r, batches) for r in results["rows"] + results["floor"]]


def _num(v: Any, fmt: str = "{:.3f}") -> str:
    return "" if v is None else fmt.format(v)


def _size(n: int | None) -> str:
    if n is None:
        return ""
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def _cells(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and text cells shared by the terminal table and the Markdown table."""
    batches = results["machine"]["timing"]["batches"]
    first = batches[0]
    head = ["bundle", "variant", "runtime", "top-1 [95% CI]", "agree", f"ms b{first}", "p50/p90/p99"]
    head += [f"img/s b{b}" for b in batches[1:]] + ["size", "B/param", "params", "MACs", "threads", "mem +MB"]
    body = []
    for r in results["rows"] + results["floor"]:
        acc = r.get("accuracy")
        ci = r.get("accuracy_ci95")
        body.append(
            [r["bundle"], r["variant"], r["runtime"]]
            + ([f"{acc:.1%} [{ci[0]:.1%}, {ci[1]:.1%}]"] if acc is not None else [""])
            + [_num(r.get("agreement"), "{:.1%}"), _num(r["latency_ms"], "{:.4g}")]
            + ["/".join(f"{r[k]:.4g}" for k in ("p50_ms", "p90_ms", "p99_ms"))]
            + [_num((r.get("throughput") or {}).get(str(b)), "{:,.0f}") for b in batches[1:]]
            + [_size(r.get("bytes")), _num(r.get("bytes_per_param"), "{:.2f}")]
            + [_num(r.get("params"), "{:,}"), _num(r.get("macs"), "{:,}"), str(r.get("threads", ""))]
            + [_num(r.get("mem_added_mb"), "{:.1f}")]
        )
    return head, body


TERMINAL = ("bundle", "variant", "runtime", "top-1 [95% CI]", "size")  # + the first latency column


def table(results: dict[str, Any], title: str = "edgekit bench") -> Table:
    """The columns that fit 80 characters (the rest are in results.md/.csv), never truncated."""
    head, body = _cells(results)
    keep = [i for i, h in enumerate(head) if h in TERMINAL or h.startswith("ms b")]
    t = Table(title=f"{title} (all columns: results.md)", title_justify="left")
    for i in keep:
        t.add_column(head[i], justify="left" if i < 3 else "right", overflow="fold")
    for cells in body:
        t.add_row(*(cells[i] for i in keep))
    return t


def to_csv(results: dict[str, Any]) -> str:
    rows = flat_rows(results)
    out = io.StringIO()
    fields = list(rows[0]) if rows else COLUMNS + TAIL
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def to_markdown(results: dict[str, Any]) -> str:
    head, body = _cells(results)
    m = results["machine"]
    lines = [
        "# edgekit bench",
        "",
        f"{m['cpu']}, {m['cores_usable']} usable cores; onnxruntime {m['onnxruntime']} "
        f"({', '.join(m['providers'])}); Python {m['python']}. Threads: {m['threads']}.",
        f"Timing: one warm-up window, then {m['timing']['windows']} windows of at least "
        f"{m['timing']['min_window_s']} s; ms is the median window's time per call, p50/p90/p99 over every "
        "call. 'agree' is top-1 agreement with the fp32 model on onnxruntime CPU; 'ort floor' is a "
        "one-node Identity graph (the per-call cost of onnxruntime itself), timed after each bundle of its "
        "input shape: the row is the median of those measurements; 'mem +MB' is resident memory "
        "added from loading to the end of timing (with any library the runtime loads on first use); "
        "results.json also has the process's peak RSS so far, which only grows from row to row.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(" --- " for _ in head) + "|",
        *("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in body),
        "",
    ]
    lines += [f"- skipped {s['bundle']} {s['runtime']}: {s['reason']}" for s in results["skipped"]]
    lines += [f"- note: {n}" for n in results["notes"]]
    lines += ["", "```", results["command"], "```", ""]
    return "\n".join(lines)


def plot(results: dict[str, Any]) -> bytes | None:
    """pareto.png: accuracy against latency, marker area by file size; None when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no global backend state to disturb
    except ImportError:
        return None
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax = fig.subplots()
    rows = results["rows"]
    biggest = max((r["bytes"] for r in rows), default=1) or 1
    for i, r in enumerate(rows):
        lo, hi = r["accuracy_ci95"]
        y = r["accuracy"] * 100
        dot = ax.scatter(r["latency_ms"], y, s=30 + 400 * r["bytes"] / biggest, alpha=0.6)
        yerr = [[max(0.0, y - lo * 100)], [max(0.0, hi * 100 - y)]]
        ax.errorbar(r["latency_ms"], y, yerr=yerr, fmt="none", alpha=0.4, color=dot.get_facecolor()[0])
        label = f"{r['bundle']}/{r['variant']}/{r['runtime']}"  # staggered: variants often sit on one spot
        ax.annotate(
            label, (r["latency_ms"], y), xytext=(6, 4 + 9 * (i % 3)), textcoords="offset points", fontsize=7
        )
    for f in results["floor"]:
        ax.axvline(f["latency_ms"], color="grey", linestyle="--", linewidth=1)
        ax.annotate(f"ort floor {f['variant']}", (f["latency_ms"], ax.get_ylim()[0]), fontsize=7, rotation=90)
    first = results["machine"]["timing"]["batches"][0]
    ax.set_xscale("log")
    ax.set_xlabel(f"latency at batch {first} (ms, median window, log scale)")
    ax.set_ylabel("top-1 accuracy on eval.npz (%, 95% CI)")
    ax.set_title(f"accuracy vs latency ({results['machine']['cpu']}); marker area ∝ file size", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()


def write(results: dict[str, Any], out_dir: Path, console=None) -> dict[str, Path]:
    """Write results.{json,csv,md} and pareto.png atomically (each replaces the previous bench's file)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgekitError(f"{out_dir}: exists and is not a folder; choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    png = plot(results)
    if png is None:
        results["notes"].append("pareto.png not written: matplotlib is not installed")
    files = {name: out_dir / f"results.{name}" for name in ("json", "csv", "md")}
    write_text(files["json"], json.dumps(results, indent=2) + "\n")
    write_text(files["csv"], to_csv(results))
    write_text(files["md"], to_markdown(results))
    if png is not None:
        files["png"] = out_dir / "pareto.png"
        atomic_write_bytes(files["png"], lambda f: f.write(png))
    files |= confusions(results, out_dir)
    if console is not None:
        console.print(table(results))
        for n in results["notes"]:
            console.print(f"[yellow]note:[/] {n}")
        console.print(f"wrote {', '.join(str(p) for p in files.values())}")
    return files


# --------------------------------------------------------------------------------------------- compare


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise EdgekitError(f"{path}: no such results file (edgekit bench writes bench/results.json)")
    return read_json(path, "edgekit-bench/1", "bench results")


def compare(paths: list[Path], console=None) -> dict[str, Any]:
    """Latency of each bundle/variant/runtime on each machine, side by side; ratio = this one / the first."""
    if len(paths) < 2:
        raise EdgekitError(f"--compare: give two or more results.json files, got {len(paths)}")
    loaded = [_load(Path(p)) for p in paths]
    labels = [Path(p).parent.name if Path(p).name == "results.json" else Path(p).stem for p in paths]
    if len(set(labels)) < len(labels):
        labels = [str(p) for p in paths]
    keyed: dict[tuple[str, str, str], list[float | None]] = {}
    for i, data in enumerate(loaded):
        for r in data["rows"] + data["floor"]:
            key = (r["bundle"], r["variant"], r["runtime"])
            keyed.setdefault(key, [None] * len(loaded))[i] = r["latency_ms"]
    rows = []
    for (bundle, variant, rt), ms in keyed.items():
        ratio = [None if m is None or not ms[0] else m / ms[0] for m in ms]
        rows.append({"bundle": bundle, "variant": variant, "runtime": rt, "latency_ms": ms, "ratio": ratio})
    machines = [
        {"label": lab, "path": str(p), **d["machine"]}
        for lab, p, d in zip(labels, paths, loaded, strict=True)
    ]
    if console is not None:
        console.print(_compare_table(labels, machines, rows))
    return {"machines": machines, "rows": rows}


def _compare_table(labels: list[str], machines: list[dict], rows: list[dict]) -> Table:
    t = Table(
        title="edgekit bench --compare (ratio: this machine's latency / the first's)", title_justify="left"
    )
    for h in ("bundle", "variant", "runtime"):
        t.add_column(h)
    for i, (label, m) in enumerate(zip(labels, machines, strict=True)):
        t.add_column(f"{label} ms\n{m['cpu']}", justify="right")
        if i:
            t.add_column(f"{label} ×", justify="right")
    for r in rows:
        cells = [r["bundle"], r["variant"], r["runtime"]]
        for i, (ms, ratio) in enumerate(zip(r["latency_ms"], r["ratio"], strict=True)):
            cells.append(_num(ms, "{:.4g}"))
            if i:
                cells.append(_num(ratio, "{:.2f}×"))
        t.add_row(*cells)
    return t
