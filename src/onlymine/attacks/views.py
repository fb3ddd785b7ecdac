"""Random input transformations for transfer attacks: resize-and-pad (DI), block shuffle and rotation (BSR) and
block-wise structure-invariant transformations (SIA).

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
    antialias: bool = True  # False: plain bilinear (the shrink is at most 1/0.85; its backward is far cheaper)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        h, w = z.shape[-2:]
        small = F.interpolate(z, size=(self.size, self.size * w // h), mode="bilinear", align_corners=False,
                              antialias=self.antialias)
        return F.pad(small, (self.left, w - small.shape[-1] - self.left, self.top, h - self.size - self.top))

    def scaled(self, h: int, w: int, f: float) -> ResizePad:
        """The same view for an input ``f`` times as large, ``h`` rows (another model's input size)."""
        size = min(h, max(1, round(self.size * f)))
        return ResizePad(size, min(h - size, round(self.top * f)), min(h - size, round(self.left * f)),
                         self.antialias)

    @classmethod
    def draw(cls, h: int, gen: torch.Generator, low: float = 0.85, antialias: bool = True) -> ResizePad:
        size = int(torch.randint(int(h * low), h, (1,), generator=gen))
        top = int(torch.randint(0, h - size + 1, (1,), generator=gen))
        left = int(torch.randint(0, h - size + 1, (1,), generator=gen))
        return cls(size, top, left, antialias)


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


SIA_OPS = ("identity", "vshift", "hshift", "vflip", "hflip", "rot180", "scale", "noise", "dropout", "resize")


@dataclass(frozen=True)
class BlockTransform:
    """Cut the image into blocks (``rows`` x ``cols`` lengths) and apply one random transformation to each: a shift,
    a flip, a half turn, a darkening, noise, dropout or a down-and-up resize (``ops``: per block, an index into
    :data:`SIA_OPS` and its random parameter; ``seed`` replays the noise and dropout masks).

    Wang et al., "Structure Invariant Transformation for better Adversarial Transferability", ICCV 2023 (SIA): each
    block keeps the image's structure locally while the view as a whole is far from the original, so gradients
    averaged over such views depend less on the surrogate's particular attention."""

    rows: tuple[int, ...]
    cols: tuple[int, ...]
    ops: tuple[tuple[int, float], ...]  # row-major, one per block
    seed: int

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        out_rows, k = [], 0
        for block_row in z.split(list(self.rows), dim=-2):
            parts = []
            for block in block_row.split(list(self.cols), dim=-1):
                op, value = self.ops[k]
                parts.append(_sia(SIA_OPS[op], block, value, gen))
                k += 1
            out_rows.append(torch.cat(parts, dim=-1))
        return torch.cat(out_rows, dim=-2)

    def scaled(self, h: int, w: int, f: float = 1.0) -> BlockTransform:
        """The same view for an ``h`` x ``w`` input (blocks at the same relative places); ``f`` is unused."""
        return BlockTransform(_rescale(self.rows, h), _rescale(self.cols, w), self.ops, self.seed)

    @classmethod
    def draw(cls, h: int, w: int, blocks: int, gen: torch.Generator) -> BlockTransform:
        rows, cols = _split(h, blocks, gen), _split(w, blocks, gen)
        kinds = torch.randint(0, len(SIA_OPS), (blocks * blocks,), generator=gen).tolist()
        values = torch.rand(blocks * blocks, generator=gen).tolist()
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        return cls(rows, cols, tuple((int(k), float(v)) for k, v in zip(kinds, values, strict=True)), seed)


def _sia(op: str, b: torch.Tensor, value: float, gen: torch.Generator) -> torch.Tensor:
    h, w = b.shape[-2:]
    if op == "vshift":
        return torch.roll(b, max(1, int(value * h)), dims=-2)
    if op == "hshift":
        return torch.roll(b, max(1, int(value * w)), dims=-1)
    if op == "vflip":
        return b.flip(-2)
    if op == "hflip":
        return b.flip(-1)
    if op == "rot180":
        return b.flip(-2, -1)
    if op == "scale":
        return b * (0.5 + 0.5 * value)
    if op == "noise":
        return b + (torch.rand(b.shape, generator=gen) * 2 - 1).to(b) * 0.25 * value
    if op == "dropout":
        return b * (torch.rand(b.shape[-2:], generator=gen) > 0.1).to(b)
    if op == "resize" and min(h, w) >= 4:
        small = F.interpolate(b, size=(max(2, h // 2), max(2, w // 2)), mode="bilinear", align_corners=False,
                              antialias=True)
        return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return b
