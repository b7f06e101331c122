"""`method: bayes` without wandb: Optuna's TPE sampler proposes each batch of trials from the results so far.

Trials are ordinary run folders under the sweep folder, run by `sweep_run` like grid and random ones; the
study is rebuilt from those folders on every start, so a killed sweep resumes and a finished trial is
never rerun. A finished point TPE proposes again is told its earlier result instead of being trained
twice. A fixed `sampler_seed` gives the same trials on the same results.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.orchestrate.sweep import PRUNED_FILE, Sweep, Trial
from edgekit.orchestrate.sweep_space import Param
from edgekit.runs import Run, write_json


def distributions(sweep: Sweep) -> dict[str, Any]:
    """wandb's parameter distributions as Optuna's; one it cannot model is a one-line error."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    def one(p: Param):
        o = p.options
        table = {  # choices by index: Optuna takes only scalars, a value may be a list ([8, 16])
            "constant": lambda: CategoricalDistribution([0]),
            "categorical": lambda: CategoricalDistribution(list(range(len(o.values)))),
            "int_uniform": lambda: IntDistribution(o.min, o.max),
            "uniform": lambda: FloatDistribution(o.min, o.max),
            "q_uniform": lambda: FloatDistribution(o.min, o.max, step=o.q),
            "log_uniform_values": lambda: FloatDistribution(o.min, o.max, log=True),
        }
        if p.distribution not in table:
            raise EdgekitError(
                f"{sweep.path}: parameters.{p.key}: method bayes cannot model distribution "
                f"'{p.distribution}' locally; allowed: {', '.join(table)} (or use --wandb)"
            )
        return table[p.distribution]()

    return {p.key: one(p) for p in sweep.params}


def _choices(p: Param) -> list[Any] | None:
    return {"constant": lambda o: [o.value], "categorical": lambda o: o.values}.get(
        p.distribution, lambda o: None
    )(p.options)


def encode(sweep: Sweep, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's values as Optuna sees them (a choice by its index); `params` may be a run's resolved
    values, where a dict the sweep set ({hflip: true}) comes back with every default filled in."""
    return {
        p.key: (_index(_choices(p), params[p.key]) if _choices(p) else params[p.key]) for p in sweep.params
    }


def _index(choices: list[Any], value: Any) -> int:
    if value in choices:
        return choices.index(value)
    for i, choice in enumerate(choices):
        if isinstance(choice, dict) and isinstance(value, dict) and value.items() >= choice.items():
            return i
    raise EdgekitError(f"{value!r} is none of the sweep's values {choices!r}")


def decode(sweep: Sweep, asked: dict[str, Any]) -> dict[str, Any]:
    return {p.key: (_choices(p)[asked[p.key]] if _choices(p) else asked[p.key]) for p in sweep.params}


def column(sweep: Sweep) -> str:
    """The metrics.csv column a pruner follows epoch by epoch for the sweep's metric."""
    return "val_acc" if sweep.file.metric.goal == "maximize" else "val_loss"


def curve(folder: Path, name: str) -> dict[int, float]:
    """epoch → value of metrics.csv column `name` in a trial's run folder ({} before its first epoch).
    Where the trial logged its raw weights beside their EMA (`name`_raw, track.raw_val), that column:
    the average lags by ~1 / (1 − ema) updates, and at hyperband's early rungs every trial's average
    still sits near its random start, so the cut would be at random (docs/sweeps.md)."""
    file = folder / "metrics.csv"
    if not file.is_file():
        return {}
    with file.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {int(float(r["epoch"])): float(r.get(f"{name}_raw") or r[name]) for r in rows if r.get(name)}


def study(
    sweep: Sweep, sweep_dir: Path, listed: dict[str, dict[str, Any]], storage: str | None = None, join=False
):
    """A TPE study (with Hyperband pruning when the sweep asks for it) holding the listed trials that
    ended: finished ones with their metric, pruned ones as pruned, each with its per-epoch curve.

    With `storage` (an Optuna RDB URL: a SQLite file, PostgreSQL, MySQL) the study lives there under the
    sweep's name and is shared by every process that names it (`join`: it must exist already)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = distributions(sweep)
    direction = "maximize" if sweep.file.metric.goal == "maximize" else "minimize"
    stop = sweep.file.early_terminate
    pruner = (
        optuna.pruners.HyperbandPruner(stop.min_iter, stop.max_iter or "auto", stop.eta)
        if stop
        else optuna.pruners.NopPruner()
    )
    sampler = optuna.samplers.TPESampler(seed=sweep.file.sampler_seed)
    if storage is not None:
        return _shared(sweep, storage, join, direction, sampler, pruner), space
    # A fixed name: HyperbandPruner puts a trial in a bracket by hashing the study name with its number.
    s = optuna.create_study(study_name=sweep.name, direction=direction, sampler=sampler, pruner=pruner)
    for name, params in listed.items():
        folder = sweep_dir / name
        value = (Run(folder).summary() or {}).get(sweep.file.metric.name)
        pruned = (folder / PRUNED_FILE).is_file()
        if value is None and not pruned:
            continue  # not finished: it runs again and is told then
        state = optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.COMPLETE
        s.add_trial(
            optuna.trial.create_trial(
                params=encode(sweep, params),
                distributions=space,
                value=None if pruned else value,
                state=state,
                intermediate_values=curve(folder, column(sweep)),
            )
        )
    return s, space


def _shared(sweep: Sweep, storage: str, join: bool, direction: str, sampler, pruner):
    import optuna

    try:
        if join:
            return optuna.load_study(study_name=sweep.name, storage=storage, sampler=sampler, pruner=pruner)
        return optuna.create_study(
            study_name=sweep.name,
            storage=storage,
            load_if_exists=True,
            direction=direction,
            sampler=sampler,
            pruner=pruner,
        )
    except KeyError:  # load_study: no such study
        raise EdgekitError(
            f"--join-study: no study '{sweep.name}' in {storage}; start it with --storage {storage} first"
        ) from None
    except Exception as e:  # SQLAlchemy's own errors for a bad URL or an unreachable database
        raise EdgekitError(f"--storage {storage}: {type(e).__name__}: {str(e).splitlines()[0]}") from None


REPEAT_LIMIT = 50  # proposals of trained points in a row: the search has settled, or a small space is spent


def ask(sweep: Sweep, s, space: dict[str, Any], first: int, n: int) -> list[tuple[Trial, Any]]:
    """Up to `n` new trials, numbered from `first`, each checked as a recipe before anything runs; with the
    Optuna trial that reports their curve and is told their result. Fewer (none) once TPE has proposed
    only trained points REPEAT_LIMIT times in a row."""
    from edgekit.orchestrate.sweep import check_trial

    width = max(2, len(str(sweep.file.count or 0)))
    out, repeats = [], 0
    while len(out) < n and repeats < REPEAT_LIMIT:
        asked = s.ask(space)  # a pending trial: the next ask in this batch sees it and looks elsewhere
        if told_as_repeat(s, asked):
            repeats += 1
            continue
        repeats = 0
        number = asked.number if first < 0 else first + len(out)  # shared study: unique to all agents
        trial = sweep.trial(decode(sweep, asked.params), f"{number:0{width}d}")
        check_trial(sweep, trial)
        out.append((trial, asked))
    return out


def told_as_repeat(s, asked) -> bool:
    """TPE proposes points it has already tried (often, in a small categorical space): training a finished
    one again with the same seed would give the same result, so its result is told instead. A point still
    running elsewhere is told as failed, and TPE asked again. A pruned point is trained again: hyperband
    may put it in a bracket that lets it finish. False: a point to train."""
    import optuna

    State = optuna.trial.TrialState
    for earlier in s.get_trials(deepcopy=False, states=(State.COMPLETE, State.RUNNING)):
        if earlier.number == asked.number or earlier.params != asked.params:
            continue
        asked.set_user_attr("repeat_of", earlier.number)
        if earlier.state == State.COMPLETE:
            s.tell(asked, earlier.value)
        else:
            s.tell(asked, state=State.FAIL)
        return True
    return False


def watcher(sweep: Sweep, folder: Path, asked) -> Callable[[], bool]:
    """A check for the running trial: reports each new epoch to the pruner; True when it says stop, after
    writing PRUNED_FILE (so a killed sweep never reruns it)."""
    reported: set[int] = set()

    def check() -> bool:
        for epoch, value in sorted(curve(folder, column(sweep)).items()):
            if epoch in reported:
                continue
            reported.add(epoch)
            asked.report(value, epoch)
            if asked.should_prune():
                write_json(folder / PRUNED_FILE, {"epoch": epoch, column(sweep): value, "by": "hyperband"})
                return True
        return False

    return check


def tell(sweep: Sweep, s, asked, folder: Path) -> None:
    import optuna

    if (folder / PRUNED_FILE).is_file():
        s.tell(asked, state=optuna.trial.TrialState.PRUNED)
        return
    value = (Run(folder).summary() or {}).get(sweep.file.metric.name)
    s.tell(asked, value) if value is not None else s.tell(asked, state=optuna.trial.TrialState.FAIL)


def _opening_line(sweep: Sweep, total: int, listed: int, parallel: int, sweep_dir: Path) -> str:
    """What a bayes sweep prints as it starts: its size, sampler, pruner and where it writes."""
    stop = ", hyperband" if sweep.file.early_terminate else ""
    return (
        f"sweep [bold]{sweep.name}[/]: {total} trials (bayes: TPE, seed {sweep.file.sampler_seed}{stop}), "
        f"{listed} already listed; {parallel} at a time → {sweep_dir}"
    )


def search(sweep: Sweep, runs_dir: Path, console, parallel: int, count, storage=None, join=False) -> list:
    """Bayesian search on this machine: Optuna's TPE proposes `parallel` trials at a time from the
    results of the finished ones, until `count` trials exist; a rerun finishes and reuses them."""
    from edgekit.orchestrate import sweep_report
    from edgekit.orchestrate.sweep_run import INDEX_FILE, _command, _env, _run_all, claim, trial_state

    total = count or sweep.file.count
    if total is None:
        raise EdgekitError(f"{sweep.path}: method 'bayes' needs a number of trials: count: N, or --count N")
    distributions(sweep)  # a parameter TPE cannot model fails before anything is written
    sweep_dir = runs_dir / sweep.name
    claim(sweep_dir, sweep, [])
    listed = json.loads((sweep_dir / INDEX_FILE).read_text())["trials"]
    env, failed = _env(parallel), []
    console.print(_opening_line(sweep, total, len(listed), parallel, sweep_dir))
    # Listed but unfinished trials (a killed sweep) run first, unwatched; then new ones, batch by batch.
    unfinished = [Trial(n, p) for n, p in listed.items() if trial_state(sweep_dir / n) != "done"]
    # Hyperband trials log their raw weights' val beside an EMA's (a no-op without one): `curve` follows it.
    raw = ("track.raw_val=true",) if sweep.file.early_terminate else ()
    jobs = [(t, _command(sweep, sweep_dir, t, trial_state(sweep_dir / t.name), raw)) for t in unfinished]
    failed += _run_all(jobs, sweep_dir, env, parallel, console)
    s, space = study(sweep, sweep_dir, listed, storage, join)

    def made() -> int:  # shared: every agent's trials count, running ones included, repeats not
        return sum("repeat_of" not in t.user_attrs for t in s.trials) if storage else len(listed)

    while made() < total:
        first = -1 if storage else len(listed)
        batch = ask(sweep, s, space, first, min(parallel, total - made()))
        if not batch:
            console.print(
                f"stopping at {made()} of {total} trials: TPE proposed only trained points {REPEAT_LIMIT} "
                "times in a row (the space is spent, or the search has settled)"
            )
            break
        claim(sweep_dir, sweep, [t for t, _ in batch])
        listed.update({t.name: t.params for t, _ in batch})
        jobs = [
            (t, _command(sweep, sweep_dir, t, "new", raw), watcher(sweep, sweep_dir / t.name, asked))
            for t, asked in batch
        ]
        failed += _run_all(jobs, sweep_dir, env, parallel, console)
        for t, asked in batch:
            tell(sweep, s, asked, sweep_dir / t.name)
    found = sweep_report.write(sweep_dir, sweep, console)
    if failed:
        raise EdgekitError(f"{sweep_dir}: {len(failed)} of {total} trials failed; see {sweep_dir / 'logs'}")
    return found
