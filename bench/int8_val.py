"""int8 accuracy of the digits bundles with every choice made on val, beside the figure chosen on test.

    python bench/int8_val.py            # → bench/int8_val.md

Before bundles carried val.npz, `edgekit quantize --int8` picked its format and the nodes kept fp32
under --max-drop by scoring on eval.npz (the test split) and then reported test accuracy as if unseen.
Now it chooses on val and reads test once. For each bundle in bench/results.json's int8 rows, the same
recipe is trained again (seed 0, its 100 epochs), exported and quantized (`--int8`, default max-drop 1
point); the table puts the new test figures beside the old int8 figure. Same seed and data split, so the
fp32 model is the one the old figure quantized, up to run-to-run nondeterminism of CPU kernels.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from common import ROOT, cpu, train
from rich.console import Console


def main() -> None:
    from edgekit.export.write import export_run
    from edgekit.quantize.quantize import quantize_bundle

    console = Console()
    old = json.loads((ROOT / "bench" / "results.json").read_text())
    before = {
        r["bundle"]: r["accuracy"]
        for r in old["rows"]
        if r["variant"] == "int8" and r["runtime"] == "ort-cpu"
    }
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekit-int8-val-") as tmp:
        for name, old_acc in before.items():
            run = train(name, ["train.device=cpu"], Path(tmp) / "runs")["run"]
            bundle = export_run(Path(run), Path(tmp) / "export")
            r = quantize_bundle(bundle, "int8")
            val = r["details"]["val"]
            cells = [f"`{name}`", f"{r['fp32_accuracy']:.2%}", f"{r['accuracy']:.2%}", f"{r['drop']:+.2f}"]
            cells += [f"{val['fp32_accuracy']:.2%} → {val['accuracy']:.2%}", r["details"]["format"]]
            cells += [str(len(r["details"]["excluded"])), f"{old_acc:.2%}"]
            rows.append("| " + " | ".join(cells) + " |")
            console.print(rows[-1])
    lines = [
        "# int8 chosen on val, reported on test (digits bundles)",
        "",
        f"`python bench/int8_val.py` — {time.strftime('%Y-%m-%d')}, {cpu()}. Test split: 270 images",
        "(one image = 0.37 points). The old figure: `bench/results.md`, when the choice was made on test.",
        "",
        "| bundle | fp32 test | int8 test | drop (points) | val fp32 → int8 (chosen on) | format "
        "| nodes kept fp32 | int8 test, chosen on test (old) |",
        "| --- | ---: | ---: | ---: | --- | --- | ---: | ---: |",
        *rows,
        "",
    ]
    (ROOT / "bench" / "int8_val.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
