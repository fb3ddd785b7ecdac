"""What a budget costs in quality before any attack runs: PSNR and SSIM of a random-sign change that fills it.

Fifty sign steps move nearly every pixel to the edge of its budget, so the saved file's quality is set by the budget
more than by the optimisation; this proxy fills the budget with random signs (8-bit rounding included) to choose
budget settings cheaply. On the 30 tuning photos it reads about 0.2 dB and 0.03-0.07 SSIM below the attack's own
output (the attack's change is smoother than random signs): docs/mid-ssim.md.

    python benchmarks/ssim_proxy.py [--split tune] texture:10:0.3 ssim:16:0.85 ...

Each budget is ``texture:EPS:FLOOR`` (attacks.step.texture_budget) or ``ssim:EPS:TARGET`` (attacks.step.ssim_budget),
EPS in 1/255 units.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from onlymine import metrics
from onlymine.attacks.step import ssim_budget, texture_budget
from onlymine.experiments.imagenet import KIT_IMAGENET, select_files
from onlymine.io.files import quantize
from onlymine.io.loading import load_image


def budget(spec: str, x: torch.Tensor) -> torch.Tensor:
    kind, eps, value = spec.split(":")
    if kind == "texture":
        return texture_budget(x, float(eps) / 255, float(value))
    if kind == "ssim":
        return ssim_budget(x, float(eps) / 255, float(value))
    raise SystemExit(f"unknown budget kind {kind!r} in {spec!r}: use texture:EPS:FLOOR or ssim:EPS:TARGET")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("budgets", nargs="+", metavar="KIND:EPS:VALUE")
    ap.add_argument("--data", type=Path, default=KIT_IMAGENET)
    ap.add_argument("--split", default="tune", choices=["all", "tune", "test", "fresh"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    images = [load_image(f).rgb for f in select_files(args.data, "all", None, args.split)]
    print(f"{len(images)} photos ({args.split}); mean (min) over photos")
    for spec in args.budgets:
        gen = torch.Generator().manual_seed(args.seed)
        ps, ss = [], []
        for x in images:
            sign = torch.randint(0, 2, x.shape, generator=gen).float() * 2 - 1
            y = quantize((x + budget(spec, x) * sign).clamp(0, 1))
            ps.append(metrics.psnr(x, y))
            ss.append(metrics.ssim(x, y))
        print(f"{spec:20s} PSNR {sum(ps) / len(ps):6.2f} ({min(ps):.2f})  SSIM {sum(ss) / len(ss):.3f} ({min(ss):.3f})")


if __name__ == "__main__":
    main()
