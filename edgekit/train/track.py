"""Where epoch metrics go: `metrics.csv`, `curves.png`, wandb, and the live terminal table."""

from __future__ import annotations

import csv
import os
import secrets
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

COLUMNS = [
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "lr",
    "images_per_s",
    "epoch_s",
    "elapsed_s",
    "val_loss_raw",  # with track.raw_val and train.ema: the raw weights' val; empty otherwise
    "val_acc_raw",
]
LIVE_ROWS = 12  # the live table shows the newest epochs only: a 2000-epoch run stays readable


def _fmt(value: float | None, kind: str) -> str:
    if value is None:  # val on an epoch train.val_every skips
        return "—"
    formats = {"loss": "{:.4f}", "acc": "{:.2%}", "lr": "{:.2e}", "rate": "{:,.0f}"}
    return formats[kind].format(value)


def _eta(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Tracker:
    """Fans each epoch's metrics out to the CSV file, wandb and the console."""

    def __init__(
        self,
        run_dir: Path,
        recipe: dict[str, Any],
        wandb_mode: str,
        total_epochs: int,
        console: Console,
        extra: dict[str, Any],
        resume_epoch: int = 0,
    ):
        self.run_dir, self.total, self.console = run_dir, total_epochs, console
        self.every = _every(total_epochs, recipe.get("train", {}).get("val_every", 1))
        self.csv_path = run_dir / "metrics.csv"
        self.rows = _read_rows(self.csv_path, upto=resume_epoch)
        _write_rows(self.csv_path, self.rows)  # drops rows a killed run wrote after its last checkpoint
        self.start_epoch, self.started = resume_epoch, time.perf_counter()
        self.wandb = _start_wandb(run_dir, recipe, wandb_mode, extra)
        self.live = Live(self._table(), console=console, refresh_per_second=4, transient=False)
        self.interactive = console.is_terminal
        if self.interactive:
            self.live.start()
        elif self.every > 1:  # say so, rather than let a reader think epochs went missing
            console.print(
                f"showing epochs 1-3, then every {self.every}th, and the last (all in metrics.csv)",
                highlight=False,
            )

    def log(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        with self.csv_path.open("a", newline="") as f:
            csv.DictWriter(f, COLUMNS).writerow(row)
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
        if self.interactive:
            self.live.update(self._table())
        elif _should_print(int(row["epoch"]), self.total, self.every):
            self.console.print(self._line(row), highlight=False)

    def _eta_s(self, epoch: int) -> float:
        done = epoch - self.start_epoch
        spent = time.perf_counter() - self.started
        return spent / max(done, 1) * (self.total - epoch)

    def _line(self, r: dict[str, float]) -> str:
        return (
            f"epoch {int(r['epoch'])}/{self.total}  loss {_fmt(r['train_loss'], 'loss')}  "
            f"acc {_fmt(r['train_acc'], 'acc')}  val_loss {_fmt(r.get('val_loss'), 'loss')}  "
            f"val_acc {_fmt(r.get('val_acc'), 'acc')}  lr {_fmt(r['lr'], 'lr')}  "
            f"{_fmt(r['images_per_s'], 'rate')} img/s  eta {_eta(self._eta_s(int(r['epoch'])))}"
        )

    def _table(self) -> Table:
        table = Table(title=f"{self.run_dir}", title_justify="left")
        for name in ["epoch", "loss", "acc", "val loss", "val acc", "lr", "img/s", "ETA"]:
            table.add_column(name, justify="right")
        for r in self.rows[-LIVE_ROWS:]:
            table.add_row(
                f"{int(r['epoch'])}/{self.total}",
                _fmt(r["train_loss"], "loss"),
                _fmt(r["train_acc"], "acc"),
                _fmt(r.get("val_loss"), "loss"),
                _fmt(r.get("val_acc"), "acc"),
                _fmt(r["lr"], "lr"),
                _fmt(r["images_per_s"], "rate"),
                _eta(self._eta_s(int(r["epoch"]))),
            )
        return table

    def finish(self, summary: dict[str, Any]) -> None:
        if self.interactive:
            self.live.stop()
        plot_curves(self.rows, self.run_dir / "curves.png")
        if self.wandb is not None:
            import wandb

            self.wandb.summary.update(summary)
            self.wandb.log({"curves": wandb.Image(str(self.run_dir / "curves.png"))})
            self.wandb.finish()


class Silent:
    """The tracker of DDP ranks other than 0: they keep the rows, rank 0 writes and shows them."""

    def __init__(self):
        self.rows: list[dict[str, float]] = []
        self.started = time.perf_counter()

    def log(self, row: dict[str, float]) -> None:
        self.rows.append(row)

    def finish(self, summary: dict[str, Any]) -> None:
        pass


def _every(total: int, val_every: int) -> int:
    # Without a terminal (CI, logs), print about 50 lines however long the run, on epochs that score val.
    return max(1, -(-(total // 50) // val_every)) * val_every


def _should_print(epoch: int, total: int, every: int) -> bool:
    return epoch == total or epoch <= 3 or epoch % every == 0


def _read_rows(path: Path, upto: int) -> list[dict[str, float]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = [{k: float(v) for k, v in r.items() if v} for r in csv.DictReader(f)]
    return [r for r in rows if r["epoch"] <= upto]


def _write_rows(path: Path, rows: list[dict[str, float]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _start_wandb(run_dir: Path, recipe: dict[str, Any], mode: str, extra: dict[str, Any]):
    if mode == "disabled":
        return None
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    if wandb.run is not None:  # a wandb sweep agent started this trial's run: log into it
        wandb.run.config.update(recipe, allow_val_change=True)
        wandb.run.summary.update(extra)
        return wandb.run
    track = recipe.get("track", {})
    run = wandb.init(
        project=track.get("project", "edgekit"),
        entity=track.get("entity"),
        name=run_dir.name,
        tags=track.get("tags") or None,
        config=recipe,
        mode=mode,
        dir=str(run_dir),
        resume="allow",
        id=_wandb_id(run_dir),
    )
    run.summary.update(extra)
    return run


def _wandb_id(run_dir: Path) -> str:
    # One wandb run per run folder, so `--resume` continues the same wandb run.
    id_file = run_dir / "wandb_id.txt"
    if not id_file.exists():
        id_file.write_text(secrets.token_hex(4))
    return id_file.read_text().strip()


def plot_curves(rows: list[dict[str, float]], path: Path) -> None:
    """Train/val loss, accuracy and LR against epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, title in [(axes[0], "loss", "loss"), (axes[1], "acc", "accuracy")]:
        ax.plot(epochs, [r[f"train_{key}"] for r in rows], label="train")
        scored = [r for r in rows if f"val_{key}" in r]  # train.val_every: val on some epochs only
        ax.plot([r["epoch"] for r in scored], [r[f"val_{key}"] for r in scored], label="val")
        if scored and all(f"val_{key}_raw" in r for r in scored):  # track.raw_val: the weights under the EMA
            raw = [r[f"val_{key}_raw"] for r in scored]
            ax.plot([r["epoch"] for r in scored], raw, label="val, raw weights", linestyle=":")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend()
    axes[2].plot(epochs, [r["lr"] for r in rows])
    axes[2].set_title("learning rate")
    axes[2].set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
