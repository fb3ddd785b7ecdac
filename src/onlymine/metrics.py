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

QUALITY_KEYS = ("psnr", "ssim", "linf", "l2", "lpips")


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


def image_quality(clean: torch.Tensor, protected: torch.Tensor, with_lpips: bool = True) -> dict[str, float | None]:
    """All quality metrics for one image pair: ``psnr, ssim, linf, l2, lpips`` (``lpips`` may be ``None``)."""
    return {
        "psnr": psnr(clean, protected),
        "ssim": ssim(clean, protected),
        "linf": linf(clean, protected),
        "l2": l2(clean, protected),
        "lpips": lpips(clean, protected) if with_lpips else None,
    }


def finite_mean(values: list[float | None]) -> float | None:
    """Mean of the finite values; ``inf`` when every value is ``inf`` (untouched images); ``None`` when there are
    no values (e.g. LPIPS unavailable). ``inf`` PSNRs of untouched images among finite ones are left out."""
    vals = [float(v) for v in values if v is not None]
    finite = [v for v in vals if math.isfinite(v)]
    if finite:
        return sum(finite) / len(finite)
    return math.inf if vals else None
