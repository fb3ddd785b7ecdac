#!/usr/bin/env bash
# Issue 21's CPU figures, in two runs of benchmarks/speed.py on one machine (ratios within each run):
#  1. this CPU as it is (on a Xeon with AMX-BF16: the default, fast and mid presets, main's mid of before held
#     views, the naive paper loop, torchattacks PGD and the per-step comparison);
#  2. the same CPU capped to AVX2 (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2: no AVX-512, no AMX), the
#     instruction set of a CPU without AMX, for the naive loop, the default, fast and mid. An emulation on the same
#     cores and caches, not a different machine: it says what the missing instructions cost, nothing about
#     memory bandwidth.
# "main mid" is the mid preset as main had it before held views (robust keep, views redrawn every step, bf16 on
# an AMX CPU), here also without the kept heap (--no-keep-memory) and the fused convolutions (--no-fuse): the
# "at least 2x faster at equal protection" comparison runs in the same process tree. It runs today's network
# passes (stopped after the deepest tap), which main did not have, so the ratio understates the gain.
# The latest run in docs/performance.md (docs/results/speed-cpu-*) was made at commit caa9e38.
# Usage: bash benchmarks/speed_cpu_kinds.sh [PHOTOS]     (6 photos: about 20 minutes on a quiet 2-core machine)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
n=${1:-6}
"$PY" benchmarks/speed.py -o docs/results/speed-cpu-native --photos "$n" --rounds 1 \
  --methods "naive,torchattacks,onlymine,onlymine+fuse=False,onlymine+preset=fast,onlymine+preset=mid,onlymine+preset=mid+redraw=1+robust_keep=True+precision=bf16+keep_memory=False+fuse=False,step"
ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 "$PY" benchmarks/speed.py -o docs/results/speed-cpu-avx2 \
  --photos "$n" --rounds 1 --methods "naive,onlymine,onlymine+preset=fast,onlymine+preset=mid,step"
