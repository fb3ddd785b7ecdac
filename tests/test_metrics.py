"""Per-image quality metrics on inputs whose answers are known."""

from __future__ import annotations

import math

import pytest
import torch

from onlymine import metrics


def _image(h: int = 48, w: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, h, w, generator=g) * 0.6 + 0.2


def test_identical_images_give_infinite_psnr_and_unit_ssim():
    x = _image()
    q = metrics.image_quality(x, x.clone())
    assert math.isinf(q["psnr"]) and q["psnr"] > 0
    assert q["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert q["linf"] == 0 and q["l2"] == 0


def test_known_noise_gives_expected_psnr_linf_l2():
    x = _image()
    d = 4 / 255
    sign = torch.where(torch.arange(x.numel()).reshape(x.shape) % 2 == 0, 1.0, -1.0)
    y = x + d * sign  # every pixel moves by exactly d: MSE = d^2
    assert metrics.psnr(x, y) == pytest.approx(-20 * math.log10(d), abs=1e-3)  # 36.09 dB
    assert metrics.linf(x, y) == pytest.approx(d, rel=1e-5)
    assert metrics.l2(x, y) == pytest.approx(d * math.sqrt(x.numel()), rel=1e-4)
    assert 0 < metrics.ssim(x, y) < 1


def test_ssim_drops_with_stronger_noise():
    x = _image()
    g = torch.Generator().manual_seed(1)
    n = torch.rand(x.shape, generator=g) * 2 - 1
    weak, strong = (x + 2 / 255 * n).clamp(0, 1), (x + 16 / 255 * n).clamp(0, 1)
    assert metrics.ssim(x, weak) > metrics.ssim(x, strong)
    assert metrics.psnr(x, weak) > metrics.psnr(x, strong)


def test_lpips_is_none_not_zero_when_trunk_weights_missing():
    x = _image()
    ok, why = metrics.lpips_status()
    value = metrics.lpips(x, (x + 8 / 255).clamp(0, 1))
    if ok:
        assert value is not None and value > 0
    else:
        assert value is None and "AlexNet" in why


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.psnr(_image(48, 64), _image(64, 48))


def test_finite_mean_handles_inf_and_missing():
    assert metrics.finite_mean([30.0, 40.0, math.inf]) == pytest.approx(35.0)
    assert math.isinf(metrics.finite_mean([math.inf, math.inf]))
    assert metrics.finite_mean([None, None]) is None
    assert metrics.finite_mean([]) is None
