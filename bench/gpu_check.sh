#!/usr/bin/env bash
# Issue 14's GPU check, one script, meant for under 8 minutes on one datacenter GPU (not yet run on one):
# installs the GPU set, runs the `cuda` tests, measures training img/s (bench/gpu_train_speed.py), benches
# mobilenet_tiny's bundle on ort-cuda, ort-trt (fp32, fp16, int8) and torch-cuda at batch 1 and 256, and
# writes bench/gpu.md (bench/gpu_report.py). Run from the repository root: bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
export EDGEKIT_CACHE="$work/cache" WANDB_MODE=disabled
notes=()
step() { echo "== $* ($(date +%T))"; }

step "install the GPU set"
# onnxruntime and onnxruntime-gpu install the same module: one replaces the other (docs/gpu.md)
python -m pip uninstall -y -q onnxruntime
python -m pip install -q onnxruntime-gpu || notes+=("onnxruntime-gpu could not be installed")
if python -m pip install -q tensorrt; then
  # onnxruntime's TensorRT provider loads libnvinfer from the library path; the wheel keeps it here
  trt_libs=$(python -c "import os, tensorrt_libs; print(os.path.dirname(tensorrt_libs.__file__))" 2>/dev/null)
  [ -n "$trt_libs" ] && export LD_LIBRARY_PATH="$trt_libs:${LD_LIBRARY_PATH:-}"
else
  notes+=("the tensorrt wheels could not be installed: the ort-trt rows and tests are skipped")
fi
python -c "import onnxruntime as o; print('providers:', o.get_available_providers())"

step "pytest -m cuda"
python -m pytest -q -m cuda -rs tests 2>&1 | tee "$work/pytest.txt" | tail -20
cuda_tests=$(tail -1 "$work/pytest.txt")

step "training img/s (eager, channels_last, compile; batch 256 and 1024; bare compiled step beside)"
timeout 240 python bench/gpu_train_speed.py --device cuda --out bench/gpu_train.json \
  || notes+=("gpu_train_speed.py did not finish in 4 minutes")

step "mobilenet_tiny: train, export, quantize (fp16, int8 for TensorRT)"
edgekit train recipes/mobilenet_tiny.yaml train.epochs=10 --runs-dir "$work/runs" \
  && edgekit export "$work/runs/mobilenet_tiny" --out "$work/export" \
  && edgekit quantize "$work/export/mobilenet_tiny" --fp16 \
  && edgekit quantize "$work/export/mobilenet_tiny" --int8 --target trt \
  || notes+=("the mobilenet_tiny bundle could not be made")

step "edgekit bench on ort-cuda, ort-trt, torch-cuda (ort-cpu for reference), batch 1 and 256"
(cd "$work" && edgekit bench export/mobilenet_tiny --runtime ort-cpu,ort-cuda,ort-trt,torch-cuda \
  --batch 1,256 --out "$work/bench") || notes+=("edgekit bench failed (see its line above)")

step "bench/gpu.md"
[ -f bench/gpu_train.json ] || notes+=("no training figures")
python bench/gpu_report.py --train bench/gpu_train.json --bench "$work/bench" --out bench/gpu.md
{
  echo
  echo "## Notes"
  echo
  echo "- \`pytest -m cuda\`: $cuda_tests"
  for n in "${notes[@]}"; do echo "- $n"; done
} >> bench/gpu.md
cat bench/gpu.md
