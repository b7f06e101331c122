"""Compression on digits: fp32 vs pruned (0.5, 0.25 of MACs) vs int8 vs pruned + int8, in one run.

    python bench/compress.py                                  # lenet_2k, resnet_small, mobilenet_tiny
    python bench/compress.py lenet_2k --runs runs/digits_bundles --finetune-epochs 30

Each model's trained run is taken from `--runs` (trained there with its shipped recipe if missing),
pruned with `edgekit prune` (l1, one-shot, to 0.5 of MACs with and without `--round-to 8` and to 0.25,
fine-tuned `--finetune-epochs` with the run's own recipe),
exported with `edgekit export --onnx` and quantized with `edgekit quantize --int8 --max-drop 0.5` — the
same functions the commands call. Every variant is then measured here, side by side: parameters, MACs,
file size, test accuracy and top-1 agreement with the fp32 model on the bundle's eval.npz (the 270-image
test split: one image is 0.37 points), and onnxruntime CPU latency at batch 1 with one thread (median of
5 windows of ≥ 0.2 s; the variants of a model timed one after another in the same process).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ROOT, row, train, write_markdown
from rich.console import Console

from edgekit.errors import EdgekitError
from edgekit.prune.prune import How

QUANTIZE = {"calib": 256, "max_drop": 0.5}
UNREACHED: list[str] = []  # pruning targets a model cannot reach, reported under the table
PRUNINGS = {  # label → how (l1, one-shot, per-layer)
    "pruned 0.5": How("macs", 0.5),
    "pruned 0.5 round-to 8": How("macs", 0.5, round_to=8),
    "pruned 0.25": How("macs", 0.25),
}


def trained(name: str, runs: Path) -> Path:
    if (runs / name / "best.pt").is_file():
        return runs / name
    return Path(train(name, [], runs)["run"])


def variants(run: Path, work: Path, finetune_epochs: int) -> dict[str, Path]:
    """label → ONNX file: fp32 and int8 of the run, and of the run pruned to each MACs fraction."""
    from edgekit.export.write import export_run
    from edgekit.prune.prune import prune_run
    from edgekit.quantize.quantize import quantize_bundle

    sources = {"": run}
    # `round-to 8`: channel counts a multiple of 8 (the AVX2 NCHWc block), against odd counts' slowdown.
    for label, how in PRUNINGS.items():
        try:
            sources[label] = prune_run(run, how, finetune_epochs, runs_dir=work / "runs" / run.name)
        except EdgekitError as e:  # e.g. 8-channel layers cannot shrink in steps of 8: say so, go on
            UNREACHED.append(f"`{run.name}` {label}: {e}")
    files = {}
    for label, source in sources.items():
        bundle = export_run(source, out_root=work / "export" / run.name / (label or "base").replace(" ", "_"))
        quantize_bundle(bundle, "int8", **QUANTIZE)
        files[label or "fp32"] = bundle / "model.onnx"
        files[f"{label} + int8".strip(" +")] = bundle / "model.int8.onnx"
    return files


def measure(file: Path, bundle_meta: dict, x: np.ndarray, y: np.ndarray, reference: np.ndarray | None):
    from edgekit.runtimes import OrtSession
    from edgekit.timing import measure as time_it

    session = OrtSession(file, ["CPUExecutionProvider"], threads=1)
    predicted = np.concatenate([session.run(x[i : i + 256]).argmax(1) for i in range(0, len(x), 256)])
    one = x[:1].copy()
    timing = time_it(lambda: session.run(one))
    return {
        "params": bundle_meta["params"],
        "macs": bundle_meta["macs"],
        "bytes": file.stat().st_size,
        "acc": float((predicted == y).mean()),
        "agree": float((predicted == reference).mean()) if reference is not None else 1.0,
        "ms": timing.ms,
        "predicted": predicted,
    }


def rows_for(name: str, files: dict[str, Path], console: Console) -> list[str]:
    from edgekit.bundle import load_eval, read_bundle

    x, y = load_eval(files["fp32"].parent)
    results = {}
    for label, file in files.items():
        meta = read_bundle(file.parent, check_model=False)[0].model_dump()
        # Agreement with the fp32 model this variant was made from: pruned + int8 with pruned fp32.
        source = label.removesuffix(" + int8") if label.endswith(" + int8") else "fp32"
        reference = results[source]["predicted"] if source in results else None
        results[label] = measure(file, meta, x, y, reference)
    base, lines = results["fp32"], []
    for label, r in results.items():
        cells = [f"`{name}`", label, f"{r['params']:,}", f"{r['macs']:,}", f"{r['bytes']:,}"]
        cells += [f"{r['bytes'] / r['params']:.2f}", f"{r['bytes'] / base['bytes']:.2f}×", f"{r['acc']:.2%}"]
        cells += [f"{(r['acc'] - base['acc']) * 100:+.2f}", f"{r['agree']:.2%}", f"{r['ms'] * 1e3:.1f}"]
        lines.append(row([*cells, f"{base['ms'] / r['ms']:.2f}×"], console))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["lenet_2k", "resnet_small", "mobilenet_tiny"])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "digits_bundles")
    parser.add_argument("--finetune-epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "compress.md")
    args = parser.parse_args()
    console, lines, started = Console(), [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgekit-compress-") as tmp:
        for name in args.models:
            files = variants(trained(name, args.runs), Path(tmp), args.finetune_epochs)
            lines += rows_for(name, files, console)
    command = " ".join(
        ["python bench/compress.py", *args.models, "--finetune-epochs", str(args.finetune_epochs)]
    )
    details = (
        f"onnxruntime CPU, 1 thread, batch 1; {time.perf_counter() - started:.0f} s in all. Δ and agreement "
        "are against the model's fp32 row (for `pruned + int8`, agreement is with the pruned fp32 model). "
        "Pruning: l1, one-shot, fine-tuned with the run's recipe; `round-to 8` keeps every pruned layer's "
        "channel count a multiple of 8; int8: static QDQ, per-channel, format "
        "chosen on this host, `--max-drop 0.5`."
    )
    details += "".join(f" Not reached: {note}." for note in UNREACHED)
    columns = {"model": "l", "variant": "l"} | dict.fromkeys(
        ["params", "MACs", "file bytes", "bytes/param", "size × fp32", "test acc", "Δ points", "agree"], "r"
    )
    columns |= {"µs/call": "r", "speed × fp32": "r"}
    write_markdown(args.out, "Compression on digits", command, details, columns, lines, console)


if __name__ == "__main__":
    main()
