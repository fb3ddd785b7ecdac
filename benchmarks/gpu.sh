#!/usr/bin/env bash
# FMD throughput on a CUDA machine, in under 5 minutes: MobileNetV2, EfficientNet-Lite0 and a random-init
# ResNet50 (NOT pretrained: speed only) at batch 64 and 256, fp32 against bf16 autocast.
# Writes docs/results/gpu_throughput.jsonl (one line per configuration) and prints a Markdown table.
# Usage: bash benchmarks/gpu.sh [extra gpu_throughput.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: run on the GPU machine (CPU check: python benchmarks/gpu_throughput.py --device cpu --dry-run)")'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 290 "$PY" benchmarks/gpu_throughput.py --device cuda --batch 64 256 --precision fp32 bf16 --steps 10 \
  --json docs/results/gpu_throughput.jsonl "$@"
