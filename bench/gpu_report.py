"""`bench/gpu.md` from what `bench/gpu_check.sh` measured: the machine (GPU, driver, CUDA, cuDNN, TensorRT),
the training table of `gpu_train_speed.py` with goals 1 and 2 of issue 14, and goal 3 from `edgekit bench`'s
results.json (ort-trt int8 at batch 256 against ort-cuda fp32, accuracy within 0.5 point).

    python bench/gpu_report.py --train bench/gpu_train.json --bench bench/gpu_bench --out bench/gpu.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

GOAL_SPEEDUP, GOAL_POINTS = 2.0, 0.5


def machine() -> list[str]:
    """One line per component the figures depend on; 'none' where it is not installed."""
    import onnxruntime
    import torch

    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        smi = "none (nvidia-smi not found)"
    try:
        import tensorrt

        trt = tensorrt.__version__
    except ImportError:
        trt = "none (the tensorrt wheels are not installed)"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return [
        f"- GPU (nvidia-smi: name, memory, driver): {smi}",
        f"- torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}, cuDNN {cudnn or 'none'}",
        f"- onnxruntime {onnxruntime.__version__}, providers: "
        + ", ".join(onnxruntime.get_available_providers()),
        f"- TensorRT {trt}",
    ]


def inference_goal(results: dict) -> tuple[bool | None, str]:
    """ort-trt int8-trt throughput at batch 256 ≥ 2× ort-cuda fp32, accuracy within 0.5 point of it."""
    rows = {(r["bundle"], r["runtime"], r["variant"]): r for r in results["rows"]}
    pairs = [
        (rows[(b, "ort-trt", "int8-trt")], cuda)
        for (b, rt, v), cuda in rows.items()
        if rt == "ort-cuda" and v == "fp32" and (b, "ort-trt", "int8-trt") in rows
    ]
    if not pairs:
        skipped = "; ".join(f"{s['runtime']}: {s['reason']}" for s in results.get("skipped", []))
        return None, f"no ort-trt int8-trt and ort-cuda fp32 rows ({skipped or 'not run'})"
    trt, cuda = pairs[0]
    speed = trt["throughput"]["256"] / cuda["throughput"]["256"]
    points = abs(trt["accuracy"] - cuda["accuracy"]) * 100
    met = speed >= GOAL_SPEEDUP and points <= GOAL_POINTS
    return met, (
        f"{trt['bundle']}: {trt['throughput']['256']:,.0f} vs {cuda['throughput']['256']:,.0f} img/s at "
        f"batch 256 ({speed:.2f}×); accuracy {trt['accuracy']:.2%} vs {cuda['accuracy']:.2%} "
        f"({points:.2f} points)"
    )


def report(train: dict, results: dict | None, command: str) -> str:
    met, numbers = inference_goal(results) if results else (None, "edgekit bench was not run")
    verdict = "not measured here" if met is None else ("met" if met else "not met")
    rows = results["rows"] if results else []
    table = [
        "| bundle | variant | runtime | accuracy | latency ms (batch 1) | img/s (batch 256) |",
        "| --- | --- | --- | ---: | ---: | ---: |",
        *(
            f"| {r['bundle']} | {r['variant']} | {r['runtime']} | {r['accuracy']:.2%} | "
            f"{r['latency_ms']:.4g} | {r['throughput'].get('256', 0):,.0f} |"
            for r in rows
        ),
    ]
    return "\n".join(
        [
            "# GPU check (issue 14)",
            "",
            f"`{command}`",
            "",
            *machine(),
            "",
            "## Training",
            "",
            train["markdown"],
            "## Inference",
            "",
            *table,
            "",
            f"- ort-trt int8 batch-256 throughput ≥ {GOAL_SPEEDUP:g}× ort-cuda fp32, accuracy within "
            f"{GOAL_POINTS} point: **{verdict}** — {numbers}",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True, help="gpu_train_speed.py's JSON")
    parser.add_argument("--bench", type=Path, help="edgekit bench's --out folder (results.json)")
    parser.add_argument("--out", type=Path, default=Path("bench/gpu.md"))
    parser.add_argument("--command", default="bash bench/gpu_check.sh")
    args = parser.parse_args(argv)
    found = args.bench / "results.json" if args.bench else None
    results = json.loads(found.read_text()) if found and found.is_file() else None
    # A missing training file (the speed script failed) still leaves a report saying so
    train = json.loads(args.train.read_text()) if args.train.is_file() else {"markdown": "Not measured.\n"}
    args.out.write_text(report(train, results, args.command))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
