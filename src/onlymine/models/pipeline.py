"""How a model reads a photo, twice: the published transform on a PIL image, and a differentiable copy of it.

A :class:`Pipeline` is the torchvision recipe most published classifiers declare (``weights.transforms()``,
timm's eval transform, the EfficientNet-Lite recipe): ``Resize`` (shorter side, or both sides), ``CenterCrop``,
``ToTensor``, ``Normalize``. :meth:`Pipeline.reference` builds exactly that torchvision transform; it runs on
a PIL image, and it is what an owner's own code applies, so onlymine verifies every saved file with it.

:meth:`Pipeline.apply` computes the same thing differentiably from a ``[0, 1]`` tensor at full resolution,
following Pillow step by step, so that the attack optimises what the owner's model will really see:

1. the image is rounded to 8-bit levels (what the saved PNG holds);
2. Pillow resizes in two passes, horizontal first, and rounds to 8 bits after each pass; the horizontal pass is
   ``torch.nn.functional.interpolate`` with ``antialias=True`` (a port of Pillow's resampling filters) over
   the full width, on only the rows the crop needs; the vertical pass applies Pillow's own filter
   coefficients (:func:`coefficients`) to the crop's rows only;
3. the crop is taken at torchvision's integer offsets, then mean/std.

Every rounding is straight-through (the forward value is rounded, the gradient passes unchanged), so the
forward values agree with Pillow's except where float rounding tips a value that lies within float error of a
half level (measured: docs/pipelines.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def _bilinear(x: float) -> float:
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


def _bicubic(x: float, a: float = -0.5) -> float:
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


_FILTERS: dict[str, tuple[Callable[[float], float], float]] = {"bilinear": (_bilinear, 1.0),
                                                                 "bicubic": (_bicubic, 2.0)}


@lru_cache(maxsize=512)
def coefficients(in_size: int, out_size: int, mode: str, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pillow's resampling taps for output positions ``lo..hi-1`` of an ``in_size -> out_size`` resize.

    Returns ``(index, weight)``, both ``(hi - lo, K)``: output ``j`` is ``sum_k weight[j, k] * in[index[j, k]]``.
    Same formula as Pillow's ``precompute_coeffs``: the filter is stretched by the scale when shrinking
    (antialiasing), centred on ``(j + 0.5) * scale``, cut to the image and normalised to sum 1."""
    fn, support = _FILTERS[mode]
    scale = in_size / out_size
    fscale = max(scale, 1.0)
    support *= fscale
    k = int(math.ceil(support)) * 2 + 1
    index = torch.zeros(hi - lo, k, dtype=torch.long)
    weight = torch.zeros(hi - lo, k, dtype=torch.float64)
    for row, j in enumerate(range(lo, hi)):
        centre = (j + 0.5) * scale
        first = max(0, int(centre - support + 0.5))
        count = min(in_size, int(centre + support + 0.5)) - first
        w = [fn((i + first - centre + 0.5) / fscale) for i in range(count)]
        total = sum(w)
        index[row, :count] = torch.arange(first, first + count)
        index[row, count:] = first
        weight[row, :count] = torch.tensor([v / total if total else v for v in w], dtype=torch.float64)
    return index, weight


class _RoundLevels(torch.autograd.Function):
    """Round 0..255 values half up and clip, as Pillow's 8-bit resampler does; the gradient passes unchanged."""

    @staticmethod
    def forward(ctx, v: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.floor(v + 0.5).clamp_(0, 255)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


def round_levels(v: torch.Tensor) -> torch.Tensor:
    return _RoundLevels.apply(v)


@dataclass(frozen=True)
class Geometry:
    """Where a photo of ``height`` x ``width`` goes: resized to ``size`` (h, w), then the crop box
    (``top``, ``left``, ``crop_h``, ``crop_w``) in resized pixels."""

    size: tuple[int, int]
    top: int
    left: int
    crop_h: int
    crop_w: int


@dataclass(frozen=True)
class Pipeline:
    """``Resize(resize)`` -> ``CenterCrop(crop)`` -> 8-bit -> ``Normalize(mean, std)``, torchvision semantics.

    Attributes:
        resize: an int resizes the shorter side to it (aspect kept, torchvision's ``Resize(int)``); ``(h, w)``
            stretches to that size; ``None`` leaves the size alone.
        crop: the centre crop ``(h, w)`` after the resize (``None``: no crop).
        interpolation: ``bilinear`` | ``bicubic`` (Pillow's filters, antialiased when shrinking) | ``nearest``.
        mean, std: per-channel normalisation of the ``[0, 1]`` result.
        quantize: round to 8-bit levels before and during the resize, as Pillow does on an RGB image. Models
            that are not fed 8-bit images (face chips made by a differentiable warp) turn it off.
        corner: where the crop sits: ``center``, or a corner ``tl``/``tr``/``bl``/``br`` as torchvision's
            ``FiveCrop`` takes them.
    """

    resize: int | tuple[int, int] | None
    crop: tuple[int, int] | None
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    quantize: bool = True
    corner: str = "center"

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {self.interpolation!r} is not supported; use one of {INTERPOLATIONS}")

    def geometry(self, height: int, width: int) -> Geometry:
        """torchvision's output size of ``Resize`` and offsets of ``CenterCrop`` for a ``height`` x ``width`` photo."""
        if isinstance(self.resize, int):
            short, long = (width, height) if width <= height else (height, width)
            new_long = int(self.resize * long / short)
            nw, nh = (self.resize, new_long) if width <= height else (new_long, self.resize)
        elif self.resize is None:
            nh, nw = height, width
        else:
            nh, nw = self.resize
        ch, cw = self.crop if self.crop is not None else (nh, nw)
        if ch > nh or cw > nw:
            raise ValueError(f"a {height}x{width} photo resized to {nh}x{nw} is smaller than the {ch}x{cw} crop")
        top, left = {"center": (int(round((nh - ch) / 2.0)), int(round((nw - cw) / 2.0))), "tl": (0, 0),
                     "tr": (0, nw - cw), "bl": (nh - ch, 0), "br": (nh - ch, nw - cw)}[self.corner]
        return Geometry((nh, nw), top, left, ch, cw)

    # ------------------------------------------------------------------------------------ published (PIL)
    def reference(self) -> Callable[..., torch.Tensor]:
        """The torchvision transform this pipeline describes, for PIL images: ``PIL.Image -> (3, h, w)``."""
        from torchvision import transforms as T

        mode = T.InterpolationMode(self.interpolation)
        steps: list[Callable] = []
        if self.resize is not None:
            size = self.resize if isinstance(self.resize, int) else list(self.resize)
            steps.append(T.Resize(size, interpolation=mode, antialias=True))
        if self.crop is not None:
            steps.append(T.CenterCrop(list(self.crop)))
        steps += [T.PILToTensor(), T.ConvertImageDtype(torch.float), T.Normalize(list(self.mean), list(self.std))]
        return T.Compose(steps)

    # ------------------------------------------------------------------------------------ differentiable
    def apply(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """``[0, 1]`` RGB (an (N, 3, H, W) tensor or (3, H_i, W_i) tensors of any sizes) -> the normalised batch."""
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            groups: list[torch.Tensor] = [images]
        elif len({tuple(im.shape) for im in images}) == 1:  # same-size photos: one batched resize
            groups = [torch.stack(list(images)) if images[0].dim() == 3 else torch.cat(list(images))]
        else:
            groups = [im.unsqueeze(0) if im.dim() == 3 else im for im in images]
        batch = torch.cat([self._resize_crop(x) for x in groups]) if len(groups) > 1 else self._resize_crop(groups[0])
        mean = torch.tensor(self.mean, device=batch.device, dtype=batch.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=batch.device, dtype=batch.dtype).view(1, -1, 1, 1)
        return (batch - mean) / std

    def _resize_crop(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, 3, crop_h, crop_w) in [0, 1], Pillow's arithmetic (module docstring)."""
        height, width = x.shape[-2:]
        g = self.geometry(height, width)
        (nh, nw), t, left, ch, cw = g.size, g.top, g.left, g.crop_h, g.crop_w
        mode = self.interpolation
        if mode == "nearest":  # Pillow's nearest neighbour: the source pixel under each output centre
            rows = _nearest(height, nh)[t : t + ch].to(x.device)
            cols = _nearest(width, nw)[left : left + cw].to(x.device)
            v = x.index_select(-2, rows).index_select(-1, cols)
            return round_levels(v * 255) / 255 if self.quantize else v
        level = round_levels if self.quantize else (lambda v: v)
        if nh != height:  # only the input rows that the crop's output rows read
            rows, weight = coefficients(height, nh, mode, t, t + ch)
            r0, r1 = int(rows.min()), int(rows.max()) + 1
        else:
            r0, r1 = t, t + ch
        v = level(x[..., r0:r1, :] * 255)
        if nh != height and not horizontal_first(height, width, nh, nw):
            v = level(_rows(v, rows - r0, weight))
        if nw != width:
            v = level(F.interpolate(v, size=(v.shape[-2], nw), mode=mode, align_corners=False, antialias=True))
        v = v[..., left : left + cw]
        if nh != height and horizontal_first(height, width, nh, nw):
            v = level(_rows(v, rows - r0, weight))
        return v / 255


@lru_cache(maxsize=256)
def _nearest(in_size: int, out_size: int) -> torch.Tensor:
    """Pillow's nearest-neighbour source index per output position: it steps the sample position by the scale
    (accumulating, in double precision, as ``ImagingScaleAffine`` does) from half a step in."""
    scale, pos, out = in_size / out_size, 0.5 * (in_size / out_size), []
    for _ in range(out_size):
        out.append(min(in_size - 1, int(pos)))
        pos += scale
    return torch.tensor(out, dtype=torch.long)


def _rows(v: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The vertical pass: output row ``j`` is ``sum_k weight[j, k] * v[index[j, k]]``."""
    index, weight = index.to(v.device), weight.to(device=v.device, dtype=v.dtype)
    out = v.index_select(-2, index[:, 0]) * weight[:, 0, None]
    for k in range(1, index.shape[1]):
        out = out + v.index_select(-2, index[:, k]) * weight[:, k, None]
    return out


def horizontal_first(height: int, width: int, new_h: int, new_w: int) -> bool:
    """Whether Pillow resizes ``height x width -> new_h x new_w`` horizontally first. Pillow 13 runs the vertical
    pass first when the height shrinks by more than twice as many pixels as the width; earlier versions always
    went horizontally first. Which rule the installed Pillow follows is probed once (:func:`_pillow_reorders`)."""
    shrink_h = height - new_h
    return not (_pillow_reorders() and shrink_h > 0 and shrink_h > 2 * (width - new_w))


@lru_cache(maxsize=1)
def _pillow_reorders() -> bool:
    """Probe the installed Pillow: on a resize where the two orders give different 8-bit results, which wins."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    want = torch.from_numpy(np.asarray(Image.fromarray(pixels).resize((60, 16), Image.Resampling.BILINEAR)).copy())
    x = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float()

    def two_passes(first: tuple[int, int]) -> torch.Tensor:
        kw = {"mode": "bilinear", "align_corners": False, "antialias": True}
        mid = torch.floor(F.interpolate(x, size=first, **kw) + 0.5).clamp(0, 255)
        return torch.floor(F.interpolate(mid, size=(16, 60), **kw) + 0.5).clamp(0, 255)[0].permute(1, 2, 0)

    def misses(first: tuple[int, int]) -> int:
        return int((two_passes(first) != want.float()).sum())

    return misses((16, 64)) < misses((64, 60))
