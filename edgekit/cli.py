"""The `edgekit` command: one thin typer command per stage; each imports its stage inside itself."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edgekit.errors import EXIT_BAD_INPUT, message_for

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train, compress, export and benchmark compact image classifiers from YAML recipes.",
)
console = Console()
err_console = Console(stderr=True)
_debug = {"on": False}


@app.callback()
def _options(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False):
    _debug["on"] = debug


def handled(command):
    """Turn user errors into one line on stderr and exit code 2; keep tracebacks for bugs or --debug."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except Exception as e:
            message = message_for(e)
            if message is None or _debug["on"]:
                raise
            for line in message.splitlines():
                err_console.print(f"[red]error:[/] {line}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None

    return run


@app.command(context_settings={"allow_extra_args": False})
@handled
def train(
    args: Annotated[
        list[str] | None,
        typer.Argument(
            help="A recipe file, then dotted overrides such as train.epochs=50 model.dropout=0.1.",
            metavar="[RECIPE] [KEY=VALUE]...",
        ),
    ] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue (or extend) this run folder.")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where new run folders go.")] = Path("runs"),
):
    """Train a model from a recipe: edgekit train recipes/lenet_2k.yaml train.epochs=200"""
    from edgekit.train import run

    args = list(args or [])
    overrides = [a for a in args if "=" in a]
    recipes = [a for a in args if "=" not in a]
    if resume is not None:
        if recipes:
            raise typer.BadParameter(f"give either a recipe or --resume, not both ({recipes[0]})")
        run.resume(resume, overrides, console)
    elif len(recipes) != 1:
        raise typer.BadParameter("expected one recipe file, e.g. edgekit train recipes/lenet_2k.yaml")
    else:
        run.start(Path(recipes[0]), overrides, runs_dir, console)


@app.command()
@handled
def models(
    recipes: Annotated[Path, typer.Option(help="Also list the recipes in this folder.")] = Path("recipes"),
    in_channels: Annotated[int, typer.Option(help="Input channels to count for.")] = 1,
    image_size: Annotated[int, typer.Option(help="Input size to count for.")] = 8,
    num_classes: Annotated[int, typer.Option(help="Classes to count for.")] = 10,
):
    """List architectures (and the recipes in ./recipes) with parameters and MACs."""
    from edgekit.models.listing import zoo_table

    console.print(zoo_table(recipes, in_channels, image_size, num_classes))


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


def main() -> None:
    app(prog_name="edgekit")


if __name__ == "__main__":
    sys.exit(main())
