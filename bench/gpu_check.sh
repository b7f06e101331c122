#!/usr/bin/env bash
# Issue 14's GPU check, one script, meant for under 8 minutes on one datacenter GPU: installs the GPU set,
# runs the `cuda` tests, measures training img/s (bench/gpu_train_speed.py), benches mobilenet_tiny's bundle
# on the runtimes this machine has (ort-cuda and ort-trt when onnxruntime has their providers, torch-cuda,
# ort-cpu for reference) at batch 1 and 256, and writes bench/gpu.md (bench/gpu_report.py).
#
#   bash bench/gpu_check.sh            # from the repository root
#   GPU_WHEELS=DIR bash bench/gpu_check.sh    # a machine with no network: the GPU set from wheels in DIR
#   GPU_WHEELS=none bash bench/gpu_check.sh   # keep the onnxruntime installed (ort-cuda/ort-trt if it has them)
#   GPU_CHECK_DEVICE=cpu bash bench/gpu_check.sh  # smoke run of the script itself on a machine without a GPU
#   GPU_CHECK_ONLY=inference bash bench/gpu_check.sh  # rerun the bundle and bench steps, keep gpu_train.json
#   GPU_CHECK_OUT=DIR bash bench/gpu_check.sh  # gpu.md and gpu_train.json into DIR instead of bench/
set -uo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
export EDGEKIT_CACHE="$work/cache" WANDB_MODE=disabled
device=${GPU_CHECK_DEVICE:-cuda}
only=${GPU_CHECK_ONLY:-all}
out=${GPU_CHECK_OUT:-bench}
mkdir -p "$out"
train_json="$out/gpu_train.json"
report="$out/gpu.md"
notes=()
# a figure from an earlier run must not pass for this one, unless only inference is rerun
[ "$only" = inference ] || rm -f "$train_json"
step() { echo "== $* ($(date +%T))"; }

step "install the GPU set"
# onnxruntime and onnxruntime-gpu install the same module: one replaces the other (docs/gpu.md). The wheels
# are fetched first so that a machine that cannot get them keeps its working onnxruntime.
wheels="$work/wheels"
case "${GPU_WHEELS:-}" in
  none) fetch=(false) ;;
  "") fetch=(python -m pip download -q -d "$wheels" onnxruntime-gpu tensorrt) ;;
  *) fetch=(python -m pip download -q --no-index --find-links "$GPU_WHEELS" -d "$wheels" onnxruntime-gpu) ;;
esac
if "${fetch[@]}"; then
  python -m pip uninstall -y -q onnxruntime
  python -m pip install -q --no-index --find-links "$wheels" "$wheels"/*.whl \
    || notes+=("the GPU set in $wheels could not be installed")
else
  notes+=("onnxruntime-gpu was not installed (GPU_WHEELS=${GPU_WHEELS:-online}): ort-cuda and ort-trt run only if the installed onnxruntime has their providers")
fi
# onnxruntime's TensorRT provider loads libnvinfer from the library path; the wheel keeps it here
trt_libs=$(python -c "import os, tensorrt_libs; print(os.path.dirname(tensorrt_libs.__file__))" 2>/dev/null)
[ -n "$trt_libs" ] && export LD_LIBRARY_PATH="$trt_libs:${LD_LIBRARY_PATH:-}"
providers=$(python -c "import onnxruntime as o; print(' '.join(o.get_available_providers()))")
echo "onnxruntime providers: $providers"

cuda_tests="not run (GPU_CHECK_ONLY=$only)"
if [ "$only" != inference ]; then
  step "pytest -m cuda"
  python -m pytest -q -m cuda -rs tests 2>&1 | tee "$work/pytest.txt" | tail -25
  cuda_tests=$(tail -1 "$work/pytest.txt")

  step "training img/s (eager, channels_last, compile; batch 256 and 1024; bare compiled step beside)"
  speed=(--device "$device")
  [ "$device" = cpu ] && speed+=(--quick)
  timeout 300 python bench/gpu_train_speed.py "${speed[@]}" --out "$train_json" \
    || notes+=("gpu_train_speed.py failed or did not finish in 5 minutes")
fi

step "mobilenet_tiny: train, export, quantize (fp16, int8 for TensorRT)"
small=()
[ "$device" = cpu ] && small=(model.channels=[8,8,8,8] model.last_channels=16)
edgekit train recipes/mobilenet_tiny.yaml train.epochs=10 "train.device=$device" "${small[@]}" \
  --runs-dir "$work/runs" \
  && edgekit export "$work/runs/mobilenet_tiny" --out "$work/export" \
  && edgekit quantize "$work/export/mobilenet_tiny" --fp16 \
  && edgekit quantize "$work/export/mobilenet_tiny" --int8 --target trt \
  || notes+=("the mobilenet_tiny bundle could not be made")

# Only the runtimes this machine has: a named runtime without its provider is an error by design.
runtimes=ort-cpu
[[ " $providers " == *" CUDAExecutionProvider "* ]] && runtimes+=,ort-cuda
if [[ " $providers " == *" TensorrtExecutionProvider "* ]] && python -c "import tensorrt" 2>/dev/null; then
  runtimes+=,ort-trt
else
  notes+=("no TensorRT here (onnxruntime's TensorRT provider and the tensorrt wheels): no ort-trt rows")
fi
[ "$device" = cuda ] && runtimes+=,torch-cuda || runtimes+=,torch-cpu
step "edgekit bench on $runtimes, batch 1 and 256"
(cd "$work" && edgekit bench export/mobilenet_tiny --runtime "$runtimes" --batch 1,256 --out "$work/bench") \
  || notes+=("edgekit bench failed (see its line above)")

step "$report"
[ -f "$train_json" ] || notes+=("no training figures")
python bench/gpu_report.py --train "$train_json" --bench "$work/bench" --out "$report"
{
  echo
  echo "## Notes"
  echo
  echo "- \`pytest -m cuda\`: $cuda_tests"
  for n in "${notes[@]}"; do echo "- $n"; done
} >> "$report"
cat "$report"
