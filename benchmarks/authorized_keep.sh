#!/usr/bin/env bash
# Issue 23's evidence: every kit ImageNet photo protected with each ImageNet model authorized in turn, with the
# default preset and with BSR views at eps 16 (--views 5 --shuffle 3 --steps 50), then checked by an outsider's
# script (benchmarks/check_published.py: PIL + torchvision transforms only).
#   bash benchmarks/authorized_keep.sh [KIT_PHOTOS] [OUT]      # ~3 h on a 2-core CPU
set -euo pipefail
cd "$(dirname "$0")/.."
photos=${1:-../shared/kit/photos/imagenet}
out=${2:-runs/authorized-keep}
bin=${ONLYMINE:-.venv/bin/onlymine}
py=${PYTHON:-.venv/bin/python}
for spec in torchvision:mobilenet_v2 efficientnet-lite:lite0 efficientnet-lite:lite1 efficientnet-lite:lite2; do
  name=${spec#*:}
  $bin protect "$photos" -o "$out/$name-default" --model "$spec" --resume --no-progress | tail -1
  $bin protect "$photos" -o "$out/$name-bsr16" --model "$spec" --views 5 --shuffle 3 --steps 50 --resume \
    --no-progress | tail -1
done
$py benchmarks/check_published.py "$out"/*-default "$out"/*-bsr16 --json "$out/check.json"
