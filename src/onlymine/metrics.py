"""Per-image quality metrics between a clean image and its protected copy (both (3, H, W) in [0, 1]).

PSNR and SSIM come from torchmetrics (``data_range=1``); L-inf and L2 are plain norms of the difference in
[0, 1] pixel units (report L-inf x 255 for "/255" figures). LPIPS (torchmetrics, AlexNet trunk) needs
torchvision's AlexNet ImageNet weights in the torch hub cache (downloaded by torchvision when online); when
they are absent it is reported as unavailable (``None``), never as 0.

Example:
    >>> q = image_quality(clean, protected)
    >>> q["psnr"], q["ssim"], q["linf"], q["l2"], q["lpips"]
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache
from typing import Any

import torch

log = logging.getLogger(__name__)

QUALITY_KEYS = ("psnr", "ssim", "haarpsi", "linf", "l2", "lpips", "ring_ratio")


def _pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.dim() != 3:
        raise ValueError(f"expected one (C, H, W) image, got shape {tuple(a.shape)}")
    return a.detach().float().cpu().unsqueeze(0), b.detach().float().cpu().unsqueeze(0)


def psnr(clean: torch.Tensor, protected: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB (data range 1); ``inf`` for identical images."""
    from torchmetrics.functional.image import peak_signal_noise_ratio  # heavy import, only when used

    a, b = _pair(clean, protected)
    return float(peak_signal_noise_ratio(b, a, data_range=1.0))


def ssim(clean: torch.Tensor, protected: torch.Tensor) -> float:
    """Structural similarity (Gaussian window 11, sigma 1.5, data range 1); 1 for identical images."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    a, b = _pair(clean, protected)
    return float(structural_similarity_index_measure(b, a, data_range=1.0))


def haarpsi(clean: torch.Tensor, protected: torch.Tensor) -> float:
    """HaarPSI (piq; Reisenhofer et al. 2018): a perceptual similarity with no learned weights, 1 for identical
    images; it tracks human judgements of noise and texture better than SSIM."""
    import piq

    a, b = _pair(clean, protected)
    if min(a.shape[-2:]) < 32:  # its Haar filters need room
        return float("nan")
    return float(piq.haarpsi(b.clamp(0, 1), a.clamp(0, 1), data_range=1.0))


def ring_ratio(clean: torch.Tensor, protected: torch.Tensor, box: tuple[int, int, int, int]) -> float | None:
    """Mean |change| in the ring of the photo outside ``box`` (top, left, height, width: the authorized model's
    centre crop) over the mean inside it: about 1 when the perturbation is spread evenly, about 0.5 when the ring
    kept only a random start; ``None`` when the box covers the photo."""
    a, b = _pair(clean, protected)
    d = (b - a).abs()[0].mean(0)
    t, left, h, w = box
    inside = torch.zeros_like(d, dtype=torch.bool)
    inside[t : t + h, left : left + w] = True
    if bool(inside.all()) or float(d[inside].mean()) == 0:
        return None
    return float(d[~inside].mean() / d[inside].mean())


def linf(clean: torch.Tensor, protected: torch.Tensor) -> float:
    """Largest absolute pixel change, in [0, 1] units."""
    a, b = _pair(clean, protected)
    return float((b - a).abs().max())


def l2(clean: torch.Tensor, protected: torch.Tensor) -> float:
    """Euclidean norm of the whole difference image, in [0, 1] units (grows with image size)."""
    a, b = _pair(clean, protected)
    return float(torch.linalg.vector_norm(b - a))


def lpips_status() -> tuple[bool, str]:
    """Whether LPIPS can be computed here, and why not."""
    try:
        from torchvision.models import AlexNet_Weights

        from onlymine.models.provisioning import weights_available
    except ImportError as e:  # pragma: no cover - torchvision is a dependency
        return False, f"torchvision missing ({e})"
    url = AlexNet_Weights.DEFAULT.url
    if not weights_available(url):
        return False, (f"AlexNet trunk weights {url.rsplit('/', 1)[-1]} are not in the torch hub cache "
                       "(run once with internet to download them)")
    return True, "torchmetrics LPIPS (AlexNet trunk)"


@lru_cache(maxsize=1)
def _lpips_model() -> Any:
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    return LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).eval()


def lpips(clean: torch.Tensor, protected: torch.Tensor) -> float | None:
    """LPIPS distance (AlexNet), or ``None`` when its trunk weights are unavailable offline."""
    ok, why = lpips_status()
    if not ok:
        log.debug("LPIPS unavailable: %s", why)
        return None
    a, b = _pair(clean, protected)
    with torch.no_grad():
        return float(_lpips_model()(b.clamp(0, 1), a.clamp(0, 1)))


def image_quality(clean: torch.Tensor, protected: torch.Tensor, with_lpips: bool = True,
                  box: tuple[int, int, int, int] | None = None) -> dict[str, float | None]:
    """All quality metrics for one image pair: ``psnr, ssim, haarpsi, linf, l2, lpips`` (``lpips`` may be ``None``)
    and, given the authorized crop ``box``, ``ring_ratio``."""
    return {
        "psnr": psnr(clean, protected),
        "ssim": ssim(clean, protected),
        "haarpsi": haarpsi(clean, protected),
        "linf": linf(clean, protected),
        "l2": l2(clean, protected),
        "lpips": lpips(clean, protected) if with_lpips else None,
        "ring_ratio": ring_ratio(clean, protected, box) if box is not None else None,
    }


def finite_mean(values: list[float | None]) -> float | None:
    """Mean of the finite values; ``inf`` when every value is ``inf`` (untouched images); ``None`` when there are
    no values (e.g. LPIPS unavailable). ``inf`` PSNRs of untouched images among finite ones are left out."""
    vals = [float(v) for v in values if v is not None]
    finite = [v for v in vals if math.isfinite(v)]
    if finite:
        return sum(finite) / len(finite)
    return math.inf if vals else None
