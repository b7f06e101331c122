"""Training images/s of `mobilenet_tiny` at 32×32: edgekit's trainer (eager, channels_last, compile) beside a
bare PyTorch step of the same model and batch (compiled, bf16, channels_last; random tensors already on the
device: no data path, no augmentation, no bookkeeping). Writes JSON and a Markdown table with goals 1 and 2
of issue 14. `--device cpu --quick` is a smoke run (tiny settings) so the script is tested without a GPU.

    python bench/gpu_train_speed.py --device cuda --out bench/gpu_train.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "mobilenet_tiny.yaml"
GOAL_RATIO, GOAL_IMAGES_S = 0.8, 100_000  # issue 14: ≥ 0.8× the bare compiled step; ≥ 100k img/s
# edgekit's settings measured: name → (channels_last, compile)
SETTINGS = {"eager": (False, False), "channels_last": (True, False), "compile": (True, True)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --quick: a mobilenet_tiny of the same structure, narrow and at 16×16, so the smoke run takes seconds on CPU
QUICK = [
    "data.image_size=16", "model.stem_channels=8", "model.channels=[8,8,8,8]", "model.expansion=[1,1,1,1]",
    "model.repeats=[1,1,1,1]", "model.last_channels=16",
]  # fmt: skip


def edgekit_rate(
    device: str, batch: int, images: int, channels_last: bool, compile: bool, rounds: int, extra=()
):
    """images/s of `train_epoch` (augmentation, AMP, loss, optimizer, the per-epoch NaN check) over digits
    resized to 32×32 and tiled to `images` images; the median of `rounds` epochs after one warm-up."""
    from edgekit.data import prepare_for
    from edgekit.data.loader import AugmentParams, DeviceLoader
    from edgekit.recipe import load
    from edgekit.train import loop, run

    overrides = [
        "data.image_size=32", f"train.batch_size={batch}", f"train.device={device}",
        f"train.channels_last={str(channels_last).lower()}", f"train.compile={str(compile).lower()}",
        "track.wandb=disabled", *extra,
    ]  # fmt: skip
    recipe = load(RECIPE, overrides)
    data = prepare_for(recipe)
    state = run.build_state(recipe, data)
    x, y = data.train
    reps = -(-images // len(y))
    state.train = DeviceLoader(
        x.repeat(reps, 1, 1, 1)[:images], y.repeat(reps)[:images], batch_size=batch, mean=data.mean,
        std=data.std, device=state.device, augment=AugmentParams(**recipe.data.augment), shuffle=True,
        drop_last=True, generator=state.generator, num_classes=len(data.class_names),
    )  # fmt: skip
    loop.train_epoch(state)  # warm-up: compilation, cuDNN autotuning, allocator
    rates = []
    for _ in range(rounds):
        _sync(state.device)
        started = time.perf_counter()
        seen = loop.train_epoch(state)["seen"]  # ends with a read-back: the GPU has finished
        rates.append(seen / (time.perf_counter() - started))
    return statistics.median(rates), state


def bare_rate(state, batch: int, steps: int, rounds: int) -> float:
    """images/s of a plain compiled training step on the same model: forward, loss, backward, SGD step."""
    from edgekit.models import ModelSpec

    device, m = state.device, state.meta
    spec = ModelSpec(
        **{k: m[k] for k in ("arch", "options", "in_channels", "num_classes", "image_size", "mean", "std")},
        class_names=m["class_names"],
    )
    # The layout edgekit's run used (channels_last unless the recipe turned it off), so only the loop differs.
    layout = torch.channels_last if state.channels_last else torch.contiguous_format
    model = spec.build().to(device, memory_format=layout)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    compiled = torch.compile(model) if device.type == "cuda" else model  # CPU: eager (no compiler needed)
    size = m["image_size"]
    x = torch.randn(batch, m["in_channels"], size, size, device=device).contiguous(memory_format=layout)
    y = torch.randint(0, m["num_classes"], (batch,), device=device)
    dtype = state.amp_dtype

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(compiled(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()  # warm-up: compilation
    rates = []
    for _ in range(rounds):
        _sync(device)
        started = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        rates.append(steps * batch / (time.perf_counter() - started))
    return statistics.median(rates)


def measure(device: str, batches: list[int], images: int, rounds: int, settings: dict, extra=()) -> dict:
    rows = []
    for batch in batches:
        for name, (channels_last, compile) in settings.items():
            rate, state = edgekit_rate(device, batch, images, channels_last, compile, rounds, extra)
            rows.append({"who": "edgekit", "setting": name, "batch": batch, "images_per_s": rate})
            print(f"edgekit {name} batch {batch}: {rate:,.0f} img/s", file=sys.stderr)
        bare = bare_rate(state, batch, max(1, images // batch), rounds)
        kind = "compile" if state.device.type == "cuda" else "eager"
        rows.append({"who": "bare", "setting": kind, "batch": batch, "images_per_s": bare})
        print(f"bare compiled step batch {batch}: {bare:,.0f} img/s", file=sys.stderr)
    amp = str(state.amp_dtype).replace("torch.", "") if state.amp_dtype else "none (fp32)"
    size = state.meta["image_size"]
    return {
        "device": str(state.device),
        "amp": amp,
        "images": images,
        "rounds": rounds,
        "size": size,
        "rows": rows,
    }


def goals(result: dict) -> list[tuple[str, bool | None, str]]:
    """(goal, met, numbers) for goals 1 and 2."""
    rows, out = result["rows"], []
    for batch in sorted({r["batch"] for r in rows}):
        at = {(r["who"], r["setting"]): r["images_per_s"] for r in rows if r["batch"] == batch}
        if ("edgekit", "compile") in at and ("bare", "compile") in at:
            ratio = at[("edgekit", "compile")] / at[("bare", "compile")]
            out.append(
                (
                    f"edgekit ≥ {GOAL_RATIO}× the bare compiled step (batch {batch})",
                    ratio >= GOAL_RATIO,
                    f"{at[('edgekit', 'compile')]:,.0f} vs {at[('bare', 'compile')]:,.0f} img/s: "
                    f"{ratio:.2f}×",
                )
            )
    best = max((r for r in rows if r["who"] == "edgekit"), key=lambda r: r["images_per_s"])
    bf16 = result["amp"] == "bfloat16" and result["device"].startswith("cuda")
    out.append(
        (
            f"mobilenet_tiny 32×32 training ≥ {GOAL_IMAGES_S:,} img/s (bf16 + channels_last, one GPU)",
            best["images_per_s"] >= GOAL_IMAGES_S if bf16 else None,
            f"best {best['images_per_s']:,.0f} img/s ({best['setting']}, batch {best['batch']}, "
            f"amp {result['amp']})",
        )
    )
    return out


def markdown(result: dict) -> str:
    lines = [
        f"Training, `mobilenet_tiny` at {result['size']}×{result['size']} on {result['device']}, "
        f"amp {result['amp']}; median of "
        f"{result['rounds']} epochs of {result['images']:,} images after a warm-up epoch:",
        "",
        "| who | setting | batch | images/s |",
        "| --- | --- | ---: | ---: |",
        *(
            f"| {r['who']} | {r['setting']} | {r['batch']} | {r['images_per_s']:,.0f} |"
            for r in result["rows"]
        ),
        "",
    ]
    for goal, met, numbers in goals(result):
        verdict = "not measured here" if met is None else ("met" if met else "not met")
        lines.append(f"- {goal}: **{verdict}** — {numbers}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: a narrow model, batch 32, no compile"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "gpu_train.json")
    parser.add_argument("--batches", default="256,1024", help="comma-separated batch sizes")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"a subset of {','.join(SETTINGS)}")
    args = parser.parse_args(argv)
    settings = {k: SETTINGS[k] for k in args.settings.split(",")}
    if args.quick:
        settings = {k: v for k, v in settings.items() if not v[1]}  # torch.compile on CPU takes minutes
        result = measure(args.device, [32], 128, 1, settings, QUICK)
    else:
        result = measure(args.device, [int(b) for b in args.batches.split(",")], 65_536, 3, settings)
    result["markdown"] = markdown(result)
    args.out.write_text(json.dumps(result, indent=1))
    print(result["markdown"])


if __name__ == "__main__":
    main()
