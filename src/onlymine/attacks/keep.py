"""Keep terms: what FMD+ subtracts so that the authorized model keeps its prediction, and the margin its
best-iterate rule checks."""

from __future__ import annotations

import io as _io
from collections.abc import Sequence

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
