"""The `edgekit.json` schema: what a bundle says about its model, input, accuracy and variants (no torch)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgekit.images import RESIZE

FORMAT = "edgekit-bundle/1"
META_FILE = "edgekit.json"
MODEL_FILE = "model.onnx"
EVAL_FILE = "eval.npz"
VAL_FILE = "val.npz"
CALIB_FILE = "calib.npz"
SCALE = "x/255 then (x-mean)/std"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputSpec(_Strict):
    name: str = "input"
    shape: list[int | str]  # [batch, C, H, W]; batch is "batch" (any size) or a fixed int
    layout: Literal["NCHW"] = "NCHW"
    dtype: Literal["float32"] = "float32"
    mean: list[float]  # per channel, on the 0..1 scale
    std: list[float]
    image_size: int  # images are resized to image_size × image_size before scaling
    resize: str = RESIZE  # how: the function training and `predict` share
    scale: Literal["x/255 then (x-mean)/std"] = SCALE


class OutputSpec(_Strict):
    name: str = "logits"
    shape: list[int | str]  # [batch, num_classes]: raw logits, no softmax


class Accuracy(_Strict):
    val: float | None = None  # as measured in training on the checkpoint's weights
    test: float | None = None


class Versions(_Strict):
    edgekit: str
    torch: str
    onnx: str
    onnxruntime: str
    onnxslim: str | None = None
    opset: int


class Source(_Strict):
    run: str
    checkpoint: str
    epoch: int


class Parity(_Strict):
    max_abs_diff: float
    top1_agreement: float
    images: int
    atol: float


class EvalSet(_Strict):
    file: str = EVAL_FILE
    images: int
    split: str = "test"
    sampled: bool = False  # True: a stratified sample of the split, not all of it
    preprocessed: Literal[True] = True


class CalibSet(_Strict):
    """A sample of the training split, preprocessed like eval.npz: what int8 calibration runs on."""

    file: str = CALIB_FILE
    images: int
    split: str = "train"  # never the test split: calibrating on eval.npz would flatter the int8 accuracy
    preprocessed: Literal[True] = True


class Variant(BaseModel):
    """One model file of the bundle; later steps (quantize) may add their own keys (method, calibration…)."""

    model_config = ConfigDict(extra="allow")

    file: str
    bytes: int = Field(ge=0)
    dtype: Literal["float32", "float16", "int8"]
    accuracy: float | None = None  # top-1 on eval.npz with onnxruntime (CPU)
    source: str | None = None  # the variant this one was made from (quantize: "fp32")
    agreement: float | None = None  # top-1 agreement with `source` on eval.npz


class BundleMeta(_Strict):
    format: Literal["edgekit-bundle/1"] = FORMAT
    name: str
    class_names: list[str]
    input: InputSpec
    output: OutputSpec
    params: int
    macs: int
    accuracy: Accuracy
    recipe: dict[str, Any]
    versions: Versions
    source: Source
    parity: Parity
    eval: EvalSet
    calib: CalibSet | None = None  # bundles exported before calib.npz existed have none
    # The run's val split: what quantize chooses on (format, --max-drop, sensitivity), so that eval.npz,
    # the test split, is read once, after the choice. Bundles exported before val.npz existed have none.
    val: EvalSet | None = None
    variants: dict[str, Variant]
