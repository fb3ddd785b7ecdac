"""100%-zoom crops of one photo and its protected copies, side by side (no resampling: one file pixel, one
screen pixel), for docs/: what a viewer sees when they look closely.

    python benchmarks/zoom.py ORIGINAL high=OUT1/x.png mid=OUT2/x.png -o docs/img/zoom.png [--box X,Y,SIZE]

It also prints, per protected file, PSNR, SSIM, HaarPSI and the ring ratio (mean |change| outside the authorized
model's centre crop over the mean inside it; ``--model``, default MobileNetV2's crop) from onlymine.metrics.

The default box straddles the edge of the authorized model's centre crop (the shorter side's 224/256 centre
square), where a perturbation that lives only inside the crop shows as a frame.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

LABEL_H = 22


def default_box(w: int, h: int, size: int) -> tuple[int, int]:
    """A square whose centre is the left edge of the centre crop (crop fraction 224/256), half-way down."""
    side = min(w, h) * 224 / 256
    left = (w - side) / 2
    return max(0, min(w - size, round(left - size / 2))), max(0, min(h - size, round(h / 2 - size / 2)))


def quality(original: str, protected: list[tuple[str, str]], spec: str) -> None:
    from onlymine import io, metrics
    from onlymine.models import load_model
    from onlymine.models.preprocess import crop_box

    clean = io.load_image(Path(original)).rgb
    cfg = load_model(spec).cfg
    box = crop_box(*clean.shape[-2:], cfg)
    print("| file | PSNR dB | SSIM | HaarPSI | ring ratio |\n|---|---|---|---|---|")
    for label, path in protected:
        q = metrics.image_quality(clean, io.load_image(Path(path)).rgb, with_lpips=False, box=box)
        print(f"| {label} | {q['psnr']:.2f} | {q['ssim']:.3f} | {q['haarpsi']:.3f} | {q['ring_ratio']:.2f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("original")
    ap.add_argument("protected", nargs="+", metavar="LABEL=PATH")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--box", help="X,Y,SIZE in the original's pixels (default: across the crop's left edge)")
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--model", default="torchvision:mobilenet_v2", help="whose centre crop the ring ratio uses")
    a = ap.parse_args(argv)
    with Image.open(a.original) as im:
        original = ImageOps.exif_transpose(im).convert("RGB")
    tiles = [("original", original)]
    for item in a.protected:
        label, _, path = item.partition("=")
        with Image.open(path) as im:
            tiles.append((label, im.convert("RGB")))
    w, h = original.size
    if a.box:
        x, y, size = (int(v) for v in a.box.split(","))
    else:
        size = a.size
        x, y = default_box(w, h, size)
    sheet = Image.new("RGB", (len(tiles) * (size + 4), size + LABEL_H), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (label, im) in enumerate(tiles):
        if im.size != (w, h):
            raise SystemExit(f"{label}: size {im.size} differs from the original's {(w, h)}")
        sheet.paste(im.crop((x, y, x + size, y + size)), (k * (size + 4), LABEL_H))
        draw.text((k * (size + 4) + 4, 4), label, fill="black")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(a.out)
    print(f"{a.out}: box x={x} y={y} size={size} of {Path(a.original).name} ({w}x{h})")
    quality(a.original, [(t.partition("=")[0], t.partition("=")[2]) for t in a.protected], a.model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
