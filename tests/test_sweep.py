"""`edgekit sweep`: local grid/random trials as run folders, resume, ranking, bad input, wandb (mocked)."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from edgekit.cli import app
from edgekit.errors import EdgekitError
from edgekit.orchestrate import bayes, sweep, sweep_run
from edgekit.train import run as train_run
from edgekit.train.track import COLUMNS, Tracker

ROOT = Path(__file__).parent.parent
runner = CliRunner()


def _sweep_file(tmp_path: Path, name: str = "s", **fields) -> Path:
    """A sweep over lenet_2k made tiny (4-8 channels, 2 epochs) so each trial takes a second or two."""
    spec = {
        "recipe": str(ROOT / "recipes" / "lenet_2k.yaml"),
        "method": "grid",
        "metric": {"name": "val_acc", "goal": "maximize"},
        "parameters": {
            "train.optimizer.lr": {"values": [0.05, 0.3]},
            "train.epochs": {"value": 2},
            "model.channels": {"value": [4, 8]},
        },
    } | fields
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _interrupt_after_first_epoch(monkeypatch):
    """Ctrl-C as the second epoch is logged: last.pt holds epoch 1, summary.json says interrupted."""
    log = Tracker.log

    def log_then_stop(self, row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt
        log(self, row)

    monkeypatch.setattr(Tracker, "log", log_then_stop)


def test_local_sweep_resumes_a_killed_trial_ranks_and_never_reruns_finished_ones(tmp_path, monkeypatch):
    path, runs = _sweep_file(tmp_path), tmp_path / "runs"
    s = sweep.read(path)
    first, second = (runs / "s" / t.name for t in s.trials())
    assert (first.name, second.name) == ("00_lr-0.05", "01_lr-0.3")

    # A sweep was started and killed (as by Ctrl-C) during the second trial's epoch 2.
    sweep_run.claim(runs / "s", s, s.trials())
    trial = s.trials()[1]
    with monkeypatch.context() as m:
        _interrupt_after_first_epoch(m)
        with pytest.raises(KeyboardInterrupt):
            overrides = [*trial.overrides(), f"name={trial.name}", "track.wandb=disabled"]
            train_run.start(s.recipe_path, overrides, runs / "s", Console(quiet=True))
    assert sweep_run.trial_state(first) == "new" and sweep_run.trial_state(second) == "resume"

    result = runner.invoke(app, ["sweep", str(path), "--parallel", "2", "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    assert "0 already done; running 2 (1 resumed)" in result.output
    for run_dir in (first, second):
        assert json.loads((run_dir / "summary.json").read_text())["stopped"] == "finished"
        assert (run_dir / "best.pt").is_file() and (run_dir / "metrics.csv").is_file()
    history = [json.loads(line) for line in (second / "history.jsonl").read_text().splitlines()]
    assert [h["resumed_at_epoch"] for h in history] == [1]  # continued from its checkpoint, not restarted
    assert not (first / "history.jsonl").exists()

    rows = list(csv.DictReader((runs / "s" / "sweep.csv").open()))
    best_first = sorted([first, second], key=lambda run_dir: -_val(run_dir))
    assert [r["trial"] for r in rows] == [run_dir.name for run_dir in best_first]
    assert [r["rank"] for r in rows] == ["1", "2"]
    assert {r["train.optimizer.lr"] for r in rows} == {"0.05", "0.3"}
    assert all(int(r["params"]) > 0 and int(r["macs"]) > 0 for r in rows)
    assert (runs / "s" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ranked by val_acc" in result.output and "MACs" in result.output

    mtimes = [(d / "last.pt").stat().st_mtime_ns for d in (first, second)]
    result = runner.invoke(app, ["sweep", str(path), "--runs-dir", str(runs)])
    assert result.exit_code == 0 and "2 already done; running 0 (0 resumed)" in result.output
    assert [(d / "last.pt").stat().st_mtime_ns for d in (first, second)] == mtimes  # nothing rerun


def _val(run_dir: Path) -> float:
    return json.loads((run_dir / "summary.json").read_text())["val_acc"]


def test_trial_states(tmp_path):
    assert sweep_run.trial_state(tmp_path / "none") == "new"
    (tmp_path / "made").mkdir()
    (tmp_path / "made" / "recipe.yaml").write_text("{}")
    assert sweep_run.trial_state(tmp_path / "made") == "restart"  # killed before its first checkpoint
    diverged = {"stopped": "loss became nan at epoch 3; stopped", "epochs": 2}
    (tmp_path / "made" / "summary.json").write_text(json.dumps(diverged))
    assert sweep_run.trial_state(tmp_path / "made") == "done"


def test_trial_commands(tmp_path):
    s, sweep_dir = sweep.read(_sweep_file(tmp_path)), tmp_path / "runs" / "s"
    trial = s.trials()[1]
    (sweep_dir / trial.name).mkdir(parents=True)
    (sweep_dir / trial.name / "recipe.yaml").write_text("{}")
    cmd = sweep_run._command(s, sweep_dir, trial, "restart")
    assert not (sweep_dir / trial.name).exists()  # it had no checkpoint: started again under its own name
    assert cmd[1:4] == ["-m", "edgekit", "train"] and cmd[4] == str(s.recipe_path)
    assert cmd[5:] == [
        "train.optimizer.lr=0.3",
        "train.epochs=2",
        "model.channels=[4, 8]",
        f"name={trial.name}",
        "track.wandb=disabled",
        "--runs-dir",
        str(sweep_dir),
    ]
    assert sweep_run._command(s, sweep_dir, trial, "resume")[4:] == ["--resume", str(sweep_dir / trial.name)]


def test_grid_random_and_names(tmp_path):
    path = _sweep_file(
        tmp_path,
        method="random",
        count=5,
        parameters={
            "train.optimizer.lr": {"distribution": "log_uniform_values", "min": 0.001, "max": 0.1},
            "model.channels": {"values": [[4, 8], [8, 16]]},
            "train.epochs": {"min": 1, "max": 3},
        },
    )
    trials = sweep.read(path).trials()
    assert len(trials) == 5 and trials == sweep.read(path).trials()  # same draws: a sweep can resume
    assert trials[:3] == sweep.read(path).trials(count=3)  # a smaller count keeps the same first trials
    assert all(0.001 <= t.params["train.optimizer.lr"] <= 0.1 for t in trials)
    assert all(t.params["train.epochs"] in (1, 2, 3) for t in trials)
    assert trials[0].name.startswith("00_lr-") and "_channels-" in trials[0].name
    assert "model.channels=[4, 8]" in sweep.Trial("x", {"model.channels": [4, 8]}).overrides()
    grid = sweep.read(_sweep_file(tmp_path, parameters={"model.norm": {"values": ["batch", "group"]}}))
    assert [t.params for t in grid.trials()] == [{"model.norm": "batch"}, {"model.norm": "group"}]


def test_local_bayes_is_reproducible_and_resumes_without_rerunning(tmp_path):
    """TPE (Optuna) proposes the trials from the finished ones; a fixed sampler_seed gives the same trials,
    and a rerun lists what exists instead of running it again."""
    space = {
        "train.optimizer.lr": {"distribution": "log_uniform_values", "min": 0.01, "max": 0.5},
        "model.channels": {"values": [[4, 8], [8, 8]]},  # list values: Optuna sees their index
        "train.epochs": {"value": 1},
    }
    path = _sweep_file(tmp_path, method="bayes", count=3, sampler_seed=7, parameters=space)
    tables = {}
    for runs in ("a", "b"):
        result = runner.invoke(
            app, ["sweep", str(path), "--parallel", "2", "--runs-dir", str(tmp_path / runs)]
        )
        assert result.exit_code == 0, result.output
        index = json.loads((tmp_path / runs / "s" / "sweep.json").read_text())["trials"]
        tables[runs] = index
    assert len(tables["a"]) == 3 and tables["a"] == tables["b"]  # same seed, same results: same trials
    for params in tables["a"].values():
        assert 0.01 <= params["train.optimizer.lr"] <= 0.5 and params["model.channels"] in ([4, 8], [8, 8])
    rows = list(csv.DictReader((tmp_path / "a" / "s" / "sweep.csv").open()))
    assert len(rows) == 3 and all(r["val_acc"] for r in rows)
    # What each parameter is worth (Optuna's fANOVA over the finished trials) and the metric against each.
    weights = json.loads((tmp_path / "a" / "s" / "importance.json").read_text())
    assert set(weights) == {"train.optimizer.lr", "model.channels"} and sum(
        weights.values()
    ) == pytest.approx(1)
    assert (tmp_path / "a" / "s" / "params.png").read_bytes()[:4] == b"\x89PNG"
    again = runner.invoke(app, ["sweep", str(path), "--runs-dir", str(tmp_path / "a")])
    assert again.exit_code == 0 and "3 already listed" in " ".join(again.output.split())
    assert len([p for p in (tmp_path / "a" / "s").iterdir() if (p / "recipe.yaml").is_file()]) == 3


def test_importance_reads_runs_whose_dict_values_came_back_with_defaults(tmp_path):
    """A run's recipe holds a dict the sweep set ({hflip: true}) with every default filled in; the
    importance still knows which of the sweep's values it was (no training: rows as the report reads them)."""
    from edgekit.orchestrate import sweep_insight

    space = {
        "train.optimizer.lr": {"values": [0.05, 0.3]},
        "data.augment": {"values": [{"hflip": True}, {"hflip": False}]},
        "train.label_smoothing": {"value": 0.05},
        "train.scheduler": {"value": {"name": "cosine"}},  # a constant dict: always Optuna's 0
    }
    s = sweep.read(_sweep_file(tmp_path, method="bayes", count=4, parameters=space))
    resolved = {"crop_padding": 0, "rotate": 0.0, "mixup": 0.0}
    rows = [
        {
            "train.optimizer.lr": lr,
            "data.augment": {**resolved, "hflip": flip},
            "train.label_smoothing": 0.05,
            "train.scheduler": {"name": "cosine", "warmup_epochs": 0},
            "val_acc": 0.5 + lr + 0.1 * flip,
            "status": "finished",
        }
        for lr in (0.05, 0.3)
        for flip in (True, False)
    ]
    weights = sweep_insight.importance(rows, s)
    assert set(weights) == {"train.optimizer.lr", "data.augment"} and sum(weights.values()) == pytest.approx(
        1
    )
    with pytest.raises(EdgekitError, match="none of the sweep's values"):
        bayes.encode(s, {**rows[0], "train.optimizer.lr": 0.1})


def test_bayes_never_trains_a_point_twice_and_stops_when_the_space_is_spent(tmp_path):
    """TPE re-proposes points it has tried; they are told their earlier result, not trained again, and a
    2-point space asked for 4 trials stops at 2."""
    space = {"train.optimizer.lr": {"values": [0.05, 0.3]}, "train.epochs": {"value": 1}}
    path = _sweep_file(tmp_path, method="bayes", count=4, sampler_seed=0, parameters=space)
    result = runner.invoke(app, ["sweep", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "stopping at 2 of 4 trials" in " ".join(result.output.split())
    index = json.loads((tmp_path / "runs" / "s" / "sweep.json").read_text())["trials"]
    assert sorted(p["train.optimizer.lr"] for p in index.values()) == [0.05, 0.3]
    assert len([p for p in (tmp_path / "runs" / "s").iterdir() if (p / "recipe.yaml").is_file()]) == 2


def test_hyperband_stops_a_stalled_trial_keeps_the_learners_and_never_reruns_it(tmp_path):
    """early_terminate: hyperband (Optuna's HyperbandPruner fed each epoch's val_acc from metrics.csv)
    stops a trial whose lr is too small to learn; pruned trials are marked in their folder, the table
    and sweep.csv, and a rerun leaves them alone."""
    space = {
        # Distinct points (a repeated one is never trained twice): three that learn, three that stall.
        "train.optimizer.lr": {"values": [0.1, 0.2, 0.3, 0.0000001, 0.0000002, 0.0000003]},
        "train.epochs": {"value": 8},
        "train.batch_size": {"value": 8},  # epochs slow enough (~0.5 s) for the 0.5 s polls to act in time
        "model.channels": {"value": [4, 8]},
    }
    stop = {"type": "hyperband", "min_iter": 1, "eta": 2, "max_iter": 2}
    path = _sweep_file(
        tmp_path, method="bayes", count=6, sampler_seed=0, parameters=space, early_terminate=stop
    )
    runs = tmp_path / "runs"
    # Started as a script's background job (`edgekit sweep … &`) is: with SIGINT ignored, which the
    # trials would inherit and so never stop when pruned.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result = runner.invoke(app, ["sweep", str(path), "--runs-dir", str(runs)])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.exit_code == 0, result.output
    rows = {r["trial"]: r for r in csv.DictReader((runs / "s" / "sweep.csv").open())}
    pruned = [name for name, r in rows.items() if r["status"] == "pruned"]
    assert pruned and all("e-07" in name for name in pruned)  # only the stalled lrs are stopped
    assert all(rows[n]["status"] == "finished" for n in rows if "e-07" not in n)
    for name in pruned:
        assert (runs / "s" / name / "pruned.json").is_file() and int(rows[name]["epochs"]) < 8
    # Each trial logs its raw weights' val for the pruner (a no-op here: these trials have no EMA).
    assert all(yaml.safe_load((runs / "s" / n / "recipe.yaml").read_text())["track"]["raw_val"] for n in rows)
    again = runner.invoke(app, ["sweep", str(path), "--runs-dir", str(runs)])
    assert again.exit_code == 0 and "6 already listed" in " ".join(again.output.split())
    assert {r["trial"]: r["status"] for r in csv.DictReader((runs / "s" / "sweep.csv").open())} == {
        n: r["status"] for n, r in rows.items()
    }


def test_the_pruner_follows_the_raw_weights_when_a_trial_logs_them_beside_its_ema(tmp_path):
    """An EMA's val lags its weights, so at hyperband's first rungs every trial's average scores alike;
    with track.raw_val the trial's curve is its raw weights' val (and val_acc without it)."""

    def trial(name: str, rows: list[dict]) -> Path:
        (tmp_path / name).mkdir()
        with (tmp_path / name / "metrics.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        return tmp_path / name

    ema = trial(
        "ema",
        [
            {"epoch": 1, "val_acc": 0.11, "val_acc_raw": 0.62},
            {"epoch": 2, "val_acc": 0.12, "val_acc_raw": 0.81},
        ],
    )
    assert bayes.curve(ema, "val_acc") == {1: 0.62, 2: 0.81}
    plain = trial("plain", [{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.7}])
    assert bayes.curve(plain, "val_acc") == {1: 0.5, 2: 0.7}


def test_two_agents_share_one_study_through_a_sqlite_file(tmp_path):
    """`--storage sqlite:///…`: two sweep processes on this machine draw from one Optuna study, so they
    split the trials between them instead of each running the whole sweep."""
    import optuna

    # 3 epochs a trial: the first agent is still busy when the second has started and joined.
    space = {"train.optimizer.lr": {"values": [0.05, 0.1, 0.2, 0.3]}, "train.epochs": {"value": 3}}
    path = _sweep_file(tmp_path, method="bayes", count=4, parameters=space)
    url = f"sqlite:///{tmp_path / 'study.db'}"

    def agent(runs: str, *extra: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "edgekit", "sweep", str(path), "--storage", url, *extra]
        return subprocess.Popen(
            [*cmd, "--runs-dir", str(tmp_path / runs)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    first = agent("a")  # starts the study; the second joins it, as agents on other machines would
    for _ in range(600):  # read with sqlite3 alone: opening it with Optuna would race to create its tables
        try:
            with sqlite3.connect(tmp_path / "study.db") as db:
                if db.execute("SELECT 1 FROM studies WHERE study_name = 's'").fetchone():
                    break
        except sqlite3.OperationalError:  # no tables yet
            pass
        time.sleep(0.1)
    agents = [first, agent("b", "--join-study")]
    outputs = [agent.communicate(timeout=300)[0] for agent in agents]
    assert all(agent.returncode == 0 for agent in agents), outputs
    trials = optuna.load_study(study_name="s", storage=url).trials
    trials = [t for t in trials if "repeat_of" not in t.user_attrs]  # told an earlier result, not trained
    assert 4 <= len(trials) <= 5  # both may ask at the last free place: one trial over at most
    ran = {
        a: sorted(p.name for p in (tmp_path / a / "s").iterdir() if (p / "recipe.yaml").is_file())
        for a in "ab"
    }
    assert ran["a"] and ran["b"] and not set(ran["a"]) & set(ran["b"])  # shared out, none twice
    assert len(ran["a"]) + len(ran["b"]) == len(trials)
    joined = runner.invoke(app, ["sweep", str(path), "--join-study", "--runs-dir", str(tmp_path / "c")])
    assert (
        joined.exit_code == 2
        and "--join-study: name the shared study's database with --storage" in joined.output
    )


def test_storage_sqlite_keeps_the_study_in_the_sweep_folder(tmp_path):
    """`--storage sqlite`: the bayes study is a SQLite file in the sweep folder, and a rerun finds it
    there and runs no trial again."""
    import optuna

    path = _sweep_file(tmp_path, method="bayes", count=2)
    args = ["sweep", str(path), "--storage", "sqlite", "--runs-dir", str(tmp_path / "runs")]
    assert runner.invoke(app, args).exit_code == 0
    db = tmp_path / "runs" / "s" / "study.db"
    trials = optuna.load_study(study_name="s", storage=f"sqlite:///{db}").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert len(optuna.load_study(study_name="s", storage=f"sqlite:///{db}").trials) == 2


def test_early_terminate_needs_bayes_locally(tmp_path):
    path = _sweep_file(tmp_path, early_terminate={"type": "hyperband", "min_iter": 1})
    result = runner.invoke(app, ["sweep", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "early_terminate works locally with method: bayes" in result.output


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"method": "grdi"}, "method: unknown sweep method 'grdi' (did you mean 'grid'?)"),
        ({"parameters": {"train.optimizer.lrr": {"values": [0.1]}}}, "train.optimizer.lrr: unknown key"),
        ({"parameters": {"model.norm": {"values": ["batch", "bogus"]}}}, "model.norm = 'bogus'"),
        ({"parameters": {"train.optimizer.lr": {"values": []}}}, "parameters.train.optimizer.lr.values = []"),
        ({"parameters": {"train.optimizer.lr": {"min": 0.1, "max": 0.5}}}, "grid search needs `values:"),
        ({"method": "bayes"}, "method 'bayes' needs a number of trials"),
        (
            {"method": "bayes", "count": 2, "parameters": {"seed": {"distribution": "normal", "mu": 1}}},
            "parameters.seed: method bayes cannot model distribution 'normal' locally",
        ),
        ({"method": "random"}, "method 'random' needs a number of trials"),
        ({"metric": {"name": "val_accuracy"}}, "metric.name = 'val_accuracy'"),
        ({"parameters": {"seed": {"distribution": "unifrom"}}}, "unknown distribution 'unifrom'"),
        ({"recipes": "x.yaml"}, "recipes: unknown key"),
        ({"parameters": {"name": {"value": "x"}}}, "parameters.name: the run name is set per trial"),
    ],
)
def test_bad_sweep_files_are_one_line_exit_2_and_write_nothing(tmp_path, fields, message):
    path = _sweep_file(tmp_path, **fields)
    result = runner.invoke(app, ["sweep", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_bad_options_and_changed_sweep_file(tmp_path):
    path, runs = _sweep_file(tmp_path), tmp_path / "runs"
    result = runner.invoke(app, ["sweep", str(path), "--agents", "2", "--runs-dir", str(runs)])
    assert result.exit_code == 2 and "--agents 2: runs wandb agents, add --wandb" in result.output
    result = runner.invoke(app, ["sweep", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2 and "no such sweep file" in result.output
    # A sweep folder started from another version of the file is not mixed with this one.
    s = sweep.read(path)
    sweep_run.claim(runs / "s", s, s.trials())
    changed = _sweep_file(tmp_path, parameters={"train.optimizer.lr": {"values": [0.01]}})
    result = runner.invoke(app, ["sweep", str(changed), "--runs-dir", str(runs)])
    assert result.exit_code == 2 and "was started with a different sweep file" in result.output


def test_parallel_trials_divide_the_cores(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert sweep_run._env(2)["OMP_NUM_THREADS"] == str(max(1, cores // 2))
    assert sweep_run._env(1)["OMP_NUM_THREADS"] == str(cores)
    # The user's own setting caps each trial's share; one above the share does not raise it.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert sweep_run._env(1)["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", str(cores + 8))
    assert sweep_run._env(1)["OMP_NUM_THREADS"] == str(cores)


# ------------------------------------------------------------------------------------- wandb (mocked)
class FakeRun:
    def __init__(self, config: dict):
        self.id, self.config, self.summary = "r1", FakeConfig(config), {}
        self.logged, self.finished = [], False

    def log(self, row, step=None):
        self.logged.append((step, row))

    def finish(self):
        self.finished = True


class FakeConfig(dict):
    def update(self, values, allow_val_change=False):
        super().update(values)


def _fake_wandb(monkeypatch, trial_config: dict) -> types.SimpleNamespace:
    calls = types.SimpleNamespace(sweeps=[], agents=[])
    fake = types.ModuleType("wandb")
    fake.run = None

    def init(**kwargs):
        fake.run = fake.run or FakeRun(trial_config)
        return fake.run

    def agent(sweep_id, function, entity=None, project=None, count=None):
        calls.agents.append((sweep_id, project, count))
        function()

    def sweep_(config, entity=None, project=None):
        calls.sweeps.append((config, entity, project))
        return "sw42"

    fake.init, fake.agent, fake.sweep, fake.Image = init, agent, sweep_, lambda path: path
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_SILENT", "true")
    calls.module = fake
    return calls


def test_translation_to_wandb_config(tmp_path):
    path = _sweep_file(tmp_path, method="bayes", count=8, description="lr")
    assert sweep_run.to_wandb(sweep.read(path)) == {
        "name": "s",
        "method": "bayes",
        "metric": {"name": "val_acc", "goal": "maximize"},
        "parameters": {
            "train.optimizer.lr": {"values": [0.05, 0.3]},
            "train.epochs": {"value": 2},
            "model.channels": {"value": [4, 8]},
        },
        "description": "lr",
        "run_cap": 8,
    }
    loss = _sweep_file(tmp_path, "t", metric={"name": "test_loss"})
    with pytest.raises(EdgekitError, match="metric.name = test_loss ranks the trials on the test split"):
        sweep.read(loss)  # choosing on test needs saying so
    on_test = sweep.read(loss, rank_on_test=True)
    assert sweep_run.to_wandb(on_test)["metric"] == {"name": "test_loss", "goal": "minimize"}


def test_wandb_creates_the_sweep_and_starts_one_agent_process_each(tmp_path, monkeypatch):
    calls = _fake_wandb(monkeypatch, {})
    spawned = []

    def spawn(cmd, log, env):
        spawned.append((cmd, env["OMP_NUM_THREADS"]))
        return types.SimpleNamespace(wait=lambda: 0)

    monkeypatch.setattr(sweep_run, "spawn", spawn)
    path = _sweep_file(tmp_path, method="bayes")
    args = ["sweep", str(path), "--wandb", "--agents", "2", "--count", "6", "--runs-dir", str(tmp_path / "r")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    config, _, project = calls.sweeps[0]
    assert "recipe" not in config and config["method"] == "bayes" and config["run_cap"] == 6
    assert project == "edgekit"
    assert len(spawned) == 2
    cmd = spawned[0][0]
    assert cmd[1:4] == ["-m", "edgekit", "sweep"] and cmd[cmd.index("--join") + 1] == "sw42"
    assert "sw42" in result.output and "--join sw42" in result.output
    result = runner.invoke(app, ["sweep", str(path), "--wandb", "--parallel", "2"])
    assert result.exit_code == 2 and "with --wandb use --agents N" in result.output


def test_wandb_agent_trial_trains_a_run_folder_through_train(tmp_path, monkeypatch):
    values = {"train.optimizer.lr": 0.05, "train.epochs": 1, "model.channels": [4, 8]}
    calls = _fake_wandb(monkeypatch, values)
    path = _sweep_file(tmp_path)
    result = runner.invoke(app, ["sweep", str(path), "--join", "sw42", "--runs-dir", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert calls.agents == [("sw42", "edgekit", None)]
    run_dir = tmp_path / "r" / "s" / "r1_lr-0.05"
    assert json.loads((run_dir / "summary.json").read_text())["epochs"] == 1
    fake = calls.module.run
    assert fake.config["track"]["wandb"] == "online" and fake.config["train"]["optimizer"]["lr"] == 0.05
    assert fake.logged[0][0] == 1 and "val_acc" in fake.logged[0][1]
    assert "test_acc" in fake.summary and fake.finished
