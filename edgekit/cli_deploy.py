"""The device-side commands: export, quantize, predict, bench (registered on `edgekit.cli.app`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgekit.cli import app, console, handled


@app.command()
@handled
def export(
    run: Annotated[
        Path | None, typer.Argument(help="Run folder or checkpoint; default: the newest run.")
    ] = None,
    onnx: Annotated[bool, typer.Option("--onnx", help="Export to ONNX (the only format so far).")] = True,
    opset: Annotated[int, typer.Option(help="ONNX opset (11-20).")] = 18,
    batch: Annotated[str, typer.Option(help="'dynamic' or a fixed batch size.")] = "dynamic",
    out: Annotated[Path, typer.Option(help="Folder that receives export/<name>/.")] = Path("export"),
    runs_dir: Annotated[Path, typer.Option(help="Where to look for the newest run.")] = Path("runs"),
    force: Annotated[
        bool, typer.Option(help="Replace an existing bundle instead of writing <name>-2.")
    ] = False,
):
    """Export a run's best model as a verified ONNX bundle: edgekit export --onnx runs/lenet_2k"""
    from edgekit.export.write import export_run

    export_run(run, out_root=out, runs_dir=runs_dir, opset=opset, batch=batch, force=force, console=console)


@app.command()
@handled
def quantize(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder, e.g. export/lenet_2k.")],
    int8: Annotated[bool, typer.Option("--int8", help="Static int8: QDQ, per-channel, calibrated.")] = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="float16 weights (for GPU runtimes).")] = False,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Dynamic int8 (ranges per call).")] = False,
    kind: Annotated[
        str | None, typer.Option(help="Any registered kind by name (int8, fp16, dynamic, …).")
    ] = None,
    calib: Annotated[int | None, typer.Option(help="Calibration images; default all in calib.npz.")] = None,
    method: Annotated[str | None, typer.Option(help="minmax (default), entropy or percentile.")] = None,
    max_drop: Annotated[
        float | None, typer.Option(help="Accuracy drop allowed, in points (default 1).")
    ] = None,
    format: Annotated[
        str | None, typer.Option("--format", help="auto (fastest here), s8s8, u8s8 or u8s8-7bit.")
    ] = None,
    per_tensor: Annotated[
        bool | None, typer.Option("--per-tensor", help="Per-tensor weights (depthwise stay per-channel).")
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="int8 for: cpu (default; variant int8) or trt (TensorRT; int8-trt).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing variant file.")] = False,
):
    """Add an int8 or fp16 variant to a bundle: edgekit quantize export/lenet_2k --int8"""
    from edgekit.quantize.quantize import quantize_bundle

    kinds = [k for k, on in (("int8", int8), ("fp16", fp16), ("dynamic", dynamic)) if on]
    kinds += [kind] if kind else []
    if len(kinds) != 1:
        raise typer.BadParameter("choose one of --int8, --fp16, --dynamic, --kind NAME")
    options = {"calib": calib, "method": method, "max_drop": max_drop, "format": format, "target": target}
    options["per_channel"] = None if per_tensor is None else not per_tensor
    quantize_bundle(bundle, kinds[0], force=force, console=console, **options)


@app.command()
@handled
def predict(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder, e.g. export/mobilenet_tiny.")],
    inputs: Annotated[list[Path], typer.Argument(help="Image files, folders (recursive) or .npy arrays.")],
    variant: Annotated[str, typer.Option(help="fp32, int8, fp16, … (the bundle's variants).")] = "fp32",
    top: Annotated[int, typer.Option(min=1, help="Classes shown per image.")] = 3,
    out: Annotated[Path | None, typer.Option(help="Write every prediction to a .csv or .json file.")] = None,
    threads: Annotated[int | None, typer.Option(help="onnxruntime threads (default: its own).")] = None,
):
    """Classify images with a bundle: edgekit predict export/mobilenet_tiny photo.jpg my_photos/"""
    from edgekit.predict import predict_files

    predict_files(bundle, inputs, variant, top, out, threads, console)


@app.command()
@handled
def bench(
    bundles: Annotated[
        list[Path] | None, typer.Argument(help="Bundle folders; default: all in ./export.")
    ] = None,
    runtime: Annotated[str | None, typer.Option(help="Comma-separated runtimes; default: all.")] = None,
    threads: Annotated[
        int | None, typer.Option(help="Threads per runtime; default: the runtime's own.")
    ] = None,
    batch: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,32",
    out: Annotated[Path, typer.Option(help="Where results.{json,csv,md} and pareto.png go.")] = Path("bench"),
    export_root: Annotated[Path, typer.Option(help="Where to find bundles.")] = Path("export"),
    compare: Annotated[
        bool, typer.Option("--compare", help="Merge the results.json files given as arguments.")
    ] = False,
):
    """Measure accuracy, size and latency of bundles on every available runtime."""
    from edgekit.bench import report, run

    if compare:
        if not bundles or len(bundles) < 2:
            raise typer.BadParameter("--compare needs two or more results.json files")
        report.compare(bundles, console)
        return
    batches = (
        [int(b) for b in batch.split(",") if b.strip()]
        if all(b.strip().lstrip("-").isdigit() for b in batch.split(","))
        else None
    )
    if batches is None:
        raise typer.BadParameter(f"--batch {batch!r}: expected comma-separated integers, e.g. 1,32")
    runtimes = [r.strip() for r in runtime.split(",")] if runtime else None
    run.bench(bundles or None, runtimes, threads, batches, out, export_root=export_root, console=console)
