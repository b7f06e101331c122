"""`edgekit predict` on a folder of image files against `edgekit bench`'s pure-inference rate, same bundle.

    python bench/predict_speed.py            # → bench/predict_speed.md

1,000 real Fashion-MNIST test images written as 28×28 PNG files (Debian's dataset-fashion-mnist), the
`fashion/r2k` model trained one epoch (speed does not depend on its accuracy) and exported. Side by side
in one run: `edgekit bench` images/s at batch 32 (ort-cpu, preprocessed arrays, no files), and
`predict` images/s end to end (PIL decode, resize, normalize, onnxruntime in batches of 32), best of 5.
Goal: predict ≥ 0.5× bench — decoding must not dominate for small images.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import ROOT, cpu, train
from PIL import Image
from rich.console import Console

IMAGES, BATCH, ROUNDS = 1000, 32, 5


def main() -> None:
    from edgekit.bench.run import bench
    from edgekit.data import prepare
    from edgekit.export.write import export_run
    from edgekit.predict import Predictor, gather

    console = Console()
    with tempfile.TemporaryDirectory(prefix="edgekit-predict-speed-") as tmp:
        work = Path(tmp)
        images = prepare("fashion_mnist", {}, None, 0.15, 0.15).test[0][:IMAGES].numpy()
        folder = work / "photos"
        folder.mkdir()
        for i, pixels in enumerate(images):
            Image.fromarray(pixels[0]).save(folder / f"{i:04d}.png")
        run = train("fashion/r2k", ["train.epochs=1", "train.device=cpu"], work / "runs")["run"]
        bundle = export_run(Path(run), work / "export")
        rows = bench([bundle], ["ort-cpu"], 1, [1, BATCH], work / "bench")["rows"]
        bench_rate = next(r for r in rows if r["variant"] == "fp32")["throughput"][str(BATCH)]
        predictor = Predictor(bundle, threads=1)
        times = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            predictor(gather([folder], predictor).pixels)
            times.append(time.perf_counter() - started)
    predict_rate = IMAGES / min(times)
    ratio = predict_rate / bench_rate
    lines = [
        "# `edgekit predict` throughput against `edgekit bench`",
        "",
        f"`python bench/predict_speed.py` — {time.strftime('%Y-%m-%d')}, {cpu()}, onnxruntime 1 thread.",
        "",
        "| what | images/s |",
        "| --- | ---: |",
        f"| `edgekit bench`, batch {BATCH} (preprocessed arrays) | {bench_rate:,.0f} |",
        f"| `edgekit predict`, {IMAGES} PNG files, batch {BATCH} (decode + resize + normalize + infer) "
        f"| {predict_rate:,.0f} |",
        f"| ratio | {ratio:.2f}× |",
        "",
        f"Goal ≥ 0.5×: {'met' if ratio >= 0.5 else '**not met**'}. predict: best of {ROUNDS} rounds.",
        "",
    ]
    (ROOT / "bench" / "predict_speed.md").write_text("\n".join(lines))
    console.print("\n".join(lines))


if __name__ == "__main__":
    main()
