"""`RUNTIMES`: the engines a bundle can be benchmarked on, each with `available()`, `load()` and `run()`.

A runtime is given a *bundle*: anything with `.path` (the bundle folder) and `.meta` (its typed
`edgekit.json`, a `BundleMeta`). torch is imported only inside the torch runtimes, so `edgekit bench`
works on a device where only numpy, onnx and onnxruntime are installed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import ort_providers
from edgekit.errors import EdgekitError
from edgekit.registry import Registry
from edgekit.runs import BEST_FILE

RUNTIMES = Registry("runtime")


class RuntimeUnavailable(EdgekitError):
    """The runtime cannot run this bundle here (no provider, no torch, no checkpoint); bench skips it."""


def logits_over(run: Callable[[np.ndarray], Any], x: np.ndarray, fixed_batch: int | None, chunk: int = 256):
    """`run` over every image of `x`: the one way edgekit runs a model over an array (export parity,
    quantize, bench, predict). Chunks of `chunk` images, or exactly `fixed_batch` for a fixed-batch model
    (the tail zero-padded, its rows dropped); each output is copied, since a bound session reuses its
    buffer. Returns float32 logits (N, classes)."""
    step, out = fixed_batch or chunk, []
    for start in range(0, len(x), step):
        part = x[start : start + step]
        n = len(part)
        if fixed_batch and n < fixed_batch:
            part = np.concatenate([part, np.zeros((fixed_batch - n, *part.shape[1:]), part.dtype)])
        out.append(np.array(run(part), dtype=np.float32)[:n])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


class OrtSession:
    """An onnxruntime session that runs through IOBinding with preallocated numpy input and output.

    Why IOBinding: measured with `edgekit.timing.measure` (0.2 s windows × 5, 1 thread, onnxruntime 1.32,
    2-core AMD EPYC dev box), µs per call, median window (p99 in brackets):

        model                      batch   session.run   IOBinding (this class, input copy included)
        Conv-ReLU-Gemm 1×8×8→10      1     12.1 (27.5)    8.0 (14.8)
        Conv-ReLU-Gemm 1×8×8→10     32     27.5 (43.3)   24.1 (38.6)
        Identity (the ORT floor)     1      8.0 (17.6)    4.9 (6.4)
        Identity (the ORT floor)    32      8.2 (18.1)    5.5 (7.0)

    IOBinding wins at every size (and has the shorter tail), so `run` always uses it. We keep the copy of
    each new input into the bound buffer (np.copyto): a real application writes each image there too.

    Session settings (`options`, `caller`): `python bench/ort_floor.py export/lenet_2k` times lenet_2k and
    its floor side by side under this class and each alternative it was chosen over (bench/ort_floor.md).
    What is left above the floor is onnxruntime itself: a fixed cost per kernel (0.4-0.6 µs for a MaxPool,
    a no-copy Flatten or the Gemm; ~1.1-1.8 µs for each NCHWc Conv with its layout work) for the 7 kernels
    ORT_ENABLE_ALL makes of lenet_2k, ~1 µs of arithmetic. No gain beyond noise, or a loss: intra-op
    spinning off, per-session threads off, denormals as zero, memory patterns or reuse off, an env-wide
    arena, a static batch dimension (file or free-dimension override), ceil_mode=0 pools, NCHWc off for
    ALL, the head rewritten as a 2×2 Conv, MatMul+Add, Reshape or Einsum, onnxruntime 1.20 and 1.26.
    (The IOBinding table above was taken with the arena on and the public call.)
    """

    def __init__(self, model: Path | bytes, providers: list[Any], threads: int | None):
        import onnxruntime as ort

        source = str(model) if isinstance(model, Path) else model
        try:
            self.session = ort.InferenceSession(source, self.options(threads), providers=providers)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf/… classes
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            where = model if isinstance(model, Path) else "model"
            raise EdgekitError(f"{where}: onnxruntime cannot load it ({first})") from None
        self.providers = self.session.get_providers()
        self.input = self.session.get_inputs()[0].name
        # An fp16 variant may take float16 input (converted without keep_io_types): feed it that.
        self.dtype = np.float16 if self.session.get_inputs()[0].type == "tensor(float16)" else np.float32
        self.output = self.session.get_outputs()[0].name
        self._bound: dict[tuple[int, ...], tuple[Callable[[], None], np.ndarray, np.ndarray]] = {}
        self.run_options = ort.RunOptions()  # one object for every call: see `caller`

    def options(self, threads: int | None) -> Any:
        """The SessionOptions every session gets (bench/ort_floor.py overrides this to compare others)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: onnxruntime's default, one per physical core
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # ALL adds the NCHWc layout kernels: lenet_2k 2.11× the floor against 2.76× with EXTENDED.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The CPU arena (BFC: a lock, bins, splits and merges) costs more per call than plain malloc for
        # the one block of intermediates a call allocates (the floor allocates none): lenet_2k/floor fell
        # by 0.03-0.14 (median 0.07) in each of 8 interleaved A/B runs, e.g. 2.24× → 2.17×; the larger
        # bundles (mobilenet_tiny, resnet_*, batch 1 and 32) stayed within ±3% either way.
        options.enable_cpu_mem_arena = False
        options.log_severity_level = 3  # errors only: no warnings about unused initializers
        return options

    def _bind(self, x: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
        """Buffers for this input shape: the output shape comes from one plain run (dynamic axes)."""
        try:
            first = self.session.run([self.output], {self.input: x})[0]
        except Exception as e:  # e.g. a provider without a kernel for an op of this variant
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EdgekitError(f"onnxruntime ({self.providers[0]}) cannot run it ({first_line})") from None
        buffer, out = np.empty_like(x), np.empty_like(first)
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input, buffer)  # bound by reference: writing `buffer` feeds the model
        binding.bind_output(self.output, "cpu", 0, out.dtype, out.shape, out.ctypes.data)
        self._bound[x.shape] = (self.caller(binding), buffer, out)  # `out` lives as long as the binding
        return self._bound[x.shape]

    def caller(self, binding: Any) -> Callable[[], None]:
        """One run of the bound buffers. Not `session.run_with_iobinding(binding)`: with no RunOptions the
        C++ side builds a default one inside every call, and the Python wrapper (onnxruntime 1.32) reads a
        run config entry and checks WebGPU graph capture first; given a RunOptions without that entry it
        raises and catches an exception, ~45 µs. Calling the bound C++ session with one reused RunOptions,
        lenet_2k went 10.3 → 8.0 µs and the Identity floor 4.7 → 2.9 µs (thread CPU time, best of 11
        interleaved rounds; bench/ort_floor.md). The public call stays the fallback should onnxruntime
        rename its private `_sess`/`_iobinding`."""
        session, raw = getattr(self.session, "_sess", None), getattr(binding, "_iobinding", None)
        if session is None or raw is None:
            return functools.partial(self.session.run_with_iobinding, binding)
        return functools.partial(session.run_with_iobinding, raw, self.run_options)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits for `x`. The array returned is reused by the next call with the same input shape."""
        x = np.ascontiguousarray(x, dtype=self.dtype)
        run, buffer, out = self._bound.get(x.shape) or self._bind(x)
        np.copyto(buffer, x)
        run()
        return out


class OrtRuntime:
    """onnxruntime with one execution provider and its fallbacks (`edgekit.ort_providers`: TensorRT → CUDA →
    CPU), with the provider's options for the variant (TensorRT: engine cache, precision, shape profile)."""

    variants = None  # every variant of the bundle

    def __init__(self, provider: str):
        self.provider = provider
        self.install = ort_providers.INSTALL.get(provider)  # what to install when the provider is missing

    def available(self, bundle: Any = None) -> tuple[bool, str]:
        import onnxruntime as ort

        have = ort.get_available_providers()
        if self.provider not in have:
            missing = f"onnxruntime {ort.__version__} has no {self.provider} (it has {', '.join(have)})"
            return False, f"{missing}; {self.install}" if self.install else missing
        return True, ""

    def load(self, bundle: Any, variant: str, threads: int | None) -> OrtSession:
        file = self.file(bundle, variant)
        refused = ort_providers.refusal(self.provider, bundle, variant, file)
        if refused:  # said before the provider spends minutes failing on it
            raise RuntimeUnavailable(refused)
        providers = ort_providers.providers_for(self.provider, bundle.meta, variant)
        session = OrtSession(file, providers, threads)
        if session.providers[0] != self.provider:  # onnxruntime falls back to CPU with only a log line
            raise RuntimeUnavailable(f"{file}: onnxruntime could not start {self.provider}")
        return session

    def file(self, bundle: Any, variant: str) -> Path:
        return Path(bundle.path) / bundle.meta.variants[variant].file

    def run(self, session: OrtSession, x: np.ndarray) -> np.ndarray:
        return session.run(x)

    __call__ = load


class TorchSession:
    def __init__(self, model: Any, device: str):
        self.model, self.device = model, device

    def run(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            logits = self.model(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
            return logits.float().cpu().numpy()  # .cpu() waits for the GPU: the time includes the kernels


class TorchRuntime:
    """The run's checkpoint (`source.run`/`source.checkpoint`) rebuilt with edgekit.models, in eager torch."""

    variants = ("fp32",)  # the checkpoint is the fp32 model; quantized variants exist only as ONNX

    def __init__(self, device: str):
        self.device = device

    def checkpoint(self, bundle: Any) -> Path:
        """The run's checkpoint. `source` paths are relative to where export ran: try the working folder,
        then the project the bundle sits in (`<project>/export/<name>`); `checkpoint` may be a path
        (`runs/x/best.pt`) or a name inside `run`."""
        source = bundle.meta.source
        run, ckpt = Path(source.run), Path(source.checkpoint or BEST_FILE)
        files = [ckpt, run / ckpt.name] if ckpt.parent != Path(".") else [run / ckpt]
        roots = [Path("."), Path(bundle.path).resolve().parent.parent]
        candidates = [root / f for f in files for root in roots]  # an absolute f stays itself
        return next((c for c in candidates if c.is_file()), candidates[0])

    def available(self, bundle: Any = None) -> tuple[bool, str]:
        try:
            import torch
        except ImportError:
            return False, "torch is not installed"
        if self.device == "cuda" and not torch.cuda.is_available():
            return False, "torch has no CUDA device here"
        if bundle is not None and not bundle.meta.source.run:
            return False, "the bundle names no source run"
        if bundle is not None and not self.checkpoint(bundle).is_file():
            return False, f"{self.checkpoint(bundle)}: run checkpoint not found"
        return True, ""

    def load(self, bundle: Any, variant: str, threads: int | None) -> TorchSession:
        import torch

        from edgekit.models import from_checkpoint
        from edgekit.runs import load_checkpoint

        if variant not in self.variants:
            raise RuntimeUnavailable(f"torch-{self.device} runs the fp32 checkpoint only, not '{variant}'")
        ckpt = load_checkpoint(self.checkpoint(bundle))
        model = from_checkpoint(ckpt, self.checkpoint(bundle))  # a pruned model's widths are in its options
        if threads and self.device == "cpu":
            torch.set_num_threads(threads)  # process-wide in torch; bench states it per row
        return TorchSession(model.eval().to(self.device), self.device)

    def file(self, bundle: Any, variant: str) -> Path:
        return self.checkpoint(bundle)

    def run(self, session: TorchSession, x: np.ndarray) -> np.ndarray:
        return session.run(x)

    __call__ = load


RUNTIMES.register("ort-cpu")(OrtRuntime(ort_providers.CPU))
RUNTIMES.register("ort-cuda")(OrtRuntime(ort_providers.CUDA))
RUNTIMES.register("ort-trt")(OrtRuntime(ort_providers.TRT))
RUNTIMES.register("torch-cpu")(TorchRuntime("cpu"))
RUNTIMES.register("torch-cuda")(TorchRuntime("cuda"))


def runtime(name: str, where: str = "--runtime") -> OrtRuntime | TorchRuntime:
    """The registered runtime called `name`, or a did-you-mean error."""
    return RUNTIMES.get(name, where).fn
