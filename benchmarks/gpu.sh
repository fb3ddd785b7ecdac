#!/usr/bin/env bash
# On a CUDA machine, in under 5 minutes: (1) FMD step throughput of MobileNetV2, EfficientNet-Lite0 and a
# random-init ResNet50 (NOT pretrained: speed only) at batch 64 and 256, fp32 against bf16 autocast
# (docs/results/gpu_throughput.jsonl, one line per configuration, and a Markdown table); (2) the `high` and `mid`
# presets end to end on 16 photos (kit photos when present, else samples/), and the same `high` run on a local Ray
# cluster with one actor per GPU (docs/results/gpu_presets.txt: seconds and images/s per run).
# Usage: bash benchmarks/gpu.sh [extra gpu_throughput.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: run on the GPU machine (CPU check: python benchmarks/gpu_throughput.py --device cpu --dry-run)")'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 120 "$PY" benchmarks/gpu_throughput.py --device cuda --batch 64 256 --precision fp32 bf16 --steps 10 \
  --json docs/results/gpu_throughput.jsonl "$@"

photos=${PHOTOS:-../shared/kit/photos/imagenet}
[ -d "$photos" ] || photos=samples
tmp=$(mktemp -d)
mkdir "$tmp/in"
find "$photos" -maxdepth 1 -type f \( -name '*.jpg' -o -name '*.png' \) | sort | head -16 | xargs -I{} cp {} "$tmp/in/"
n=$(ls "$tmp/in" | wc -l)
gpus=$(nvidia-smi -L 2>/dev/null | wc -l); [ "$gpus" -ge 1 ] || gpus=1
report=docs/results/gpu_presets.txt
echo "# bash benchmarks/gpu.sh, $(date -u +%F), $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), $n photos from $photos" > "$report"
run() {  # name, timeout, onlymine protect options...
  local name=$1 limit=$2; shift 2
  local t0; t0=$(date +%s.%N)
  if timeout "$limit" "$PY" -m onlymine.cli protect "$tmp/in" -o "$tmp/$name" --no-progress "$@" | tail -1; then
    awk -v n="$n" -v a="$t0" -v b="$(date +%s.%N)" -v name="$name" \
      'BEGIN { printf "%-14s %7.1f s  %6.3f images/s\n", name, b - a, n / (b - a) }' | tee -a "$report"
  else
    echo "$name: did not finish within $limit s" | tee -a "$report"
  fi
}
run high 40 --device cuda --batch-size 16
run mid 60 --device cuda --batch-size 16 --preset mid
run "ray-x$gpus" 60 --ray local --workers "$gpus" --batch-size 16
rm -rf "$tmp"
