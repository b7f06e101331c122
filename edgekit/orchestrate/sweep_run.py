"""Runs a sweep: local trials as resumable `edgekit train` processes, or wandb agents across machines."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from rich.console import Console

from edgekit.errors import EdgekitError
from edgekit.orchestrate import sweep_report
from edgekit.orchestrate.sweep import PRUNED_FILE, Sweep, Trial, read
from edgekit.recipe import load
from edgekit.runs import DONE, Run, write_json

INDEX_FILE = "sweep.json"
STUDY_FILE = "study.db"  # `--storage sqlite`: the bayes study's SQLite file in the sweep folder
POLL_S = 0.5  # how often a pruner looks at a running trial's metrics.csv


def run(
    path: Path,
    runs_dir: Path,
    console: Console,
    parallel: int = 1,
    count: int | None = None,
    use_wandb: bool = False,
    agents: int = 1,
    join: str | None = None,
    rank_on_test: bool = False,
    storage: str | None = None,
    join_study: bool = False,
) -> list[dict[str, Any]]:
    """`edgekit sweep`: local search by default; --wandb creates a wandb sweep; --join runs one agent."""
    if join is not None:
        return join_wandb(read(path, rank_on_test), join, runs_dir, count, console)
    if use_wandb:
        if parallel != 1:
            raise EdgekitError(f"--parallel {parallel}: for local sweeps; with --wandb use --agents N")
        return start_wandb(read(path, rank_on_test), runs_dir, agents, count, console)
    if agents != 1:
        raise EdgekitError(
            f"--agents {agents}: runs wandb agents, add --wandb (local sweeps use --parallel N)"
        )
    sweep = read(path, rank_on_test)
    if (storage or join_study) and sweep.file.method != "bayes":
        raise EdgekitError(f"--storage/--join-study: for method bayes; {path} uses {sweep.file.method}")
    if join_study and not storage:
        raise EdgekitError("--join-study: name the shared study's database with --storage URL")
    if storage == "sqlite":
        storage = f"sqlite:///{(runs_dir / sweep.name / STUDY_FILE).resolve()}"
        (runs_dir / sweep.name).mkdir(parents=True, exist_ok=True)
    return local(sweep, runs_dir, parallel, count, console, storage, join_study)


# ---------------------------------------------------------------------------------------------- local
def local(
    sweep: Sweep,
    runs_dir: Path,
    parallel: int,
    count: int | None,
    console: Console,
    storage: str | None = None,
    join: bool = False,
) -> list:
    if sweep.file.method == "bayes":
        from edgekit.orchestrate import bayes

        return bayes.search(sweep, runs_dir, console, parallel, count, storage, join)
    if sweep.file.early_terminate:
        raise EdgekitError(
            f"{sweep.path}: early_terminate works locally with method: bayes (or with --wandb); grid and "
            "random run every trial to the end"
        )
    trials = sweep.trials(count)  # every trial's recipe is checked here, before anything is written
    sweep_dir = runs_dir / sweep.name
    claim(sweep_dir, sweep, trials)
    todo = [(t, s) for t in trials if (s := trial_state(sweep_dir / t.name)) != "done"]
    env = _env(parallel)
    resumed = sum(state == "resume" for _, state in todo)
    console.print(
        f"sweep [bold]{sweep.name}[/]: {len(trials)} trials ({sweep.file.method}), "
        f"{len(trials) - len(todo)} already done; running {len(todo)} ({resumed} resumed), {parallel} at a "
        f"time with {env['OMP_NUM_THREADS']} threads each → {sweep_dir} (logs in {sweep_dir / 'logs'})"
    )
    failed = _run_all(
        [(t, _command(sweep, sweep_dir, t, s)) for t, s in todo], sweep_dir, env, parallel, console
    )
    found = sweep_report.write(sweep_dir, sweep, console)
    if failed:
        logs = ", ".join(str(sweep_dir / "logs" / f"{name}.log") for name in failed)
        raise EdgekitError(f"{sweep_dir}: {len(failed)} of {len(trials)} trials failed; see {logs}")
    return found


def trial_state(folder: Path) -> str:
    """new, done, resume (a checkpoint to continue from) or restart (killed before its first epoch)."""
    if not folder.exists():
        return "new"
    if (folder / PRUNED_FILE).is_file():  # stopped early on purpose: its result is that it was weak
        return "done"
    state = Run(folder).status().state
    return {"finished": "done", "partial": "resume", "new": "restart"}[state]


def _command(
    sweep: Sweep, sweep_dir: Path, trial: Trial, state: str, extra: tuple[str, ...] = ()
) -> list[str]:
    """The trial's `edgekit train` call; `extra`: overrides of the runner's own, after the trial's."""
    edgekit = [sys.executable, "-m", "edgekit", "train"]
    if state == "resume":
        return [*edgekit, "--resume", str(sweep_dir / trial.name)]
    if state == "restart":  # no checkpoint was written: nothing in it to keep, and the name is the trial's
        shutil.rmtree(sweep_dir / trial.name)
    # Local trials stay off wandb unless the sweep itself sets track.wandb.
    quiet = [] if "track.wandb" in trial.params else ["track.wandb=disabled"]
    overrides = [*trial.overrides(), f"name={trial.name}", *quiet, *extra]
    return [*edgekit, str(sweep.recipe_path), *overrides, "--runs-dir", str(sweep_dir)]


def claim(sweep_dir: Path, sweep: Sweep, trials: list[Trial]) -> None:
    """Record what this sweep folder holds; refuse to mix in trials of a changed sweep file or recipe."""
    index = sweep_dir / INDEX_FILE
    space = json.loads(json.dumps({**to_wandb(sweep), "run_cap": None, "seed": sweep.file.sampler_seed}))
    base = load(sweep.recipe_path).model_dump(mode="json")
    if index.is_file():
        old = json.loads(index.read_text())
        if old["space"] != space or old["recipe"] != base:
            what = "sweep file" if old["space"] != space else f"base recipe {sweep.recipe_path}"
            raise EdgekitError(
                f"{sweep_dir}: was started with a different {what}; to keep both, set a new name: in "
                f"{sweep.path} or pass --runs-dir"
            )
        trials_done = old["trials"]
    elif sweep_dir.exists() and any(sweep_dir.iterdir()):
        raise EdgekitError(
            f"{sweep_dir}: exists and is not a sweep folder (no {INDEX_FILE}); pass --runs-dir"
        )
    else:
        trials_done = {}
    sweep_dir.mkdir(parents=True, exist_ok=True)
    listed = {**trials_done, **{t.name: t.params for t in trials}}
    write_json(index, {"space": space, "recipe": base, "trials": listed})


def _env(processes: int) -> dict[str, str]:
    """Divide the cores among the processes: torch in each would otherwise start one thread per core. A
    user's own OMP_NUM_THREADS caps the share: on cores busy with other work, more threads than free cores
    make OpenMP's threads wait on each other (epochs measured 30× slower)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    share = max(1, cores // processes)
    own = os.environ.get("OMP_NUM_THREADS", "")
    threads = str(min(share, int(own)) if own.isdigit() and int(own) > 0 else share)
    return {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1"}


def _run_all(jobs: list, sweep_dir: Path, env: dict, parallel: int, console: Console) -> list[str]:
    """Run the trial commands `parallel` at a time; returns the names of the trials that failed."""
    (sweep_dir / "logs").mkdir(exist_ok=True)
    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # A pruner stops a trial with SIGINT. A sweep started in the background by a script inherits SIGINT
        # ignored, and so would its trials (an ignored signal survives exec), which then run to the end:
        # take Python's default back for them. A handler the caller installed is left alone.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    stop, failed = threading.Event(), []
    pool = ThreadPoolExecutor(parallel)
    try:
        futures = {
            pool.submit(
                _run_one, job[1], sweep_dir / "logs" / f"{job[0].name}.log", env, stop, *job[2:]
            ): job[0]
            for job in jobs
        }
        for n, future in enumerate(as_completed(futures), 1):
            trial, code = futures[future], future.result()
            state = Run(sweep_dir / trial.name).status().stop or "interrupted"
            if (sweep_dir / trial.name / PRUNED_FILE).is_file():
                state = "pruned"
            elif code != 0 and state not in DONE:  # a diverged trial exits with an error but is done
                failed.append(trial.name)
                state = f"failed (exit code {code})"
            console.print(f"[{n}/{len(jobs)}] {trial.name}: {state}", highlight=False)
    except KeyboardInterrupt:
        # The running trials got the same Ctrl-C and write their summaries; start no more and wait for them.
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        console.print("sweep interrupted: run the same command again to resume it")
        raise
    pool.shutdown()
    return failed


def _run_one(cmd: list[str], log: Path, env: dict, stop: threading.Event, check=None) -> int | None:
    """One trial process; `check()` (a pruner's) is asked every POLL_S whether to stop it early, which
    Ctrl-C does (the run writes its summary and keeps its checkpoints)."""
    if stop.is_set():
        return None
    with log.open("a") as f:
        process = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        while process.poll() is None:
            try:
                process.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                if check is not None and check():
                    process.send_signal(signal.SIGINT)
                    process.wait()
        return process.returncode


# ---------------------------------------------------------------------------------------------- wandb
def to_wandb(sweep: Sweep) -> dict[str, Any]:
    """The sweep as wandb's config: `recipe` and `sampler_seed` are edgekit's; `count` becomes `run_cap`."""
    f = sweep.file
    config: dict[str, Any] = {
        "name": sweep.name,
        "method": f.method,
        "metric": {"name": f.metric.name, "goal": f.metric.goal},
        "parameters": {k: dict(v) for k, v in f.parameters.items()},
    }
    if f.description:
        config["description"] = f.description
    if f.count:
        config["run_cap"] = f.count
    if f.early_terminate:
        config["early_terminate"] = f.early_terminate.model_dump(exclude_none=True)
    return config


def start_wandb(sweep: Sweep, runs_dir: Path, agents: int, count: int | None, console: Console) -> list:
    """Create the sweep on wandb's server and run `agents` local agents, one process each."""
    import wandb

    sweep.check_space()
    track = load(sweep.recipe_path).track
    config = to_wandb(sweep)
    if count:
        config["run_cap"] = count
    sweep_id = wandb.sweep(config, entity=track.entity, project=track.project)
    join = f"edgekit sweep {sweep.path} --join {sweep_id}"
    # soft_wrap: the join command stays on one line, ready to copy to another machine
    console.print(
        f"wandb sweep [bold]{sweep_id}[/] ({track.project}); more agents, on any machine: {join}",
        soft_wrap=True,
    )
    sweep_dir = runs_dir / sweep.name
    (sweep_dir / "logs").mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "edgekit", "sweep", str(sweep.path), "--join", sweep_id]
    cmd += ["--runs-dir", str(runs_dir), *(["--count", str(count)] if count else [])]
    env = _env(agents)
    logs = [sweep_dir / "logs" / f"agent-{i}.log" for i in range(agents)]
    codes = [p.wait() for p in [spawn(cmd, log if agents > 1 else None, env) for log in logs]]
    found = sweep_report.write(sweep_dir, sweep, console)
    if any(codes):
        raise EdgekitError(f"sweep {sweep_id}: {sum(c != 0 for c in codes)} of {agents} agents failed")
    return found


def spawn(cmd: list[str], log: Path | None, env: dict) -> subprocess.Popen:
    """One agent process; with several, each writes to its own log rather than interleaving."""
    out = log.open("a") if log is not None else None
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if out else None, env=env)


def join_wandb(sweep: Sweep, sweep_id: str, runs_dir: Path, count: int | None, console: Console) -> list:
    """One wandb agent in this process: each trial wandb hands out trains through `edgekit train`'s code."""
    import wandb

    track = load(sweep.recipe_path).track
    trial = functools.partial(agent_trial, sweep, runs_dir, console)
    wandb.agent(sweep_id, function=trial, entity=track.entity, project=track.project, count=count)
    sweep_dir = runs_dir / sweep.name
    if not sweep_dir.is_dir():
        return []
    return sweep_report.write(sweep_dir, sweep, console)


def agent_trial(sweep: Sweep, runs_dir: Path, console: Console) -> Path:
    """The function a wandb agent calls per trial: its values from the agent's run, a run folder as usual."""
    import wandb

    from edgekit.train import run as train

    run = wandb.init()  # inside an agent: the run wandb made for this trial, with its values in config
    params = {key: run.config[key] for key in sweep.file.parameters}
    trial = sweep.trial(params, run.id)
    overrides = [*trial.overrides(), f"name={trial.name}", "track.wandb=online"]
    return train.start(sweep.recipe_path, overrides, runs_dir / sweep.name, console)
