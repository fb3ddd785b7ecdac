"""Where the CPU time of FMD+ steps goes, by PyTorch operator (torch.profiler), on 8 kit photos of 512x512.

    python benchmarks/step_ops.py [--one-pass] [--steps 6] [--rows 25]

``--one-pass`` profiles the per-step comparison's FMD+ (one view per step from its bank, no antialiasing filter on
the views: the work of one PGD step, as benchmarks/speed.py's ``step`` method runs it); without it, the default
preset. One run warms up, the next is profiled; the table is sorted by self CPU time. The photos' decoding and the
attack's one-off work (budgets, random start) are in it too, so it reads per call, not per step.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from onlymine import io
from onlymine.attacks import FMDPlus
from onlymine.attacks.defaults import MEASURED
from onlymine.experiments.imagenet import KIT_IMAGENET
from onlymine.models import load_model
from onlymine.models.fast import fast_classifier
from onlymine.runtime import keep_freed_memory

SPEC = "torchvision:mobilenet_v2"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--one-pass", action="store_true")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=KIT_IMAGENET)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    keep_freed_memory()
    images = [x for x in (io.load_image(p).rgb for p in sorted(a.data.glob("aib_0*.jpg"))) if x.shape == (3, 512, 512)]
    if len(images) < 8:
        raise SystemExit(f"{a.data}: fewer than 8 photos of 512x512 named aib_0*")
    batch = torch.stack(images[:8])
    clf = load_model(SPEC)
    layers = list(MEASURED[("fmd+", SPEC)]["layers"])
    fast = fast_classifier(clf, keep=layers)
    y = clf.predict(batch)[0]
    one = {"views": 1, "frame": False, "shuffle": 0, "antialias": False, "alpha": 1 / 255} if a.one_pass else {}
    attack = FMDPlus(fast, layers, steps=a.steps, **one)
    attack(batch, y)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        attack(batch, y)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows))


if __name__ == "__main__":
    main()
