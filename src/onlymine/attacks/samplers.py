"""View samplers: which views of the photo an attack step averages over.

A view is ``None`` (the photo through the model's published crop), an input transformation of that crop (DI, BSR,
SIA: :mod:`onlymine.attacks.views`; OPS: :mod:`onlymine.attacks.operators`), or a :class:`Framed` view: a box of
the *whole* photo (the whole frame, a random crop of any scale and position, an aspect change) stretched to the
model's input size, optionally transformed. Whole-frame views reach the pixels the published crop never reads, so
no region of the photo keeps only the random start, and a model that reads the photo another way meets the same
protection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from onlymine.attacks.operators import OperatorChain
from onlymine.attacks.views import BlockShuffle, BlockTransform, ResizePad

Transform = ResizePad | BlockShuffle | BlockTransform | OperatorChain


@dataclass(frozen=True)
class FrameCrop:
    """A box of the photo in fractions of its height and width (``y0, x0, y1, x1``)."""

    y0: float
    x0: float
    y1: float
    x1: float

    def box(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) in pixels of an ``h`` x ``w`` photo, at least one pixel each way."""
        top, left = min(h - 1, int(self.y0 * h)), min(w - 1, int(self.x0 * w))
        return top, left, max(1, round(self.y1 * h) - top), max(1, round(self.x1 * w) - left)

    @classmethod
    def draw(cls, gen: torch.Generator, min_area: float = 0.25, max_aspect: float = 4 / 3) -> FrameCrop:
        """A random box: area a fraction in [``min_area``, 1] of the photo, aspect changed by up to ``max_aspect``."""
        u = torch.rand(4, generator=gen).tolist()
        area = min_area + (1 - min_area) * u[0]
        aspect = math.exp((2 * u[1] - 1) * math.log(max_aspect))
        hf, wf = min(1.0, math.sqrt(area * aspect)), min(1.0, math.sqrt(area / aspect))
        y0, x0 = (1 - hf) * u[2], (1 - wf) * u[3]
        return cls(y0, x0, y0 + hf, x0 + wf)


FULL = FrameCrop(0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class Framed:
    """A box of the whole photo stretched to the model's input size, then ``then`` (an input transformation)."""

    frame: FrameCrop
    then: Transform | None = None


View = Transform | Framed | None  # None: the photo through the published crop


def frame_input(levels: list[torch.Tensor], frame: FrameCrop, size: tuple[int, int], mean: Any,
                std: Any, antialias: bool = True) -> torch.Tensor:
    """The normalised (N, 3, h, w) batch of ``frame`` of each photo (``levels``: the photos, or smaller copies);
    ``antialias=False``: the filter only where the box is over twice the size (:func:`needs_antialias`)."""
    crops = []
    for x in levels:
        t, left, bh, bw = frame.box(*x.shape[-2:])
        aa = antialias or needs_antialias(bh / size[0], bw / size[1])
        crops.append(F.interpolate(x[None, :, t : t + bh, left : left + bw], size=size, mode="bilinear",
                                   align_corners=False, antialias=aa))
    batch = torch.cat(crops)
    m = torch.tensor(mean, device=batch.device, dtype=batch.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=batch.device, dtype=batch.dtype).view(1, -1, 1, 1)
    return (batch - m) / s


def pyramid(x: list[torch.Tensor], side: int, antialias: bool = True) -> list[torch.Tensor]:
    """Each photo with its shorter side brought down to ``side`` (never up): whole-frame views read these smaller
    copies, so each step resamples the full-resolution photo once, however many views it takes."""
    out = []
    for xi in x:
        short = min(xi.shape[-2:])
        aa = antialias or needs_antialias(short / side)
        out.append(xi if short <= side else F.interpolate(xi[None], scale_factor=side / short, mode="bilinear",
                                                          align_corners=False, antialias=aa,
                                                          recompute_scale_factor=False)[0])
    return out


def needs_antialias(*factors: float) -> bool:
    """Whether a bilinear downscale by these factors needs the antialiasing filter: up to 2x, plain bilinear
    already reads (and sends gradient to) every input pixel, and its backward pass costs a fraction of the
    antialiased one's on CPUs. Random views need no exact resampling; the published pipeline keeps its own."""
    return max(factors) > 2


def apply_view(view: Transform | None, z: torch.Tensor) -> torch.Tensor:
    return z if view is None else view(z)


def scale_view(view: View, h: int, w: int, f: float) -> View:
    """``view`` for another model's ``h`` x ``w`` input, ``f`` times the authorized model's."""
    if isinstance(view, Framed):
        return Framed(view.frame, None if view.then is None else view.then.scaled(h, w, f))
    return None if view is None else view.scaled(h, w, f)


class BankViews:
    """One view per step from a fixed bank: the image itself, or with probability ``p`` one of ``n`` resize-and-pad
    views drawn once per batch (DI). The bank is fixed, so its views' clean features are computed once."""

    fixed = True

    def __init__(self, size: int, gen: torch.Generator, n: int = 6, p: float = 0.7, antialias: bool = True) -> None:
        self.bank: list[View] = [None, *(ResizePad.draw(size, gen, antialias=antialias) for _ in range(n))]
        self.p = float(p)

    def draw(self, gen: torch.Generator, h: int, w: int) -> list[View]:
        u = torch.rand(2, generator=gen)
        n = len(self.bank) - 1
        k = 1 + int(torch.randint(0, n, (1,), generator=gen)) if n and float(u[0]) < self.p else 0
        torch.rand(1, generator=gen)  # drawn as the retired per-step JPEG coin was: outputs stay as they were
        return [self.bank[k]]


class FreshViews:
    """The image itself and ``n`` fresh random transformations of its published crop every step (``transform``:
    ``bsr`` block shuffle and rotation, ``sia``, ``resize`` resize-and-pad); their clean features are computed per
    step, in one batch."""

    fixed = False

    def __init__(self, n: int, transform: str = "resize", blocks: int = 3, antialias: bool = True,
                 eps: float = 16 / 255) -> None:
        self.n, self.transform, self.blocks, self.antialias, self.eps = int(n), transform, int(blocks), antialias, eps

    def draw(self, gen: torch.Generator, h: int, w: int) -> list[View]:
        return [None, *(draw_transform(self.transform, h, w, self.blocks, gen, self.antialias, self.eps)
                        for _ in range(self.n))]




TRANSFORMS = ("none", "resize", "bsr", "sia", "ops")


def draw_transform(kind: str, h: int, w: int, blocks: int, gen: torch.Generator,
                   antialias: bool = True, eps: float = 16 / 255) -> Transform | None:
    """A random view of kind ``kind``; ``eps`` (the attack's budget) sets the radius of an OPS view's noise."""
    if kind == "ops":
        return OperatorChain.draw(gen, eps)
    if kind == "bsr":
        return BlockShuffle.draw(h, w, blocks, gen)
    if kind == "sia":
        return BlockTransform.draw(h, w, blocks, gen)
    if kind == "resize":
        return ResizePad.draw(h, gen, antialias=antialias)
    return None


class FrameViews:
    """The photo through the published crop, the whole frame, and ``n - 1`` random boxes of the whole frame every
    step, each then transformed (``transform``: ``bsr``, ``sia``, ``resize`` or ``none``, with ``blocks``)."""

    fixed = False

    def __init__(self, n: int, transform: str = "bsr", blocks: int = 3, antialias: bool = True,
                 eps: float = 16 / 255) -> None:
        self.n, self.transform, self.blocks, self.antialias, self.eps = int(n), transform, int(blocks), antialias, eps

    def draw(self, gen: torch.Generator, h: int, w: int) -> list[View]:
        frames = [FULL, *(FrameCrop.draw(gen) for _ in range(self.n - 1))]
        return [None, *(Framed(f, draw_transform(self.transform, h, w, self.blocks, gen, self.antialias, self.eps))
                        for f in frames)]
