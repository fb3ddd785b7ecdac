"""The optimiser of FMD+: a per-pixel L-inf budget, a random start inside it, and momentum sign steps."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from onlymine.attacks.base import project, uniform_like

TEXTURE_FLOOR = 0.5  # a flat region keeps half of eps (docs/beyond.md: texture budget)


def _quantile(t: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q``-quantile of ``t``'s values, from at most about 65k of them (torch.quantile's input limit)."""
    return torch.quantile(t.flatten()[:: max(1, t.numel() // 65536)], q)


def texture_budget(x: torch.Tensor, eps: float, floor: float = TEXTURE_FLOOR, window: int = 7,
                   luminance: bool = False) -> torch.Tensor:
    """Per-pixel L-inf budget in [floor*eps, eps]: full budget in textured regions, less in flat ones.

    Local standard deviation of luminance (a simple visibility mask in the spirit of JND models): the eye
    sees noise on flat areas (sky, skin) far more than on texture, so flat areas get a smaller budget. With
    ``luminance``, dark regions also get more (luminance adaptation: the visibility threshold of Chou and Li's JND
    model, "A perceptually tuned subband image coder", 1995, rises from 3 levels at mid-grey to 20 at black).
    """
    lum = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None, None]
    pad = window // 2
    mean = F.avg_pool2d(F.pad(lum, (pad,) * 4, mode="replicate"), window, stride=1)
    sq = F.avg_pool2d(F.pad(lum**2, (pad,) * 4, mode="replicate"), window, stride=1)
    std = (sq - mean**2).clamp_min(0).sqrt()[0]
    ref = _quantile(std, 0.6).clamp_min(1e-3)
    mask = (std / ref).clamp(0, 1)
    if luminance:
        bg = mean[0] * 255
        jnd = torch.where(bg <= 127, 17 * (1 - (bg / 127).clamp_min(0).sqrt()) + 3, 3 / 128 * (bg - 127) + 3)
        mask = torch.maximum(mask, ((jnd - 3) / 17).clamp(0, 1))
    return eps * (floor + (1 - floor) * mask)


SSIM_C2 = 0.03**2  # SSIM's contrast constant (K2 0.03, data range 1)


def ssim_budget(x: torch.Tensor, eps: float, target: float, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel, per-channel L-inf budget from the local SSIM a change may cost, at most ``eps``.

    A change of standard deviation ``d`` uncorrelated with the image lowers SSIM's contrast-structure term in a
    window of clean standard deviation ``s`` to ``(2 s^2 + C2) / (2 s^2 + d^2 + C2)`` (Wang et al., "Image quality
    assessment: from error visibility to structural similarity", IEEE TIP 2004). Sign steps fill the budget
    (``d`` about ``b``), so ``b = sqrt((1/target - 1)(2 s^2 + C2))`` keeps that term near ``target`` in every
    window: flat regions get a few levels, texture up to ``eps``. ``s`` is taken in SSIM's own Gaussian window
    (11 px, ``sigma`` 1.5) on each channel, as torchmetrics computes SSIM.
    """
    k = min(11, (min(x.shape[-2:]) - 1) // 2 * 2 + 1)  # SSIM's 11-px window, or the largest a tiny image holds
    xb = x[None].float()
    mean = _blur(xb, sigma, k)
    var = (_blur(xb * xb, sigma, k) - mean * mean).clamp_min(0)[0]
    return ((1 / target - 1) * (2 * var + SSIM_C2)).sqrt().clamp(max=eps).to(x.dtype)


class SignMomentum:
    """MI-FGSM steps inside a per-pixel budget (Dong et al., "Boosting Adversarial Attacks with Momentum", CVPR
    2018): ``v <- mu v + g / mean|g|``, ``x <- Proj(x + alpha sign(v))``, the projection onto
    ``|x - x0| <= b`` (``b = eps``, :func:`texture_budget` with ``texture``, or :func:`ssim_budget` with ``ssim``,
    which then takes the place of the texture budget) and ``[0, 1]``.

    With ``smooth`` = s > 0 the step follows the sign of the momentum blurred with a Gaussian of s pixels, so the
    change is made of smooth patches rather than of pixel-sized noise. With ``soft`` = q in (0, 1] the sign is
    softened: a pixel moves ``alpha * min(1, |v| / Q_q(|v|))`` (``Q_q``: the
    q-quantile of the image's ``|v|``), so pixels whose gradient stays weak stay close to the clean image instead of
    filling the budget like every other one.

    It holds one batch's state: the clean images, their budgets and velocities."""

    def __init__(self, x0: Sequence[torch.Tensor], eps: float, alpha: float, momentum: float,
                 texture: bool = False, floor: float = TEXTURE_FLOOR, luminance: bool = False,
                 soft: float = 0.0, smooth: float = 0.0, ssim: float = 0.0) -> None:
        self.x0, self.eps, self.alpha, self.momentum = list(x0), float(eps), float(alpha), float(momentum)
        self.soft, self.smooth = float(soft), float(smooth)
        self.budgets = [ssim_budget(x, eps, ssim) if ssim > 0 else
                        texture_budget(x, eps, floor, luminance=luminance) if texture else None for x in self.x0]
        self.velocity = [torch.zeros_like(x) for x in self.x0]
        # the projection's bounds, once per batch: a step is then one clamp at full resolution, not five passes
        # (same values as base.project: x0 - b <= 1 and x0 + b >= 0 for x0 in [0, 1])
        budgets = [self.eps if b is None else b for b in self.budgets]
        self.bounds = [((x - b).clamp_min(0.0), (x + b).clamp_max(1.0)) for x, b in zip(self.x0, budgets, strict=True)]

    def _project(self, x: torch.Tensor, i: int) -> torch.Tensor:
        b = self.budgets[i]
        return project(x, self.x0[i], self.eps if b is None else b)

    def start(self, gen: torch.Generator, random: bool = True, share: float = 1.0) -> list[torch.Tensor]:
        """Uniform noise inside ``share`` of each image's budget (or the clean images with ``random=False``)."""
        if not random:
            return [x.clone() for x in self.x0]
        return [self._project(x + uniform_like(x, self.eps * share, gen) * (1 if b is None else b / self.eps), i)
                for i, (x, b) in enumerate(zip(self.x0, self.budgets, strict=True))]

    @torch.no_grad()
    def step(self, x: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for i, (xi, g) in enumerate(zip(x, grads, strict=True)):
            v = self.velocity[i]
            if self.momentum != 1.0:
                v.mul_(self.momentum)
            v.add_(g.div(g.abs().mean().clamp_min(1e-12)))
            move = (v if self.smooth <= 0 else _blur(v, self.smooth)).sign()
            if self.soft > 0:
                a = v.abs()
                ref = _quantile(a, self.soft).clamp_min(1e-12)
                move = move * (a / ref).clamp(max=1.0)
            lo, hi = self.bounds[i]
            out.append(torch.clamp(xi.detach().add(move, alpha=self.alpha), lo, hi))
        return out


def _blur(v: torch.Tensor, sigma: float, size: int | None = None) -> torch.Tensor:
    """Gaussian blur of ``sigma`` pixels over a ``size`` window (odd; default: two sigmas each side)."""
    k = size or 2 * math.ceil(2 * sigma) + 1
    return TF.gaussian_blur(v, [k, k], [sigma, sigma])
