"""The arithmetic bound on protection speed: FLOPs of one FMD step x steps / the machine's peak.

FLOPs of one forward + backward (gradient to the input only, as in FMD) of the authorized model at its
input size, counted with ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products;
elementwise work, the resize and normalisation are not counted, so the bound is optimistic). Peak from
:mod:`machine` (cores x nominal clock x FLOPs per cycle). Optionally compares with a measured images/s.

    python benchmarks/flops.py --measured 0.5      # images/s from benchmarks/speed.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
import machine  # noqa: E402

from onlymine.attacks.defaults import layers_for  # noqa: E402
from onlymine.models import load_model  # noqa: E402


def step_flops(spec: str) -> float:
    """FLOPs per image of one FMD step (forward with the feature tap + backward to the input)."""
    clf = load_model(spec)
    layer = layers_for("fmd", clf)[0]
    h, w = clf.cfg.input_size
    x = torch.rand(1, 3, h, w, requires_grad=True)
    with FlopCounterMode(display=False) as fc:
        logits, feats = clf.forward_features(x, [layer])
        j = feats[layer].float().pow(2).mean() - 0.01 * logits.float().logsumexp(-1).sum()
        torch.autograd.grad(j, x)
    return float(fc.get_total_flops())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="torchvision:mobilenet_v2")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--measured", type=float, help="measured images/s (N = --steps) to express as a fraction")
    a = p.parse_args(argv)
    peak = machine.cpu_peak()
    f = step_flops(a.model)
    out = {"model": a.model, "gflop_per_step": round(f / 1e9, 4), "gflop_per_image": round(f * a.steps / 1e9, 2),
           "cpu": peak}
    for kind in ("fp32", "bf16"):
        g = peak.get(f"{kind}_peak_gflops")
        if g:
            out[f"bound_images_per_s_{kind}"] = round(g * 1e9 / (f * a.steps), 3)
    if a.measured and out.get("bound_images_per_s_fp32"):
        out["measured_images_per_s"] = a.measured
        out["fraction_of_fp32_bound"] = round(a.measured / out["bound_images_per_s_fp32"], 4)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
