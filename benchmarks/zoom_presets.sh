#!/bin/bash
# docs/img/zoom-presets.png: one tuning photo protected alone with each FMD+ preset (and --paper), MobileNetV2
# authorized, then 100%-zoom crops beside the original (benchmarks/zoom.py prints PSNR, SSIM, HaarPSI, ring ratio).
#   bash benchmarks/zoom_presets.sh [PHOTO] [OUT]
set -euo pipefail
PHOTO=${1:-../shared/kit/photos/imagenet/aib_000.jpg}
OUT=${2:-runs/zoom}
B=.venv/bin/onlymine
IN="$OUT/input"
mkdir -p "$IN"
cp "$PHOTO" "$IN/"
NAME=$(basename "${PHOTO%.*}")
$B protect "$IN" -o "$OUT/paper" --paper --no-progress
$B protect "$IN" -o "$OUT/fast" --preset fast --no-progress
$B protect "$IN" -o "$OUT/high" --no-progress
$B protect "$IN" -o "$OUT/mid" --preset mid --no-progress
.venv/bin/python benchmarks/zoom.py "$PHOTO" paper="$OUT/paper/$NAME.png" fast="$OUT/fast/$NAME.png" \
  "high (default)=$OUT/high/$NAME.png" mid="$OUT/mid/$NAME.png" -o docs/img/zoom-presets.png --size 176
