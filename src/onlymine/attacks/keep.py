"""Keep terms: what FMD+ subtracts so that the authorized model keeps its prediction, and the margin its
best-iterate rule checks."""

from __future__ import annotations

import io as _io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from onlymine.attacks.fmd import margin
from onlymine.models.classifier import Classifier


def jpeg_round_trip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Real JPEG encode/decode of a (3,H,W) [0,1] image (not differentiable; used straight-through)."""
    arr = (x.detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buf = _io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    out = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(out).permute(2, 0, 1).to(x.device)


def straight_through_jpeg(xs: Sequence[torch.Tensor], quality: int) -> list[torch.Tensor]:
    """The forward pass sees the JPEG round trip, the gradient flows as if it did not."""
    return [xi + (jpeg_round_trip(xi, quality) - xi).detach() for xi in xs]


class HingeKeep:
    """``max(0, kappa - m)``: acts only when the authorized logit margin ``m`` drops below ``kappa``, so that it
    does not fight the distortion while the decision is safe (the paper's CE term does, at every step)."""

    def __init__(self, kappa: float) -> None:
        self.kappa = float(kappa)

    def __call__(self, model: Classifier, x: list[torch.Tensor], m: torch.Tensor, y: torch.Tensor,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(keep term, margin for the best-iterate rule) per image; ``m``: the margin of ``x`` as the step saw it."""
        return F.relu(self.kappa - m), m


class RobustKeep(HingeKeep):
    """The hinge over three reads of the image: itself, a real JPEG round trip (quality drawn in 50..90,
    straight-through) and a half-size copy; the best-iterate rule takes the smallest of the three margins, so the
    saved file keeps its authorized prediction after common re-encoding too."""

    def __call__(self, model: Classifier, x: list[torch.Tensor], m: torch.Tensor, y: torch.Tensor,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        q = 50 + int(40 * float(torch.rand(1, generator=gen)))
        half = [F.interpolate(xi[None], scale_factor=0.5, mode="bilinear", align_corners=False, antialias=True)[0]
                for xi in x]
        logits = model.run_net(model.preprocess(straight_through_jpeg(x, q) + half))
        rm = margin(logits, y.repeat(2)).view(2, -1)
        keep = F.relu(self.kappa - m) + F.relu(self.kappa - rm).sum(0)
        return keep, torch.minimum(m, rm.min(0).values)


def _downscale(xs: Sequence[torch.Tensor], size_of: Any) -> list[torch.Tensor]:
    """Pillow-like bicubic downscale (antialiased), rounded to 8 bits straight-through."""
    from onlymine.models.pipeline import round_levels

    out = []
    for xi in xs:
        h, w = xi.shape[-2:]
        nh, nw = size_of(h, w)
        if (nh, nw) == (h, w):
            out.append(xi)
            continue
        y = F.interpolate(xi[None] * 255, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)[0]
        out.append(round_levels(y) / 255)
    return out


def _half(h: int, w: int) -> tuple[int, int]:
    return max(1, h // 2), max(1, w // 2)


def _social(h: int, w: int) -> tuple[int, int]:
    from onlymine.threats import SOCIAL_SIDE

    scale = SOCIAL_SIDE / max(h, w)
    return (h, w) if scale >= 1 else (max(1, round(h * scale)), max(1, round(w * scale)))


def pipeline_reads(model: Classifier, name: str) -> list[Any]:
    """Differentiable copies of how ``model`` reads a file through threat-suite pipeline ``name`` (one function
    per read: five for ``fivecrop``, in torchvision's FiveCrop order), each ``list of (3, H, W) -> batch``."""
    from dataclasses import replace

    from onlymine.models.pipeline import Pipeline
    from onlymine.threats import SOCIAL_QUALITY, SUITE

    p = model.cfg.pipeline(model.quantize)
    if name == "crop":
        return [model.preprocess]
    if name == "full":
        return [Pipeline(tuple(model.cfg.input_size), None, p.interpolation, p.mean, p.std, p.quantize).apply]
    if name == "fivecrop":
        return [replace(p, corner=c).apply for c in ("tl", "tr", "bl", "br", "center")]
    changes = {"jpeg75": lambda xs: straight_through_jpeg(xs, 75), "jpeg50": lambda xs: straight_through_jpeg(xs, 50),
               "half": lambda xs: _downscale(xs, _half),
               "social": lambda xs: straight_through_jpeg(_downscale(xs, _social), SOCIAL_QUALITY)}
    if name not in SUITE or name not in changes:
        raise ValueError(f"unknown pipeline {name!r}")
    change = changes[name]
    return [lambda xs: model.preprocess(change(list(xs)))]


class PipelineKeep(HingeKeep):
    """The hinge over every pipeline the owner declares (``--keep-pipelines``: names of the threat suite, e.g.
    ``crop,full``): each read of the image through a differentiable copy of that pipeline defends its own clean
    label, and the best-iterate rule takes the smallest margin. ``labels`` (N, R) holds the clean label of each
    read (``crop`` first: the step's own forward), set per batch by the attack."""

    def __init__(self, kappa: float, pipelines: Sequence[str], robust: bool = False) -> None:
        super().__init__(kappa)
        self.pipelines, self.robust = list(pipelines), robust
        self.labels: torch.Tensor | None = None

    def __call__(self, model: Classifier, x: list[torch.Tensor], m: torch.Tensor, y: torch.Tensor,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        keep, valid = (RobustKeep(self.kappa) if self.robust else HingeKeep(self.kappa))(model, x, m, y, gen)
        reads = [r for name in self.pipelines for r in pipeline_reads(model, name)]
        labels = self.labels if self.labels is not None else y[:, None].repeat(1, len(reads))
        for k, read in enumerate(reads):
            if k == 0 and self.pipelines[0] == "crop":
                continue  # the step's own forward: ``m`` is its margin
            mk = margin(model.run_net(read(x)), labels[:, k])
            keep = keep + F.relu(self.kappa - mk)
            valid = torch.minimum(valid, mk)
        return keep, valid
