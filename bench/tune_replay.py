"""A local bayes + hyperband sweep replayed from a grid's finished runs of the same space, in seconds.

Every trial is deterministic (one thread, a fixed seed), so training a point again gives the run the grid
already has: the replay asks TPE for trials exactly as `edgekit sweep` does (the same study name, sampler
seed and pruner, so the same hyperband brackets), reports each proposed point's recorded val curve to the
pruner epoch by epoch as the sweep's watcher does, and tells the result. That makes many sampler seeds
affordable where training them is not; `bench/tune_search.py` checks a replay against real sweeps.
"""

from __future__ import annotations

import json
from pathlib import Path


def replay(path: Path, grid_dir: Path) -> list[dict]:
    """The trials the bayes sweep at `path` would run, in order, in `trials()`'s shape (the epochs a pruned
    trial ran are those it was pruned after; a real one may log one more before it is stopped)."""
    import optuna

    from edgekit.orchestrate import bayes
    from edgekit.orchestrate.sweep import read
    from edgekit.orchestrate.sweep_run import INDEX_FILE
    from edgekit.runs import Run

    sweep = read(path)
    listed = json.loads((grid_dir / INDEX_FILE).read_text())["trials"]

    def point(params: dict) -> tuple:
        return tuple(params[k] for k in sweep.varying)

    recorded = {point(params): grid_dir / name for name, params in listed.items()}
    study, space = bayes.study(sweep, grid_dir, {})
    out: list[dict] = []
    while len(out) < sweep.file.count:
        batch = bayes.ask(sweep, study, space, len(out), 1)
        if not batch:
            break
        (trial, asked), folder = batch[0], recorded[point(batch[0][0].params)]
        curve = bayes.curve(folder, bayes.column(sweep))
        pruned_at = None
        for epoch, value in sorted(curve.items()):  # as the sweep's watcher reports each new epoch
            asked.report(value, epoch)
            if asked.should_prune():
                pruned_at = epoch
                break
        if pruned_at is not None:
            study.tell(asked, state=optuna.trial.TrialState.PRUNED)
            out.append({"name": trial.name, "epochs": pruned_at, "val": None, "pruned": True})
            continue
        value = Run(folder).summary()[sweep.file.metric.name]
        study.tell(asked, value)
        out.append({"name": trial.name, "epochs": max(curve), "val": value, "pruned": False})
    return out
