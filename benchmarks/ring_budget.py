"""Is a ring ratio below 1 a frame, or the photo? The ring ratio of the *budget* beside that of the saved change.

metrics.ring_ratio divides the mean |change| outside the authorized centre crop by the mean inside. A budget that
follows content (attacks.step.ssim_budget, texture_budget) already differs between the two regions when the photo's
centre holds more texture than its border; a change that fills its budget evenly everywhere then has the budget's
ratio, and no step at the crop's edge. This prints, per protect run, the mean over photos of the budget's ratio, of
the saved change's, and of the share of the budget the change uses inside and outside the crop.

    python benchmarks/ring_budget.py ORIGINALS RUN_DIR [RUN_DIR ...] [--model SPEC]

Each RUN_DIR is an `onlymine protect` output folder (its manifest.jsonl names the settings: eps, ssim_budget,
texture, texture_floor).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from onlymine.attacks.step import ssim_budget, texture_budget
from onlymine.io.loading import load_image
from onlymine.models import load_model
from onlymine.models.preprocess import crop_box


def _inside(shape: torch.Size, box: tuple[int, int, int, int]) -> torch.Tensor:
    t, left, h, w = box
    inside = torch.zeros(shape[-2:], dtype=torch.bool)
    inside[t : t + h, left : left + w] = True
    return inside


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("originals", type=Path)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--model", default="torchvision:mobilenet_v2")
    args = ap.parse_args()
    cfg = load_model(args.model).cfg
    for run in args.runs:
        rows = [json.loads(line) for line in (run / "manifest.jsonl").read_text().splitlines() if line.strip()]
        rows = [r for r in rows if r.get("status") == "ok"]
        out: dict[str, list[float]] = {"budget": [], "change": [], "fill_in": [], "fill_out": []}
        for r in rows:
            s = r["settings"]["config"]
            x = load_image(args.originals / Path(r["input"]).name).rgb
            y = load_image(r["output"]).rgb
            if s.get("ssim_budget", 0) > 0:
                b = ssim_budget(x, s["eps"], s["ssim_budget"]).expand_as(x)
            elif s.get("texture", False):
                b = texture_budget(x, s["eps"], s["texture_floor"]).expand_as(x)
            else:
                b = torch.full_like(x, s["eps"])
            inside = _inside(x.shape, crop_box(*x.shape[-2:], cfg))
            d = (y - x).abs()
            out["budget"].append(float(b.mean(0)[~inside].mean() / b.mean(0)[inside].mean()))
            out["change"].append(float(d.mean(0)[~inside].mean() / d.mean(0)[inside].mean()))
            out["fill_in"].append(float(d[:, inside].sum() / b[:, inside].sum()))
            out["fill_out"].append(float(d[:, ~inside].sum() / b[:, ~inside].sum()))
        mean = {k: sum(v) / len(v) for k, v in out.items()}
        print(f"{run}: {len(rows)} photos; ring ratio of the budget {mean['budget']:.2f}, of the saved change "
              f"{mean['change']:.2f}; share of the budget used inside the crop {mean['fill_in']:.2f}, outside "
              f"{mean['fill_out']:.2f}")


if __name__ == "__main__":
    main()
