"""Where a protection step's time goes, and what each execution option saves.

Times, per image, one forward + backward (gradient to the input) of the authorized network at its input size
for every combination of BatchNorm folding, channels_last and bf16 autocast (via
:func:`onlymine.models.fast.fast_classifier`), and the differentiable crop + antialiased resize from a
full-resolution photo. Reports wall time and process CPU time (CPU time is steadier on a shared machine).

    python benchmarks/step_profile.py --threads 1 --batch 8          # one core, low noise
    python benchmarks/step_profile.py --threads 2 --batch 16
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

from onlymine.attacks.defaults import layers_for
from onlymine.models import load_model
from onlymine.models.fast import fast_classifier

sys.path.insert(0, str(Path(__file__).parent))
import machine  # noqa: E402


def timed(fn, reps: int) -> tuple[float, float]:
    """Best (wall, cpu) seconds of ``reps`` calls after one warm-up call."""
    fn()
    best = (float("inf"), float("inf"))
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - t, time.process_time() - c))
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="torchvision:mobilenet_v2")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--photo", type=int, default=512, help="side of the full-resolution photo for the resize")
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    clf = load_model(a.model)
    layer = layers_for("fmd", clf)[0]
    h, w = clf.cfg.input_size
    g = torch.Generator().manual_seed(0)
    rows = []
    for fold, cl, prec in itertools.product((False, True), (False, True), ("fp32", "bf16")):
        m = fast_classifier(clf, keep=[layer], fold_bn=fold, channels_last=cl, precision=prec)
        x = torch.randn(a.batch, 3, h, w, generator=g).requires_grad_(True)

        def step(m=m, x=x) -> None:
            with m.taps.capture([layer]) as feats:
                out = m.run_net(x)
            torch.autograd.grad(out.float().sum() + feats[layer].float().pow(2).mean(), x)

        wall, cpu = timed(step, a.reps)
        rows.append({"part": "network fwd+bwd", "fold_bn": fold, "channels_last": cl, "precision": prec,
                     "wall_ms_per_img": round(wall / a.batch * 1000, 2),
                     "cpu_ms_per_img": round(cpu / a.batch * 1000, 2)})
    photos = [torch.rand(3, a.photo, a.photo, generator=g) for _ in range(a.batch)]

    def resize() -> None:
        xs = [t.clone().requires_grad_(True) for t in photos]
        torch.autograd.grad(clf.preprocess(xs).sum(), xs)

    wall, cpu = timed(resize, a.reps)
    rows.append({"part": f"crop+resize+normalise fwd+bwd from {a.photo}x{a.photo}",
                 "wall_ms_per_img": round(wall / a.batch * 1000, 2), "cpu_ms_per_img": round(cpu / a.batch * 1000, 2)})
    info = {"model": a.model, "threads": a.threads, "batch": a.batch, **machine.describe()}
    print(json.dumps({"machine": info, "rows": rows}, indent=1))
    print("\n| part | fold_bn | channels_last | precision | wall ms/img | CPU ms/img |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['part']} | {r.get('fold_bn', '')} | {r.get('channels_last', '')} | {r.get('precision', '')} | "
              f"{r['wall_ms_per_img']} | {r['cpu_ms_per_img']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
