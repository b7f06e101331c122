"""The `edgekit` command: one thin typer command per stage; each imports its stage inside itself."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

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


def _version(show: bool) -> None:
    if show:
        from edgekit import __version__

        console.print(f"edgekit {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
):
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
                # escape: a message may hold brackets ("edgekit[train]", "[8, 16]") that rich reads as markup
                err_console.print(f"[red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
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


@app.command("lr-find")
@handled
def lr_find(
    recipe: Annotated[Path, typer.Argument(help="A recipe file.")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Dotted recipe overrides.", metavar="[KEY=VALUE]...")
    ] = None,
    start: Annotated[float, typer.Option(help="First learning rate of the range.")] = 1e-6,
    end: Annotated[float, typer.Option(help="Last learning rate of the range.")] = 10.0,
    steps: Annotated[
        int, typer.Option(help="Steps from start to end (the test stops when it diverges).")
    ] = 200,
    repeats: Annotated[
        int, typer.Option(help="Tests at seeds seed, seed+1, …; the suggestion is their median.")
    ] = 3,
    runs_dir: Annotated[Path, typer.Option(help="Its curve goes to RUNS_DIR/lr_find/<recipe>/.")] = Path(
        "runs"
    ),
):
    """Learning-rate range test: a plot and a suggested lr. edgekit lr-find recipes/lenet_2k.yaml"""
    from edgekit.recipe import load
    from edgekit.train import lr_find as range_test

    params = range_test.checked_range(start, end, steps, repeats)  # bad input fails before anything loads
    range_test.find(load(recipe, overrides or []), params, runs_dir / "lr_find", console)


@app.command()
@handled
def prune(
    run: Annotated[Path, typer.Argument(help="The run folder whose best.pt is pruned.")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Dotted recipe overrides for the fine-tune.", metavar="[KEY=VALUE]..."),
    ] = None,
    macs: Annotated[float | None, typer.Option(help="Fraction of MACs to keep, in (0, 1).")] = None,
    params: Annotated[float | None, typer.Option(help="Fraction of parameters to keep, in (0, 1).")] = None,
    importance: Annotated[str, typer.Option(help="l1, l2, taylor or bn-scale.")] = "l1",
    steps: Annotated[
        int, typer.Option(help="Pruning steps, importance re-estimated at each (1: one-shot).")
    ] = 1,
    global_pruning: Annotated[
        bool, typer.Option("--global/--per-layer", help="Rank channels across layers, or cut each alike.")
    ] = False,
    round_to: Annotated[int | None, typer.Option(help="Keep channel counts a multiple of this.")] = None,
    finetune_epochs: Annotated[int, typer.Option(help="Epochs of fine-tuning with the run's recipe.")] = 30,
    lr: Annotated[
        float | None, typer.Option(help="Fine-tuning learning rate; default: the recipe's.")
    ] = None,
    runs_dir: Annotated[
        Path | None, typer.Option(help="Where the pruned run goes; default: beside RUN.")
    ] = None,
):
    """Prune channels with torch-pruning, then fine-tune: edgekit prune runs/lenet_2k --macs 0.5"""
    from edgekit.prune.prune import How, prune_run, target

    how = How(*target(macs, params), importance, steps, global_pruning, round_to)
    prune_run(run, how, finetune_epochs, lr, overrides or [], runs_dir, console)


@app.command()
@handled
def sweep(
    sweep_file: Annotated[Path, typer.Argument(help="A sweep file, e.g. recipes/sweeps/lenet_2k_lr.yaml.")],
    parallel: Annotated[
        int, typer.Option(min=1, help="Local trials at once; the CPU threads are divided among them.")
    ] = 1,
    count: Annotated[
        int | None, typer.Option(min=1, help="Trials to run (instead of count: in the file).")
    ] = None,
    wandb: Annotated[bool, typer.Option("--wandb", help="Create a wandb sweep, run wandb agents.")] = False,
    agents: Annotated[int, typer.Option(min=1, help="With --wandb: local agents, one process each.")] = 1,
    join: Annotated[str | None, typer.Option(help="Run one agent of this existing wandb sweep id.")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Trials go to RUNS_DIR/<sweep name>/.")] = Path("runs"),
    rank_on_test: Annotated[
        bool, typer.Option("--rank-on-test", help="Allow a test_* metric to rank the trials (says so).")
    ] = False,
    storage: Annotated[
        str | None,
        typer.Option(
            help="bayes: keep the study in this Optuna database (sqlite:///x.db, …); "
            "'sqlite': study.db in the sweep folder.",
        ),
    ] = None,
    join_study: Annotated[
        bool, typer.Option("--join-study", help="bayes: join the study already in --storage (another agent).")
    ] = False,
):
    """Train one run per trial of a sweep and rank them: edgekit sweep recipes/sweeps/lenet_2k_lr.yaml"""
    from edgekit.orchestrate import sweep_run

    sweep_run.run(
        sweep_file, runs_dir, console, parallel, count, wandb, agents, join, rank_on_test, storage, join_study
    )


@app.command()
@handled
def models(
    recipes: Annotated[Path, typer.Option(help="Also list the recipes in this folder.")] = Path("recipes"),
    in_channels: Annotated[int, typer.Option(help="Input channels to count for.")] = 1,
    image_size: Annotated[int, typer.Option(help="Input size to count for.")] = 8,
    num_classes: Annotated[int, typer.Option(help="Classes to count for.")] = 10,
):
    """List architectures (and the recipes under ./recipes, subfolders too) with parameters and MACs."""
    from edgekit.listing import zoo_table

    console.print(zoo_table(recipes, in_channels, image_size, num_classes))


@app.command()
@handled
def pipeline(
    file: Annotated[Path, typer.Argument(help="A pipeline file, e.g. recipes/pipelines/digits_edge.yaml.")],
    runs_dir: Annotated[Path, typer.Option(help="Runs go to RUNS_DIR/<name>/.")] = Path("runs"),
    export_root: Annotated[Path, typer.Option(help="Bundles go to EXPORT_ROOT/<name>/.")] = Path("export"),
    out: Annotated[Path, typer.Option(help="Bench results go to OUT/<name>/.")] = Path("bench"),
):
    """Teacher → KD student → prune → export → int8 → bench; rerun to resume where it stopped."""
    from edgekit.orchestrate.pipeline import run_pipeline

    run_pipeline(file, runs_dir, export_root, out, console)


# The device-side commands live in their own module; importing it registers them on `app`.
from edgekit import cli_deploy  # noqa: E402, F401


def main() -> None:
    app(prog_name="edgekit")


if __name__ == "__main__":
    sys.exit(main())
