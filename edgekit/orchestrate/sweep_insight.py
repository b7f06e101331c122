"""What a sweep says about each parameter: Optuna's importance (fANOVA) and the metric against each value."""

from __future__ import annotations

from typing import Any

from edgekit.errors import EdgekitError
from edgekit.orchestrate.sweep import Sweep


def importance(rows: list[dict[str, Any]], sweep: Sweep) -> dict[str, float]:
    """parameter → share of the metric's variance it explains, over the finished trials (Optuna's fANOVA);
    {} with fewer than 3 finished trials, one varying parameter, or a distribution it cannot model."""
    import optuna

    from edgekit.orchestrate import bayes

    varying = [p for p in sweep.params if p.key in sweep.varying]
    done = [r for r in rows if r[sweep.file.metric.name] is not None and r["status"] != "pruned"]
    if len(done) < 3 or len(varying) < 2:
        return {}
    try:
        space = bayes.distributions(sweep)
    except EdgekitError:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if sweep.file.metric.goal == "maximize" else "minimize")
    for r in done:
        params = bayes.encode(sweep, {p.key: r[p.key] for p in sweep.params})
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions=space, value=r[sweep.file.metric.name])
        )
    found = optuna.importance.get_param_importances(study, params=[p.key for p in varying])
    return {k: round(float(v), 4) for k, v in found.items()}


def by_parameter_png(rows: list[dict[str, Any]], sweep: Sweep) -> bytes | None:
    """params.png: the metric against each varying parameter, one panel each (None: nothing varies)."""
    import io

    from matplotlib.figure import Figure

    metric = sweep.file.metric.name
    keys = [p for p in sweep.params if p.key in sweep.varying]
    done = [r for r in rows if r[metric] is not None]
    if not keys or not done:
        return None
    fig = Figure(figsize=(4 * len(keys), 3.5), layout="constrained")
    for ax, p in zip(fig.subplots(1, len(keys), squeeze=False)[0], keys, strict=True):
        values = [r[p.key] for r in done]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            ax.scatter(values, [r[metric] for r in done], alpha=0.7)
            if p.distribution.startswith("log") or p.distribution.startswith("q_log"):
                ax.set_xscale("log")
        else:  # choices: one column per distinct value, in the order first seen
            labels = list(dict.fromkeys(str(v) for v in values))
            ax.scatter([labels.index(str(v)) for v in values], [r[metric] for r in done], alpha=0.7)
            ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel(p.key, fontsize=8)
        ax.set_ylabel(metric, fontsize=8)
        ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()
