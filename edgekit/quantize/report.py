"""`edgekit quantize`'s report of one variant: the figures it returns, and the lines it prints."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgekit.quantize.quantize import Job


def build_report(job: Job, meta, name, file, data: bytes, test, details, lean) -> dict[str, Any]:
    """What `edgekit quantize` returns and writes beside the variant: size, accuracy, speed, the choice."""
    accuracy = test["accuracy"]
    fp32_bytes = job.source.stat().st_size
    speedup = job.fp32_ms / details["ms"] if job.fp32_ms and details["ms"] else None
    return {
        "bundle": str(job.bundle),
        "variant": name,
        "file": file,
        "bytes": len(data),
        "bytes_per_param": len(data) / meta.params if meta.params else None,
        "fp32_bytes": fp32_bytes,
        "size_ratio": len(data) / fp32_bytes,
        "larger_than_fp32": len(data) > fp32_bytes,
        "accuracy": accuracy,  # test split, measured after the choice (made on val: details["val"])
        "fp32_accuracy": test["fp32_accuracy"],
        "drop": (test["fp32_accuracy"] - accuracy) * 100,
        "agreement": test["agreement"],
        "images": test["images"],
        "speed": {
            "fp32_ms": job.fp32_ms,
            "ms": details["ms"],
            "speedup": speedup,
            "threads": 1,
            "batch": job.fixed_batch or 1,
        },
        "lean": lean,
        "details": details,
        "variants": {  # every variant of the bundle, this one included, with its bytes per parameter
            **{k: v.bytes / meta.params for k, v in meta.variants.items() if meta.params},
            name: len(data) / meta.params if meta.params else None,
        },
    }


def report_lines(r: dict[str, Any]) -> list[str]:
    """The report as the command prints it."""
    d, s = r["details"], r["speed"]
    lines = [
        f"[bold]{r['bundle']}[/] → {r['file']} ({d['how']})",
        f"  test accuracy on {r['images']} images (read after the choice): fp32 {r['fp32_accuracy']:.2%} → "
        f"{r['variant']} {r['accuracy']:.2%} (drop {r['drop']:.2f} points); top-1 agreement with fp32 "
        f"{r['agreement']:.2%}",
        f"  chosen on the val split: fp32 {d['val']['fp32_accuracy']:.2%} → {d['val']['accuracy']:.2%}",
    ]
    for c in d.get("candidates", []):
        ms = f"{c['ms']:.4f} ms" if c["ms"] is not None else "not timed (over --max-drop)"
        lines.append(
            f"  candidate {c['format']}: val accuracy {c['accuracy']:.2%}, drop {c['drop']:.2f}, agreement "
            f"{c['agreement']:.2%}, {len(c['excluded'])} nodes kept fp32, {ms}"
        )
    if "excluded" in d:
        kept = ", ".join(d["excluded"]) or "none"
        lines.append(f"  nodes kept fp32 to stay within --max-drop {d['max_drop']:g}: {kept}")
    if d.get("depthwise", {}).get("nodes"):
        lines.append(
            f"  depthwise convs ({len(d['depthwise']['nodes'])}): weights {d['depthwise']['weights']}"
        )
    if s["speedup"]:
        faster = s["speedup"] > 1
        verdict = f"{s['speedup']:.2f}× faster" if faster else f"no speed-up ({1 / s['speedup']:.2f}× slower)"
        lines.append(
            f"  speed here (onnxruntime CPU, 1 thread, batch {s['batch']}): fp32 {s['fp32_ms']:.4f} ms, "
            f"{r['variant']} {s['ms']:.4f} ms: {verdict}"
        )
    per_param = ", ".join(f"{k} {v:.2f}" for k, v in r["variants"].items())
    lines.append(f"  size: {r['bytes']:,} bytes, {r['size_ratio']:.2f}× fp32; bytes/param: {per_param}")
    if r["larger_than_fp32"]:
        lines.append(
            f"[yellow]warning:[/] {r['file']} ({r['bytes']:,} bytes) is larger than fp32 model.onnx "
            f"({r['fp32_bytes']:,} bytes): at this size the ONNX container outweighs the weights"
        )
    return lines
