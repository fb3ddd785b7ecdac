"""Two rewrites of the antialiased bilinear resize's backward pass, timed against PyTorch's own (CPU).

The published crop (and the whole-frame views) resize a full-resolution photo with ``antialias=True``; its
backward is about 6% of a one-pass FMD+ step (benchmarks/step_ops.py). This checks whether either of two
replacements of that backward (the forward stays PyTorch's) is faster, on the shapes a step uses at batch 8:

- ``gather``: the transpose of the resize as a sum over the filter taps of each input pixel (``index_select``);
- ``banded``: the transpose cut into blocks of 64 input pixels, each a small dense product with the output pixels
  it reads (``index_select`` of overlapping windows, then ``bmm``).

    python benchmarks/aa_backward.py [--threads 2] [--reps 5]

Prints ms per call (best of ``reps``) of PyTorch's forward + backward and of each replacement's forward +
backward, and each gradient's largest difference from PyTorch's.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from functools import lru_cache

import torch
import torch.nn.functional as F

SHAPES = (((8, 3, 512, 512), (448, 448)), ((8, 3, 300, 448), (224, 224)), ((8, 3, 450, 512), (450, 256)))


@lru_cache(maxsize=64)
def _matrix(n_in: int, n_out: int) -> torch.Tensor:
    """The antialiased bilinear resize along one axis as a dense (n_out, n_in) matrix (Pillow's filter)."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for j in range(n_out):
        c = (j + 0.5) * scale
        lo, hi = max(0, int(c - support + 0.5)), min(n_in, int(c + support + 0.5))
        i = torch.arange(lo, hi, dtype=torch.float64)
        w = (1 - ((i - c + 0.5) / support).abs()).clamp_min(0)
        m[j, lo:hi] = w / w.sum()
    return m


@lru_cache(maxsize=64)
def _taps(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    mt = _matrix(n_in, n_out).t()
    k = int((mt != 0).sum(1).max())
    idx, w = torch.zeros(n_in, k, dtype=torch.long), torch.zeros(n_in, k)
    for r in range(n_in):
        nz = mt[r].nonzero().flatten()
        idx[r, : len(nz)], idx[r, len(nz) :] = nz, nz[0]
        w[r, : len(nz)] = mt[r, nz].float()
    return idx, w


@lru_cache(maxsize=64)
def _blocks(n_in: int, n_out: int, size: int = 64) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    mt = _matrix(n_in, n_out).t().float()
    nc = math.ceil(n_in / size)
    spans = []
    for c in range(nc):
        nz = (mt[c * size : (c + 1) * size] != 0).any(0).nonzero().flatten()
        spans.append((int(nz.min()), int(nz.max()) + 1))
    width = max(b - a for a, b in spans)
    idx, w = torch.zeros(nc, width, dtype=torch.long), torch.zeros(nc, width, size)
    for c, (a, _) in enumerate(spans):
        a = min(a, n_out - width)
        idx[c] = torch.arange(a, a + width)
        rows = mt[c * size : (c + 1) * size, a : a + width]
        w[c, :, : rows.shape[0]] = rows.t()
    return idx.flatten(), w, nc, width


def _gather_last(g: torch.Tensor, n_in: int) -> torch.Tensor:
    idx, w = _taps(n_in, g.shape[-1])
    out = g.index_select(-1, idx[:, 0]) * w[:, 0]
    for k in range(1, idx.shape[1]):
        out = out + g.index_select(-1, idx[:, k]) * w[:, k]
    return out


def _banded_last(g: torch.Tensor, n_in: int) -> torch.Tensor:
    idx, w, nc, width = _blocks(n_in, g.shape[-1])
    windows = g.reshape(-1, g.shape[-1]).index_select(1, idx).view(-1, nc, width)
    out = torch.bmm(windows.transpose(0, 1), w).transpose(0, 1)
    return out.reshape(*g.shape[:-1], nc * w.shape[-1])[..., :n_in]


def _resize(last: Callable[[torch.Tensor, int], torch.Tensor]) -> Callable[..., torch.Tensor]:
    class Resize(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:  # type: ignore[override]
            ctx.hw = x.shape[-2:]
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)

        @staticmethod
        def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
            h, w = ctx.hw
            return last(last(g, w).transpose(-1, -2), h).transpose(-1, -2), None

    return Resize.apply


def _best(fn: Callable[[], object], reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    variants = {"torch": lambda x, s: F.interpolate(x, size=s, mode="bilinear", align_corners=False, antialias=True),
                "gather": _resize(_gather_last), "banded": _resize(_banded_last)}
    print("| shape -> size | " + " | ".join(f"{k} fwd+bwd ms" for k in variants) + " | max |grad diff| |")
    print("|---|" + "---|" * (len(variants) + 1))
    for shape, size in SHAPES:
        x = torch.rand(shape, requires_grad=True)
        g = torch.randn(*shape[:2], *size)
        ref = torch.autograd.grad(variants["torch"](x, size), x, g)[0]
        diff = max(float((torch.autograd.grad(f(x, size), x, g)[0] - ref).abs().max())
                   for k, f in variants.items() if k != "torch")
        ms = [_best(lambda f=f, x=x, size=size, g=g: torch.autograd.grad(f(x, size), x, g), a.reps)
              for f in variants.values()]
        print(f"| {tuple(shape)} -> {size} | " + " | ".join(f"{m:.1f}" for m in ms) + f" | {diff:.1e} |")


if __name__ == "__main__":
    main()
