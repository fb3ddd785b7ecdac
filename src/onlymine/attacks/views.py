"""Random input views for transfer attacks: resize-and-pad (DI) and block shuffle and rotation (BSR).

Each view is a frozen record of its random parameters, so the same view can be applied to the protected
image and to the clean one (a feature-distortion objective compares the two under the same view). Views work on
a preprocessed batch ``(N, C, H, W)`` and are differentiable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

BSR_ANGLE = 24.0  # the paper's largest block rotation, degrees


@dataclass(frozen=True)
class ResizePad:
    """Shrink to ``size`` rows (width in proportion) and zero-pad back at (``top``, ``left``).

    Xie et al., "Improving Transferability of Adversarial Examples with Input Diversity", CVPR 2019."""

    size: int
    top: int
    left: int

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        h, w = z.shape[-2:]
        small = F.interpolate(z, size=(self.size, self.size * w // h), mode="bilinear", align_corners=False,
                              antialias=True)
        return F.pad(small, (self.left, w - small.shape[-1] - self.left, self.top, h - self.size - self.top))

    def scaled(self, h: int, w: int, f: float) -> ResizePad:
        """The same view for an input ``f`` times as large, ``h`` rows (another model's input size)."""
        size = min(h, max(1, round(self.size * f)))
        return ResizePad(size, min(h - size, round(self.top * f)), min(h - size, round(self.left * f)))

    @classmethod
    def draw(cls, h: int, gen: torch.Generator, low: float = 0.85) -> ResizePad:
        size = int(torch.randint(int(h * low), h, (1,), generator=gen))
        top = int(torch.randint(0, h - size + 1, (1,), generator=gen))
        left = int(torch.randint(0, h - size + 1, (1,), generator=gen))
        return cls(size, top, left)


def _split(length: int, parts: int, gen: torch.Generator) -> tuple[int, ...]:
    """``length`` cut into ``parts`` random positive lengths (at least 1 each) that sum to it."""
    w = torch.rand(parts, generator=gen) + 1e-3
    sizes = (w / w.sum() * (length - parts)).floor().long() + 1
    sizes[int(sizes.argmax())] += length - int(sizes.sum())
    return tuple(int(s) for s in sizes)


def _rescale(lengths: tuple[int, ...], total: int) -> tuple[int, ...]:
    """``lengths`` scaled to sum to ``total`` (each at least 1; rounding goes to the largest)."""
    sizes = [max(1, round(n * total / sum(lengths))) for n in lengths]
    sizes[sizes.index(max(sizes))] += total - sum(sizes)
    return tuple(sizes)


def _perm(n: int, gen: torch.Generator) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.randperm(n, generator=gen))


@dataclass(frozen=True)
class BlockShuffle:
    """Cut the image into ``blocks`` strips of random widths along one axis (drawn at random), rotate each strip
    by its own angle, cut each into ``blocks`` pieces along the other axis, and shuffle strips and pieces.

    Wang et al., "Boosting Adversarial Transferability by Block Shuffle and Rotation", CVPR 2024 (BSR): the
    classes survive the shuffle for a model but the attention patterns that differ between models do not, so
    gradients averaged over such views transfer better."""

    dim: int  # 2 (rows first) or 3 (columns first)
    lengths: tuple[int, ...]
    order: tuple[int, ...]
    angles: tuple[float, ...]  # one per strip
    inner: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]  # per strip: (piece lengths, piece order)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        other = 5 - self.dim
        strips = z.split(list(self.lengths), dim=self.dim)
        out = []
        for j in self.order:
            s = TF.rotate(strips[j], self.angles[j], interpolation=InterpolationMode.BILINEAR)
            lengths, order = self.inner[j]
            pieces = s.split(list(lengths), dim=other)
            out.append(torch.cat([pieces[i] for i in order], dim=other))
        return torch.cat(out, dim=self.dim)

    def scaled(self, h: int, w: int, f: float = 1.0) -> BlockShuffle:
        """The same view (cuts at the same relative places) for an ``h`` x ``w`` input; ``f`` is unused."""
        n, m = (h, w) if self.dim == 2 else (w, h)
        inner = tuple((_rescale(lengths, m), order) for lengths, order in self.inner)
        return BlockShuffle(self.dim, _rescale(self.lengths, n), self.order, self.angles, inner)

    @classmethod
    def draw(cls, h: int, w: int, blocks: int, gen: torch.Generator, angle: float = BSR_ANGLE) -> BlockShuffle:
        dim = 2 if float(torch.rand(1, generator=gen)) < 0.5 else 3
        n, m = (h, w) if dim == 2 else (w, h)
        lengths = _split(n, blocks, gen)
        angles = tuple(float(a) for a in (torch.rand(blocks, generator=gen) * 2 - 1) * angle)
        inner = tuple((_split(m, blocks, gen), _perm(blocks, gen)) for _ in range(blocks))
        return cls(dim, lengths, _perm(blocks, gen), angles, inner)



View = ResizePad | BlockShuffle | None  # None: the image itself


class BankViews:
    """One view per step from a fixed bank: the image itself, or with probability ``p`` one of ``n`` resize-and-pad
    views drawn once per batch (DI). The bank is fixed, so its views' clean features are computed once."""

    fixed = True

    def __init__(self, size: int, gen: torch.Generator, n: int = 6, p: float = 0.7) -> None:
        self.bank: list[View] = [None, *(ResizePad.draw(size, gen) for _ in range(n))]
        self.p = float(p)

    def draw(self, gen: torch.Generator, h: int, w: int) -> list[View]:
        u = torch.rand(2, generator=gen)
        n = len(self.bank) - 1
        k = 1 + int(torch.randint(0, n, (1,), generator=gen)) if n and float(u[0]) < self.p else 0
        torch.rand(1, generator=gen)  # drawn as the retired per-step JPEG coin was: outputs stay as they were
        return [self.bank[k]]


class FreshViews:
    """The image itself and ``n`` fresh random views every step: block shuffle and rotation with ``blocks`` > 0
    (BSR), else resize-and-pad; their clean features are computed per step, in one batch."""

    fixed = False

    def __init__(self, n: int, blocks: int = 0) -> None:
        self.n, self.blocks = int(n), int(blocks)

    def draw(self, gen: torch.Generator, h: int, w: int) -> list[View]:
        return [None, *(BlockShuffle.draw(h, w, self.blocks, gen) if self.blocks else ResizePad.draw(h, gen)
                        for _ in range(self.n))]


def apply_view(view: View, z: torch.Tensor) -> torch.Tensor:
    return z if view is None else view(z)


def scale_view(view: View, h: int, w: int, f: float) -> View:
    """``view`` for another model's ``h`` x ``w`` input, ``f`` times the authorized model's."""
    return None if view is None else view.scaled(h, w, f)
