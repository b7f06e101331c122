"""Training throughput: edgekit's trainer against the per-sample DataLoader loop people write first.

    python bench/train_throughput.py                    # 30-epoch side by side + a 2000-epoch CLI run
    python bench/train_throughput.py --epochs 50 --long-epochs 2000 --out /tmp/tt.md
    python bench/train_throughput.py --quick            # smoke test (3 epochs, 20-epoch run), prints only

Both sides train lenet_2k (recipes/lenet_2k.yaml: same model, split, augmentation, optimizer, loss,
batch size) on the CPU, one after the other in one process, for the same number of epochs: edgekit's
trainer (`edgekit.train.run.start`, what `edgekit train` calls) and a per-sample torchvision.transforms.v2
Dataset + DataLoader + plain loop. Images/s = training images per second of train+val epoch time, epoch 1
excluded as warm-up; the ratio is edgekit/naive. Then `edgekit train recipes/lenet_2k.yaml
train.epochs=2000` runs in a subprocess, timed end to end. With CUDA, edgekit also trains mobilenet_tiny
on the GPU (eager and compiled). METHOD below, copied into the Markdown, says exactly what is counted.
Writes bench/train_throughput.md; run it on a quiet machine, as other CPU work distorts every figure.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from common import cpu
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from edgekit.data import Prepared, prepare_for
from edgekit.data.loader import AugmentParams
from edgekit.models import build_model
from edgekit.recipe import load
from edgekit.recipe_schema import Recipe
from edgekit.train.summary import eval_batch

ROOT = Path(__file__).resolve().parent.parent
RECIPE = Path("recipes/lenet_2k.yaml")  # relative to ROOT, as a user types it
CUDA_RECIPE = Path("recipes/mobilenet_tiny.yaml")
WARMUP_EPOCHS = 1
GOAL_RATIO = 8.0
GOAL_EPOCHS, GOAL_SECONDS = 2000, 240.0
METHOD = """\
Both sides: the recipe's model, batch size, SGD (lr, momentum, nesterov, weight decay), label smoothing
and augmentation (crop_padding, rotate, scale), the same digits train/val split, CPU, one process; the
last partial training batch is dropped on both sides (edgekit's loader does so).

- **edgekit**: `edgekit.train.run.start(recipes/lenet_2k.yaml, [train.epochs=N, track.wandb=disabled,
  train.device=cpu], <tmp runs>)`, the code `edgekit train` runs: the uint8 split indexed in place, one
  batched affine (crop shift + rotate + scale) per batch, per-batch cosine schedule, val pass,
  metrics.csv and last.pt/best.pt each epoch, then test accuracy and curves.png.
- **naive**: `Dataset.__getitem__` runs per-sample v2 transforms on one uint8 image (listed below;
  RandomAffine bilinear, as edgekit's grid_sample); `DataLoader(shuffle=True, num_workers=0,
  drop_last=True)`; `opt.zero_grad(); loss = ce(model(x), y); loss.backward(); opt.step()` with
  `torch.optim.SGD(model.parameters(), ...)`, `CosineAnnealingLR` stepped per batch, `loss.item()` and
  accuracy per batch; then a `DataLoader` val pass at edgekit's eval batch size. No checkpoints.
- **images/s**: training images per second of epoch time, an epoch being the training pass plus the
  val pass (edgekit: `epoch_s` in metrics.csv, which excludes its CSV row and checkpoint writes).
  Epoch 1 is a warm-up on both sides and not counted. **wall s**: the whole call (data, model, all
  epochs; for edgekit also checkpoints, test pass and curves.png).
- **long run**: the `edgekit` CLI in a subprocess, wall clock from launch to exit (interpreter start-up
  and imports included)."""


@dataclass
class Result:
    recipe: str
    side: str
    device: str
    epochs: int  # epochs timed, warm-up excluded
    images: int  # training images in those epochs
    seconds: float  # their training + validation time
    wall_s: float  # the whole call
    detail: str = ""  # what was actually run, for the Markdown

    @property
    def rate(self) -> float:
        return self.images / self.seconds


# ── edgekit ──────────────────────────────────────────────────────────────────────────────────────────


def run_edgekit(recipe: Path, epochs: int, extra: list[str], runs: Path, side: str = "edgekit") -> Result:
    """`edgekit train` in this process; the rate from metrics.csv, the wall time of the whole call."""
    from edgekit.train import run

    overrides = [f"train.epochs={epochs}", "track.wandb=disabled", *extra]
    log = Console(file=io.StringIO())  # not a terminal: the trainer prints its ~50 log lines, unseen
    started = time.perf_counter()
    run_dir = run.start(ROOT / recipe, overrides, runs, log)
    wall = time.perf_counter() - started
    with (run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))[WARMUP_EPOCHS:]
    # images_per_s is images seen / epoch_s, so their product is the images trained on that epoch.
    images = sum(round(float(r["images_per_s"]) * float(r["epoch_s"])) for r in rows)
    seconds = sum(float(r["epoch_s"]) for r in rows)
    device = json.loads((run_dir / "summary.json").read_text())["device"]
    return Result(recipe.stem, side, device, len(rows), images, seconds, wall)


# ── the naive loop ───────────────────────────────────────────────────────────────────────────────────


class PerSample(Dataset):
    """One image at a time through per-sample transforms, as the tutorials teach."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: v2.Compose):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), int(self.labels[i])


def naive_transforms(augment: dict, data: Prepared, train: bool) -> v2.Compose:
    """The recipe's augmentation as torchvision v2 per-sample transforms on a uint8 CHW image."""
    a = AugmentParams(**augment)
    if a.mixup or a.cutmix:
        raise SystemExit("naive side: mixup/cutmix mix whole batches, which this loop does not map")
    steps: list[nn.Module] = []
    if train and a.crop_padding:
        steps.append(v2.RandomCrop(data.image_size, padding=a.crop_padding))
    if train and (a.rotate or a.translate or a.scale != (1.0, 1.0)):
        translate = (a.translate, a.translate) if a.translate else None
        # Bilinear, as edgekit's grid_sample (v2 defaults to nearest, which is cheaper and blockier).
        bilinear = v2.InterpolationMode.BILINEAR
        steps.append(v2.RandomAffine(a.rotate, translate, a.scale, interpolation=bilinear))
    if train and a.hflip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(data.mean, data.std)]
    if train and a.erasing:
        steps.append(v2.RandomErasing(a.erasing))
    return v2.Compose(steps)


def naive_epoch(model, loader, opt, schedule, loss_fn) -> int:
    """One training pass; returns the number of images trained on."""
    model.train()
    seen, correct, total = 0, 0, 0.0
    for x, y in loader:
        opt.zero_grad()
        logits = model(x)
        loss = loss_fn(logits, y)
        loss.backward()
        opt.step()
        schedule.step()
        total += loss.item() * len(x)  # the running loss and accuracy every tutorial prints
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(x)
    return seen


@torch.no_grad()
def naive_validate(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = sum((model(x).argmax(1) == y).sum().item() for x, y in loader)
    return correct / len(loader.dataset)


def run_naive(recipe: Recipe, epochs: int) -> Result:
    """The same model, split, augmentation, optimizer and loss, through a per-sample DataLoader."""
    started = time.perf_counter()
    d, t = recipe.data, recipe.train
    data = prepare_for(recipe)
    torch.manual_seed(recipe.seed)
    train_set = PerSample(*data.train, naive_transforms(d.augment, data, train=True))
    val_set = PerSample(*data.val, naive_transforms(d.augment, data, train=False))
    # drop_last and the val batch size as edgekit's loaders, so both sides do the same work.
    drop = len(train_set) > t.batch_size
    train_loader = DataLoader(train_set, batch_size=t.batch_size, shuffle=True, num_workers=0, drop_last=drop)
    val_loader = DataLoader(val_set, batch_size=eval_batch(torch.device("cpu")), num_workers=0)
    model = build_model(
        recipe.model.arch, recipe.options("model"), data.in_channels, len(data.class_names), data.image_size
    )
    if t.optimizer.name != "sgd":
        raise SystemExit(f"naive side: only sgd is mapped, the recipe says {t.optimizer.name}")
    o = recipe.options("train", "optimizer")
    opt = torch.optim.SGD(
        model.parameters(),
        o["lr"],
        momentum=o["momentum"],
        nesterov=o["nesterov"],
        weight_decay=o["weight_decay"],
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * len(train_loader))  # per batch
    loss_fn = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
    times, images = [], []
    for _ in range(epochs):
        tick = time.perf_counter()
        images.append(naive_epoch(model, train_loader, opt, schedule, loss_fn))
        naive_validate(model, val_loader)
        times.append(time.perf_counter() - tick)
    wall = time.perf_counter() - started
    w = WARMUP_EPOCHS
    detail = (
        f"naive: {len(train_set)} train images, {len(train_loader)} batches of {t.batch_size} an epoch, "
        f"{len(val_set)} val images; per-sample transform `{' '.join(repr(train_set.transform).split())}`"
    )
    trained = sum(images[w:])
    return Result(recipe.name or "", "naive", "cpu", epochs - w, trained, sum(times[w:]), wall, detail)


# ── the long run through the CLI ─────────────────────────────────────────────────────────────────────


def run_long(epochs: int, runs: Path) -> dict:
    """`edgekit train` as a user types it, in a subprocess, so start-up and imports count."""
    exe = shutil.which("edgekit")  # the installed console script; `python -m edgekit` if not on PATH
    cli = [exe] if exe else [sys.executable, "-m", "edgekit"]
    args = ["train", str(RECIPE), f"train.epochs={epochs}", "track.wandb=disabled", "--runs-dir", str(runs)]
    started = time.perf_counter()
    done = subprocess.run([*cli, *args], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    shown = " ".join(["edgekit" if len(cli) == 1 else "python -m edgekit", *args[:-1], "<tmp>"])
    if done.returncode != 0:
        raise SystemExit(f"{shown} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    summary = json.loads(next(runs.glob("*/summary.json")).read_text())
    # summary.json's own wall_s is the trainer's loop only; ours is the whole process.
    return {**summary, "trainer_s": summary["wall_s"], "wall_s": wall, "requested": epochs, "command": shown}


def cuda_rows(epochs: int, runs: Path) -> list[Result]:
    """mobilenet_tiny on the GPU through edgekit's trainer, eager and compiled (no naive side)."""
    if not torch.cuda.is_available():
        return []
    return [
        run_edgekit(CUDA_RECIPE, epochs, ["train.device=cuda"], runs, "edgekit"),
        run_edgekit(
            CUDA_RECIPE, epochs, ["train.device=cuda", "train.compile=true"], runs, "edgekit+compile"
        ),
    ]


# ── report ───────────────────────────────────────────────────────────────────────────────────────────


def load_average() -> str:
    # Other work on the machine skews every figure (two torch threads on two busy cores crawl), so
    # the report shows how busy the machine was.
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def machine() -> dict[str, str]:
    return {
        "CPU": cpu(),
        "GPU": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "software": f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}",
        "torch threads": str(torch.get_num_threads()),
        "load average at start (1, 5, 15 min)": load_average(),
    }


def goals(ratio: float, long: dict) -> list[str]:
    """Each goal with its measured value and a verdict computed from it."""
    verdict = "PASS" if ratio >= GOAL_RATIO else "FAIL"
    lines = [f"- ≥ 8× for lenet_2k: measured {ratio:.1f}× → **{verdict}**"]
    wall, ran = long["wall_s"], long["epochs"]
    if long["requested"] != GOAL_EPOCHS or ran != GOAL_EPOCHS or long["stopped"] != "finished":
        lines.append(
            f"- 2000-epoch lenet_2k run under 4 minutes: **NOT CHECKED**: ran {ran} epochs "
            f"({long['stopped']}) in {wall:.1f} s, not 2000 (pass --long-epochs 2000)"
        )
    else:
        verdict = "PASS" if wall < GOAL_SECONDS else "FAIL"
        lines.append(
            f"- 2000-epoch lenet_2k run under 4 minutes: measured {wall / 60:.2f} min ({wall:.1f} s) "
            f"→ **{verdict}**"
        )
    return lines


def table_rows(results: list[Result], naive_rate: float) -> list[list[str]]:
    header = [
        "recipe",
        "side",
        "device",
        "epochs timed",
        "train images",
        "train+val s",
        "images/s",
        "÷ naive",
    ]
    rows = [header + ["wall s"]]
    for r in results:
        versus = f"{r.rate / naive_rate:.1f}×" if r.device == "cpu" else "—"
        rows.append(
            [r.recipe, r.side, r.device, str(r.epochs), f"{r.images:,}", f"{r.seconds:.2f}", f"{r.rate:,.0f}"]
            + [versus, f"{r.wall_s:.1f}"]
        )
    return rows


def markdown(command: str, info: dict, results: list[Result], goal_lines: list[str], long: dict) -> str:
    rows = table_rows(results, next(r.rate for r in results if r.side == "naive"))
    head = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * 3 + " ---: |" * (len(rows[0]) - 3)]
    body = ["| " + " | ".join(r) + " |" for r in rows[1:]]
    gpu_note = (
        "CUDA rows: edgekit's trainer on mobilenet_tiny, eager and with train.compile=true (no naive side)."
        if info["GPU"] != "none"
        else "CUDA rows: not measured, no GPU was present."
    )
    text = [
        "# Training throughput: edgekit's trainer vs the per-sample DataLoader loop",
        "",
        f"`{command}` — {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        *[f"- {k}: {v}" for k, v in info.items()],
        "",
        "## What each side does",
        "",
        *METHOD.splitlines(),
        *[f"- {r.detail}" for r in results if r.detail],
        "",
        "## Results",
        "",
        *head,
        *body,
        "",
        gpu_note,
        "",
        f"Long run: `{long['command']}`: {long['wall_s']:.1f} s wall clock end to end for "
        f"{long['epochs']} epochs on {long['device']} ({long['stopped']}; the trainer's own time "
        f"{long['trainer_s']:.1f} s; test accuracy {long['test_acc']:.2%}).",
        "",
        "## Goals",
        "",
        *goal_lines,
        "",
    ]
    return "\n".join(text)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--epochs", type=int, help="epochs of each side by side run (default 30; 3 with --quick)"
    )
    parser.add_argument(
        "--long-epochs", type=int, help="epochs of the CLI run (default 2000; 20 with --quick)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke-test settings; prints unless --out is given"
    )
    parser.add_argument("--out", type=Path, help="Markdown file (default bench/train_throughput.md)")
    args = parser.parse_args()
    args.epochs = args.epochs or (3 if args.quick else 30)
    args.long_epochs = args.long_epochs or (20 if args.quick else GOAL_EPOCHS)
    if args.epochs <= WARMUP_EPOCHS:
        parser.error(f"--epochs must be more than the {WARMUP_EPOCHS} warm-up epoch")
    if args.out is None and not args.quick:  # a smoke test must not replace the committed results
        args.out = ROOT / "bench" / "train_throughput.md"
    return args


def show(console: Console, rows: list[list[str]], goal_lines: list[str]) -> None:
    table = Table(title="training throughput", title_justify="left")
    for i, name in enumerate(rows[0]):
        table.add_column(name, justify="left" if i < 3 else "right")
    for row in rows[1:]:
        table.add_row(*row)
    console.print(table)
    for line in goal_lines:
        console.print(line.replace("**", ""), highlight=False)


def main() -> None:
    args = parse()
    console = Console()
    info = machine()  # before our own work raises the load average
    device = ["train.device=cpu"]  # the naive loop runs on the CPU; compare on the same device
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        console.print(f"edgekit trainer: {args.epochs} epochs of lenet_2k on cpu …")
        mine = run_edgekit(RECIPE, args.epochs, device, runs / "side")
        console.print(f"naive loop: {args.epochs} epochs of lenet_2k on cpu …")
        naive = run_naive(load(ROOT / RECIPE, device), args.epochs)
        if torch.cuda.is_available():
            console.print(
                f"edgekit trainer: {args.epochs} epochs of mobilenet_tiny on cuda, eager and compiled …"
            )
        extra = cuda_rows(args.epochs, runs / "cuda")
        console.print(f"edgekit train {RECIPE} train.epochs={args.long_epochs} in a subprocess …")
        long = run_long(args.long_epochs, runs / "long")
    info["load average at end (1, 5, 15 min)"] = load_average()
    results = [mine, naive, *extra]
    goal_lines = goals(mine.rate / naive.rate, long)
    show(console, table_rows(results, naive.rate), goal_lines)
    command = " ".join(["python bench/train_throughput.py", *sys.argv[1:]])
    text = markdown(command, info, results, goal_lines, long)
    if args.out is None:
        print(text)
    else:
        args.out.write_text(text)
        console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
