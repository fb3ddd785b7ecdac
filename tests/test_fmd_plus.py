"""FMD+ (issue 9 groundwork): invariants and its building blocks, on a tiny random-init model."""

from __future__ import annotations

import torch
from tests.tiny import TINY_LAYER, tiny_classifier

from onlymine.attacks.fmd_plus import FMDPlus, margin, relative_distortion, texture_budget


def _images(n: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.rand(3, 40 + 7 * i, 48, generator=g) for i in range(n)]


def test_margin_sign_and_value() -> None:
    logits = torch.tensor([[3.0, 1.0, 0.5], [0.0, 2.0, 1.0]])
    y = torch.tensor([0, 0])
    assert torch.allclose(margin(logits, y), torch.tensor([2.0, -2.0]))


def test_relative_distortion_is_scale_free() -> None:
    clean = {"a": torch.ones(2, 4, 3, 3), "b": 100 * torch.ones(2, 4, 3, 3)}
    feats = {"a": 2 * torch.ones(2, 4, 3, 3), "b": 200 * torch.ones(2, 4, 3, 3)}
    assert torch.allclose(relative_distortion(feats, clean), torch.tensor([2.0, 2.0]))


def test_texture_budget_range_and_flat_regions() -> None:
    x = torch.zeros(3, 32, 32)
    x[:, :, 16:] = torch.rand(3, 32, 16, generator=torch.Generator().manual_seed(0))
    b = texture_budget(x, eps=8 / 255, floor=0.5)
    assert b.shape == (1, 32, 32)
    assert float(b.min()) >= 0.5 * 8 / 255 - 1e-7 and float(b.max()) <= 8 / 255 + 1e-7
    assert float(b[..., :, :8].mean()) < float(b[..., :, 24:].mean())  # flat side gets less


def test_invariants_budget_range_seed_and_keep() -> None:
    clf = tiny_classifier()
    xs = _images()
    eps = 8 / 255
    atk = FMDPlus(clf, [TINY_LAYER, "0"], eps=eps, alpha=2 / 255, steps=6, seed=3, ti_kernel=3, jpeg_prob=0.5)
    adv = atk(xs)
    again = FMDPlus(clf, [TINY_LAYER, "0"], eps=eps, alpha=2 / 255, steps=6, seed=3, ti_kernel=3, jpeg_prob=0.5)(xs)
    clean = clf.predict(xs)[0]
    for a, x, b in zip(adv, xs, again, strict=True):
        assert a.shape == x.shape and a.dtype == x.dtype
        assert float((a - x).abs().max()) <= eps + 1e-6
        assert float(a.min()) >= 0 and float(a.max()) <= 1
        assert torch.equal(a, b)
    kept = clf.predict(adv)[0] == clean
    assert [r["kept"] for r in atk.records] == kept.tolist()
    assert all(r[f"feat_rel[{TINY_LAYER}]"] > 0 for r in atk.records)


def test_texture_mode_respects_the_per_pixel_budget() -> None:
    clf = tiny_classifier()
    xs = _images(2)
    adv = FMDPlus(clf, TINY_LAYER, eps=8 / 255, steps=4, texture=True, texture_floor=0.25)(xs)
    for a, x in zip(adv, xs, strict=True):
        assert bool(((a - x).abs() <= texture_budget(x, 8 / 255, 0.25) + 1e-6).all())
