#!/usr/bin/env bash
# Train every shipped recipe on digits, export each to ./export/<name>/, and bench them all here with
# one thread at batch 1 and 32: writes bench/results.{json,csv,md} and bench/pareto.png.
#   bash bench/digits_bundles.sh
set -euo pipefail
cd "$(dirname "$0")/.."
for recipe in recipes/*.yaml; do
  name=$(basename "$recipe" .yaml)
  # base holds shared defaults; the teacher and the _kd students are measured by bench/distill.py.
  case "$name" in base|teacher_*|*_kd) continue ;; esac
  echo "$name"
  edgekit train "$recipe" track.wandb=disabled --runs-dir runs/digits_bundles > /dev/null
  newest=$(printf '%s\n' runs/digits_bundles/"$name" runs/digits_bundles/"$name"-[0-9]* | grep -v '\*' | sort -V | tail -1)
  edgekit export --onnx "$newest" --force > /dev/null
done
edgekit bench --threads 1 --batch 1,32 --out bench
