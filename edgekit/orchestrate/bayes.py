"""`method: bayes` without wandb: Optuna's TPE sampler proposes each batch of trials from the results so far.

Trials are ordinary run folders under the sweep folder, run by `sweep_run` like grid and random ones; the
study is rebuilt from those folders on every start, so a killed sweep resumes and a finished trial is
never rerun. A fixed `sampler_seed` gives the same trials on the same results.
"""

from __future__ import annotations

from typing import Any

from edgekit.errors import EdgekitError
from edgekit.orchestrate.sweep import Param, Sweep, Trial


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
    """A trial's values as Optuna sees them (a choice by its index)."""
    return {p.key: (_choices(p).index(params[p.key]) if _choices(p) else params[p.key]) for p in sweep.params}


def decode(sweep: Sweep, asked: dict[str, Any]) -> dict[str, Any]:
    return {p.key: (_choices(p)[asked[p.key]] if _choices(p) else asked[p.key]) for p in sweep.params}


def study(sweep: Sweep, done: list[tuple[dict[str, Any], float | None]]):
    """A TPE study holding the finished trials (params, metric value; None: failed)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = distributions(sweep)
    direction = "maximize" if sweep.file.metric.goal == "maximize" else "minimize"
    s = optuna.create_study(
        direction=direction, sampler=optuna.samplers.TPESampler(seed=sweep.file.sampler_seed)
    )
    for params, value in done:
        state = optuna.trial.TrialState.COMPLETE if value is not None else optuna.trial.TrialState.FAIL
        s.add_trial(
            optuna.trial.create_trial(
                params=encode(sweep, params), distributions=space, value=value, state=state
            )
        )
    return s, space


def propose(sweep: Sweep, done: list[tuple[dict[str, Any], float | None]], first: int, n: int) -> list[Trial]:
    """The next `n` trials, numbered from `first`, each checked as a recipe before anything runs."""
    from edgekit.orchestrate.sweep import check_trial

    s, space = study(sweep, done)
    width = max(2, len(str(sweep.file.count or 0)))
    trials = []
    for i in range(first, first + n):
        asked = s.ask(space)  # a pending trial: the next ask in this batch sees it and looks elsewhere
        trial = sweep.trial(decode(sweep, asked.params), f"{i:0{width}d}")
        check_trial(sweep, trial)
        trials.append(trial)
    return trials
