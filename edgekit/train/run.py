"""Turns a recipe (new run) or a run folder (resume) into a training `State`, trains it, sums it up."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from edgekit import __version__
from edgekit.data import Prepared, prepare_for
from edgekit.data.loader import AugmentParams, DeviceLoader
from edgekit.errors import EdgekitError
from edgekit.models import ModelSpec, count_macs, count_params
from edgekit.recipe import load
from edgekit.recipe_schema import Recipe
from edgekit.runs import ORIGIN_FILE, Run, load_checkpoint, new_run_dir, write_json
from edgekit.train import ddp, lr_find
from edgekit.train.device import amp_dtype_for, layout, pick_device
from edgekit.train.loop import NonFiniteLoss, State, fit, make_ema, restore
from edgekit.train.objectives import Supervised
from edgekit.train.optim import OPTIMIZERS, SCHEDULERS
from edgekit.train.summary import eval_batch, summarize
from edgekit.train.teacher import distillation
from edgekit.train.teacher_bank import bank_if_worthwhile, identity
from edgekit.train.track import Silent, Tracker


def start(recipe_path: Path, overrides: list[str], runs_dir: Path, console: Console) -> Path:
    """`edgekit train recipe.yaml`: a new run folder under `runs_dir`."""
    return start_recipe(load(recipe_path, overrides), runs_dir, console)


def start_recipe(
    recipe: Recipe,
    runs_dir: Path,
    console: Console,
    init_state: dict | None = None,
    origin: dict | None = None,
) -> Path:
    """A new run of an in-memory recipe, from `init_state` weights if given (e.g. a pruned model's).

    `origin` (plain data, e.g. {"pruned_from": ...}) is saved in the run and kept in every summary.json.
    """
    recipe, auto_lr = lr_find.resolve_auto(recipe, console)
    data = prepare_for(recipe)
    state = build_state(recipe, data)  # bad options fail here, before any folder is made
    if init_state is not None:
        # An EMA needs no reset: its first update copies the model, so it starts from these weights.
        state.model.load_state_dict(init_state)
    run_dir = ddp.from_main(new_run_dir(runs_dir, recipe.name) if ddp.is_main() else None)
    if ddp.is_main():
        Run(run_dir).write_recipe(recipe)  # with the number `lr: auto` found, so it reruns without it
        if auto_lr:
            lr_find.write(auto_lr.pop("curve"), run_dir)
            origin = {**(origin or {}), "lr_auto": auto_lr}
        if origin:
            write_json(run_dir / ORIGIN_FILE, origin)
    _train(state, recipe, run_dir, console, resume_epoch=0)
    return run_dir


def resume(run_path: Path, overrides: list[str], console: Console) -> Path:
    """`edgekit train --resume runs/x [train.epochs=N]`: continue, or extend, an existing run."""
    run = Run.open(run_path)
    run_dir = run.folder
    ckpt = load_checkpoint(run.last)
    recipe = run.recipe(overrides)
    data = prepare_for(recipe)
    state = build_state(recipe, data)
    _check_same_model(state.meta, ckpt, run_dir)
    restore(state, ckpt)
    if state.epoch >= recipe.train.epochs:
        raise EdgekitError(
            f"{run_dir}: already trained {state.epoch} epochs; to extend it pass "
            f"train.epochs=N with N > {state.epoch}"
        )
    state.stale = 0  # an extended run gets a fresh early-stopping patience
    if ddp.is_main():
        _note_resume(run_dir, recipe, state.epoch, overrides)
    _train(state, recipe, run_dir, console, resume_epoch=state.epoch)
    return run_dir


def _note_resume(run_dir: Path, recipe: Recipe, epoch: int, overrides: list[str]) -> None:
    Run(run_dir).write_recipe(recipe)
    with (run_dir / "history.jsonl").open("a") as f:
        f.write(
            json.dumps(
                {
                    "resumed_at_epoch": epoch,
                    "overrides": list(overrides),
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                }
            )
            + "\n"
        )


def build_state(recipe: Recipe, data: Prepared, bank: bool = True) -> State:
    """Model, loaders, optimizer, schedule, AMP and EMA as the recipe says, seeded for reproducibility.

    `bank=False` never precomputes the teacher's logits (a few hundred steps, as lr-find's, do not repay it).
    """
    t, device = recipe.train, pick_device(recipe.train.device)
    torch.manual_seed(recipe.seed)
    model, meta = _model_and_meta(recipe, data)
    # channels_last on CPU too: oneDNN's NHWC kernels train the Fashion ladder 1.05-1.9x and most digits
    # recipes 1.2-1.7x faster than NCHW (bench/channels_last.md; lenet_1k, slower, sets it false).
    model = model.to(device, memory_format=layout(t.channels_last))
    model = ddp.sync_batchnorm(model, device) if t.sync_bn else model
    generator = torch.Generator().manual_seed(recipe.seed)  # the loader draws on CPU, moves to device
    train, val = _loaders(recipe, data, device, generator)
    objective = _objective(recipe, data, meta, train, val, device, bank)
    optimizer = OPTIMIZERS.get(t.optimizer.name).fn(_params(OPTIMIZERS, t.optimizer), model)
    mode = "max" if t.monitor == "val_acc" else "min"
    schedule = SCHEDULERS.get(t.scheduler.name).fn(
        _params(SCHEDULERS, t.scheduler), optimizer, t.epochs, len(train), mode
    )
    net = ddp.wrap(model, device) or model
    amp_dtype = amp_dtype_for(device) if t.amp else None
    return State(
        model=model,
        optimizer=optimizer,
        schedule=schedule,
        objective=objective,
        train=train,
        val=val,
        generator=generator,
        device=device,
        epochs=t.epochs,
        amp_dtype=amp_dtype,
        scaler=torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None,
        ema=make_ema(model, t.ema, t.epochs * len(train)) if t.ema else None,
        raw_val=recipe.track.raw_val,
        clip_grad=t.clip_grad,
        channels_last=t.channels_last,
        net=torch.compile(net) if t.compile else net,
        monitor=t.monitor,
        select=t.select,
        val_every=t.val_every,
        patience=t.early_stop.patience,
        min_delta=t.early_stop.min_delta,
        meta={**meta, "test": data.test},
    )


def _model_and_meta(recipe: Recipe, data: Prepared) -> tuple[torch.nn.Module, dict]:
    """The recipe's model, built on the data's shape, and what every checkpoint records about the two."""
    spec = ModelSpec(
        arch=recipe.model.arch,
        options=recipe.options("model"),
        in_channels=data.in_channels,
        num_classes=len(data.class_names),
        image_size=data.image_size,
        mean=data.mean,
        std=data.std,
        class_names=data.class_names,
    )
    model = spec.build()
    shape = (1, data.in_channels, data.image_size, data.image_size)
    meta = {
        **spec.plain(),
        "recipe": recipe.model_dump(mode="json"),
        "params": count_params(model),
        "macs": count_macs(model, shape),
        "data_fingerprint": data.fingerprint,
        "split": data.describe(),
        "data_notes": data.notes,
        "edgekit_version": __version__,
    }
    return model, meta


def _loaders(
    recipe: Recipe, data: Prepared, device: torch.device, generator: torch.Generator
) -> tuple[DeviceLoader, DeviceLoader]:
    """The augmented, shuffled training loader (this rank's shard of the global batch) and val's."""
    t, world = recipe.train, ddp.world_size()
    if t.batch_size < world:
        raise EdgekitError(f"train.batch_size = {t.batch_size}: must be at least the {world} processes")
    train = DeviceLoader(
        *data.train,
        batch_size=t.batch_size // world,  # train.batch_size is the global batch, split over the ranks
        mean=data.mean,
        std=data.std,
        device=device,
        augment=AugmentParams(**recipe.data.augment),
        shuffle=True,
        drop_last=len(data.train[1]) > t.batch_size,
        generator=generator,
        num_classes=len(data.class_names),
        shard=(ddp.rank(), world),
    )
    return train, _unaugmented(data.val, data, device)


def _objective(
    recipe: Recipe, data: Prepared, meta: dict, train: DeviceLoader, val: DeviceLoader, device, bank: bool
):
    """Plain cross-entropy, or distillation from the recipe's teachers (their logits banked when it pays);
    what distillation chose is recorded in `meta`."""
    objective = Supervised(recipe.train.label_smoothing)
    if recipe.distill is None:
        return objective
    split, check = ("val", val) if data.has_val else ("train", _unaugmented(data.train, data, device))
    objective, meta["distill"] = distillation(recipe.distill, meta, check, device, split)
    # The teacher in the student's layout: the bank's fill and per-step teaching gain the same speed-up.
    objective.teacher.to(memory_format=layout(recipe.train.channels_last))
    if bank and recipe.distill.precompute == "auto":
        names = identity([Path(f) for f in meta["distill"]["teachers"]], data.fingerprint)
        meta["distill"]["precomputed"] = bank_if_worthwhile(
            objective, train, recipe.train.epochs, ddp.world_size(), names
        )
    return objective


def _unaugmented(split, data: Prepared, device) -> DeviceLoader:
    """A split as it is scored, not trained on: no augmentation, no shuffle."""
    return DeviceLoader(*split, batch_size=eval_batch(device), mean=data.mean, std=data.std, device=device)


def _params(registry, section):
    return registry.get(section.name).params.model_validate(
        {k: v for k, v in section.model_dump().items() if k != "name"}
    )


def _check_same_model(meta: dict[str, Any], ckpt: dict[str, Any], run_dir: Path) -> None:
    """A resumed run must rebuild exactly the checkpoint's model on data of the same shape."""
    for key in ("arch", "options", "in_channels", "num_classes", "image_size", "class_names"):
        if meta[key] != ckpt.get(key):
            raise EdgekitError(
                f"{run_dir}: cannot resume: {key} is {meta[key]!r} now but the checkpoint "
                f"has {ckpt.get(key)!r}"
            )


def _announce(state: State, recipe: Recipe, run_dir: Path, console: Console) -> None:
    """What is about to train, on what data, from which teachers: the first lines of every run's log."""
    m = state.meta
    console.print(
        f"[bold]{recipe.name}[/]: {m['arch']} with {m['params']:,} parameters, {m['macs']:,} MACs, "
        f"input {m['in_channels']}×{m['image_size']}×{m['image_size']}, {m['num_classes']} classes, "
        f"{len(state.train.labels)} train images, device {state.device}"
        + (f" × {ddp.world_size()} processes" if ddp.world_size() > 1 else "")
        + f" → {run_dir}"
    )
    console.print(f"data: {m['split']}")
    for note in m["data_notes"]:
        console.print(f"[yellow]note:[/] {note}")
    if "distill" in m:
        d = m["distill"]
        console.print(
            f"distilling with {d['method']} from {', '.join(d['teachers'])}: teacher "
            f"{d.get('checked_on', 'val')} accuracy " + ", ".join(f"{a:.2%}" for a in d["teacher_val_acc"])
        )
        if d.get("precomputed"):
            bank = d["precomputed"]
            console.print(
                f"teacher logits precomputed for {bank['views']} views of each image ({bank['seconds']} s)"
            )


def _train(state: State, recipe: Recipe, run_dir: Path, console: Console, resume_epoch: int) -> None:
    if not ddp.is_main():  # the other ranks train in step with rank 0 and leave the writing to it
        try:
            fit(state, run_dir, Silent())
        finally:
            ddp.teardown(state)
        return
    test = state.meta.pop("test")
    m = state.meta
    _announce(state, recipe, run_dir, console)
    extra = {"params": m["params"], "macs": m["macs"]}
    if "distill" in m:
        extra["teacher_val_acc"] = m["distill"]["ensemble_val_acc"]
    tracker = Tracker(run_dir, m["recipe"], recipe.wandb_mode(), state.epochs, console, extra, resume_epoch)
    started, stop, reason = time.perf_counter(), "interrupted", "interrupted"
    try:
        reason = fit(state, run_dir, tracker)
        stop = "finished" if reason == "finished" else "early stop"
    except NonFiniteLoss as e:
        stop, reason = "diverged", str(e)
        raise
    finally:  # a stopped run still gets its summary and curves
        ddp.teardown(state)
        summary = summarize(state, run_dir, test, reason, time.perf_counter() - started, tracker.rows)
        write_json(Run(run_dir).summary_file, {**summary, "stop": stop})
        tracker.finish(summary)
    kept = f"kept epoch {state.kept_epoch} (train.select: last); " if state.select == "last" else ""
    best = "no val split" if state.best is None else f"best {state.monitor} {state.best:.4f}"
    at = "" if state.best is None else f" at epoch {state.best_epoch}"
    console.print(f"{reason}. {best}{at}; {kept}test accuracy {summary['test_acc']:.2%}; {run_dir}")
