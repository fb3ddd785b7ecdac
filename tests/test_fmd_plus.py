"""FMD+ and its parts (views, distortion, keep terms, optimiser step), on a tiny random-init model."""

from __future__ import annotations

import contextlib

import pytest
import torch
from tests.tiny import TINY_LAYER, tiny_classifier

from onlymine.attacks.distortion import relative_distortion
from onlymine.attacks.fmd import margin
from onlymine.attacks.fmd_plus import FMDPlus, FMDPlusConfig
from onlymine.attacks.step import texture_budget


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
    atk = FMDPlus(clf, [TINY_LAYER, "0"], eps=eps, alpha=2 / 255, steps=6, seed=3, robust_keep=True)
    adv = atk(xs)
    again = FMDPlus(clf, [TINY_LAYER, "0"], eps=eps, alpha=2 / 255, steps=6, seed=3, robust_keep=True)(xs)
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
    adv = FMDPlus(clf, TINY_LAYER, eps=8 / 255, steps=4, texture=True)(xs)
    for a, x in zip(adv, xs, strict=True):
        assert bool(((a - x).abs() <= texture_budget(x, 8 / 255) + 1e-6).all())
        assert float((a - x).abs().max()) > 0.5 * 8 / 255  # textured pixels use more than the floor


def test_settings_and_build_attack_wire_fmd_plus() -> None:
    from onlymine.attacks import FMDPlus as Exported
    from onlymine.attacks import FMDPlusConfig
    from onlymine.attacks.defaults import resolve
    from onlymine.protect import build_attack, retry_changes
    from onlymine.settings import ProtectSettings

    s = ProtectSettings.build(preset="mid", model="torchvision:mobilenet_v2", attack="fmd+", momentum=0.5)
    mid = FMDPlusConfig.presets["mid"]
    assert s.config.eps == mid["eps"] and s.config.alpha == mid["alpha"]
    assert s.config.momentum == 0.5 and s.preset == "mid"
    tiny = ProtectSettings.build(model="tiny", attack="fmd+", steps=2, diversity=0.0)
    tiny = tiny.changed(**resolve(tiny.config, tiny_classifier()).changes())
    atk = build_attack(tiny_classifier(), tiny)
    assert isinstance(atk, Exported) and atk.layers and atk.cfg.momentum == 1.0 and atk.cfg.diversity == 0.0
    assert atk.cfg.lam == 10.0 and atk.cfg.keep_margin == 0.1  # fp32 tiny model
    adv = atk(_images(2))
    assert all(float((a - x).abs().max()) <= tiny.config.eps + 1e-6 for a, x in zip(adv, _images(2), strict=True))
    assert retry_changes(tiny, 0) == {"lam": 100.0, "seed": 1}
    assert retry_changes(ProtectSettings.build(attack="fmd", lam=0.01), 1)["keep_best"] is True
    assert retry_changes(ProtectSettings.build(attack="pgd"), 0) is None
    # an FMD+ option is refused for FMD, naming the flag
    from onlymine.attacks.config import ConfigError

    with pytest.raises(ConfigError, match="--momentum does not apply to attack fmd"):
        ProtectSettings.build(attack="fmd", momentum=0.0)
    assert tiny.key() != ProtectSettings.build(model="tiny", attack="fmd+", steps=2).key()
    # the paper flag is FMD whatever the default attack
    assert ProtectSettings.build(paper=True, attack=None).attack == "fmd"


def test_views_samplers_draw_the_identity_and_fresh_views() -> None:
    from onlymine.attacks.samplers import BankViews, FreshViews
    from onlymine.attacks.views import BlockShuffle, ResizePad

    g = torch.Generator().manual_seed(0)
    bank = BankViews(32, g, n=6, p=1.0)
    assert bank.fixed and bank.bank[0] is None and len(bank.bank) == 7
    drawn = [bank.draw(g, 32, 32)[0] for _ in range(20)]
    assert all(isinstance(v, ResizePad) and v in bank.bank for v in drawn)
    assert all(BankViews(32, g, p=0.0).draw(g, 32, 32) == [None] for _ in range(5))
    fresh = FreshViews(3, "bsr", blocks=2).draw(g, 32, 32)
    assert not FreshViews.fixed and fresh[0] is None and all(isinstance(v, BlockShuffle) for v in fresh[1:])
    assert len(fresh) == 4 and all(isinstance(v, ResizePad) for v in FreshViews(2).draw(g, 32, 32)[1:])


def test_keep_terms_act_below_the_margin_only() -> None:
    from onlymine.attacks.keep import HingeKeep, RobustKeep

    clf = tiny_classifier()
    xs = _images(2)
    y = clf.predict(xs)[0]
    m = torch.tensor([3.0, 0.5])
    keep, valid = HingeKeep(2.0)(clf, xs, m, y, torch.Generator())
    assert keep.tolist() == [0.0, 1.5] and torch.equal(valid, m)
    keep, valid = RobustKeep(2.0)(clf, xs, m, y, torch.Generator().manual_seed(0))
    assert bool((keep >= torch.tensor([0.0, 1.5])).all()) and bool((valid <= m).all())


def test_sign_momentum_stays_in_the_budget_and_follows_the_gradient() -> None:
    from onlymine.attacks.step import SignMomentum

    x0 = [torch.full((3, 8, 8), 0.5)]
    opt = SignMomentum(x0, eps=4 / 255, alpha=1 / 255, momentum=1.0)
    x = opt.start(torch.Generator().manual_seed(0), random=False)
    for _ in range(10):
        x = opt.step(x, [torch.ones(3, 8, 8)])
    assert torch.allclose(x[0], torch.full((3, 8, 8), 0.5 + 4 / 255))  # ten steps up, clipped at eps


def test_spread_layers_picks_distinct_stages_by_depth() -> None:
    clf = tiny_classifier()
    layers = clf.spread_layers()
    assert layers and len(layers) == len(set(layers)) and set(layers) <= set(clf.stages())


def test_protector_gives_fmd_plus_the_spread_layers_when_none_is_measured() -> None:
    """Regression: the protect path used to fill an empty layer list with the single FMD default layer,
    so FMD+ ran on one stage for every model without a PLUS_DEFAULTS entry (EfficientNet-Lite, faces)."""
    from torch import nn

    from onlymine.faces.classifier import FaceClassifier
    from onlymine.models import ModelCfg
    from onlymine.protect import Protector
    from onlymine.settings import ProtectSettings

    clf = tiny_classifier()
    plus = Protector(ProtectSettings.build(model="tiny", attack="fmd+", steps=1), device="cpu", model=clf)
    assert list(plus.settings.config.layers) == clf.spread_layers() and plus.attack.layers == clf.spread_layers()
    fmd = Protector(ProtectSettings.build(model="tiny", attack="fmd", steps=1), device="cpu", model=clf)
    assert list(fmd.settings.config.layers) == [clf.default_layer()]
    # face models (flat onnx2torch-style graphs): convolutions picked by relative depth, forward order
    torch.manual_seed(0)
    net = nn.Sequential(*[m for _ in range(6) for m in (nn.Conv2d(3, 3, 3, padding=1), nn.ReLU())],
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)).eval()
    face = FaceClassifier(net, ModelCfg(name="f", input_size=(16, 16), mean=(0, 0, 0), std=(1, 1, 1), crop_pct=None,
                                        class_names=("a", "b"), pretrained=False, weights="random init"))
    assert face.spread_layers() == ["2", "4", "6", "8"]  # convs 1..4 of 0..5 at 0.22/0.39/0.61/0.78 of the depth
    assert face.spread_layers((0.0, 1.0)) == ["0", "10"]


def _tiny_surrogate(seed: int = 7, size: int = 24):
    from dataclasses import replace

    clf = tiny_classifier(seed=seed)
    clf.cfg = replace(clf.cfg, name=f"tiny-surrogate-{seed}", input_size=(size, size))
    return clf


def test_surrogate_features_join_the_objective_and_nothing_else() -> None:
    """A surrogate (own weights, own input size) is distorted far more when it is in the objective; the budget,
    seeding and the authorized keep rule are unchanged."""
    clf, sur = tiny_classifier(), _tiny_surrogate()
    xs = _images(4)
    kw = {"eps": 8 / 255, "alpha": 2 / 255, "steps": 8, "seed": 2}
    alone = FMDPlus(clf, TINY_LAYER, **kw)(xs)
    atk = FMDPlus(clf, TINY_LAYER, surrogates=[(sur, [TINY_LAYER])], surrogate_weight=50.0, **kw)
    both = atk(xs)
    again = FMDPlus(clf, TINY_LAYER, surrogates=[(sur, TINY_LAYER)], surrogate_weight=50.0, **kw)(xs)
    assert all(torch.equal(a, b) for a, b in zip(both, again, strict=True))
    for a, x in zip(both, xs, strict=True):
        assert float((a - x).abs().max()) <= 8 / 255 + 1e-6 and float(a.min()) >= 0 and float(a.max()) <= 1
    assert [r["kept"] for r in atk.records] == (clf.predict(both)[0] == clf.predict(xs)[0]).tolist()

    def surrogate_distortion(adv: list[torch.Tensor]) -> float:
        with torch.no_grad():
            f1 = sur.forward_features(adv, [TINY_LAYER])[1]
            f0 = sur.forward_features(xs, [TINY_LAYER])[1]
        return float(relative_distortion(f1, f0).mean())

    assert surrogate_distortion(both) > 1.2 * surrogate_distortion(alone)
    cfg = atk.config()
    assert cfg["surrogates"] == {sur.name: [TINY_LAYER]} and cfg["surrogate_weight"] == 50.0
    assert FMDPlus(clf, TINY_LAYER).config()["surrogates"] == {}


def test_surrogate_settings_resume_keys_and_errors(monkeypatch) -> None:  # noqa: ANN001
    import pytest

    from onlymine.protect import Protector, build, build_attack
    from onlymine.settings import ProtectSettings

    base = ProtectSettings.build(model="tiny", attack="fmd+", steps=2)
    with_sur = ProtectSettings.build(model="tiny", attack="fmd+", steps=2, surrogates=["tiny:other"])
    assert with_sur.key() != base.key()
    with pytest.raises(ValueError, match="--surrogate does not apply to attack fmd"):
        ProtectSettings.build(attack="fmd", surrogates=["x"])
    with pytest.raises(ValueError, match="surrogate"):
        build_attack(tiny_classifier(), with_sur)  # named but not loaded
    with pytest.raises(ValueError, match="cannot also be a surrogate"):
        build.load_surrogates(["tiny"], "tiny", "cpu")
    loaded: list[str] = []

    def fake_load(spec: str, device: object = "cpu") -> object:
        loaded.append(spec)
        return _tiny_surrogate()

    monkeypatch.setattr(build, "load_model", fake_load)
    prot = Protector(with_sur, device="cpu", model=tiny_classifier())
    assert loaded == ["tiny:other"] and len(prot.surrogates) == 1
    sur, names = prot.surrogates[0]
    assert names == sur.spread_layers() and prot.attack.surrogates[0][1] == names
    assert prot.attack.config()["surrogates"] == {sur.name: names}


def test_luminance_masking_gives_dark_flat_regions_more_budget_and_reaches_every_surface(capsys) -> None:
    """The luminance option (one field in fmd_plus.py) reaches the flag, the YAML config and the resume key."""
    from onlymine import cli
    from onlymine.settings import ProtectSettings

    x = torch.full((3, 32, 32), 0.5)
    x[:, :, :16] = 0.02  # dark, flat left half; mid-grey, flat right half
    plain, lum = texture_budget(x, 16 / 255), texture_budget(x, 16 / 255, luminance=True)
    flat = torch.cat([plain[..., :12], plain[..., 20:]], -1)  # away from the one edge: the floor, eps/2
    assert torch.allclose(flat, torch.full_like(flat, 8 / 255), atol=1e-3)
    assert lum[..., :12].min() > 14 / 255 and torch.allclose(lum[..., 20:], plain[..., 20:], atol=1e-3)
    s = ProtectSettings.build(texture=True, luminance=True)
    assert s.config.luminance and s.key() != ProtectSettings.build(texture=True).key()
    assert ProtectSettings.from_dict(s.to_dict()).config.luminance
    with contextlib.suppress(SystemExit):
        cli.main(["protect", "--help-all"])
    assert "--luminance" in capsys.readouterr().out


def test_a_smaller_random_start_stays_inside_its_share_of_the_budget() -> None:
    from onlymine.attacks.step import SignMomentum

    g = torch.Generator().manual_seed(0)
    x0 = [torch.rand(3, 20, 24, generator=g) * 0.8 + 0.1]
    eps = 10 / 255
    for texture in (False, True):
        opt = SignMomentum(x0, eps, 1 / 255, 1.0, texture=texture)
        whole = (opt.start(torch.Generator().manual_seed(1))[0] - x0[0]).abs()
        small = (opt.start(torch.Generator().manual_seed(1), share=0.1)[0] - x0[0]).abs()
        assert 0 < float(small.max()) <= 0.1 * eps + 1e-7 < float(whole.max())
        torch.testing.assert_close(small, whole * 0.1, atol=1e-6, rtol=1e-4)  # the same draw, scaled
    with pytest.raises(ValueError, match="--start"):
        FMDPlusConfig(start=0.0)


def test_soft_steps_move_weak_gradient_pixels_less() -> None:
    from onlymine.attacks.step import SignMomentum

    x0 = [torch.full((3, 16, 16), 0.5)]
    g = torch.linspace(0.01, 1, 3 * 16 * 16).view(3, 16, 16)  # gradient strength rising along the image
    plain = (SignMomentum(x0, 16 / 255, 2 / 255, 1.0).step(x0, [g])[0] - 0.5).abs()
    soft = (SignMomentum(x0, 16 / 255, 2 / 255, 1.0, soft=0.5).step(x0, [g])[0] - 0.5).abs()
    assert torch.allclose(plain, torch.full_like(plain, 2 / 255))  # the sign: every pixel moves alpha
    top, weak = soft.flatten()[-100:], soft.flatten()[:100]
    assert torch.allclose(top, torch.full_like(top, 2 / 255)) and float(weak.max()) < 0.5 * 2 / 255
    assert float(soft.max()) <= 2 / 255 + 1e-7
    with pytest.raises(ValueError, match="--soft"):
        FMDPlusConfig(soft=1.5)


def test_smooth_steps_follow_the_blurred_momentum() -> None:
    from onlymine.attacks.step import SignMomentum

    x0 = [torch.full((3, 24, 24), 0.5)]
    g = torch.zeros(3, 24, 24)
    g[:, 12, 12] = 1.0  # one strong pixel: its blur reaches the neighbours, the plain sign does not
    plain = SignMomentum(x0, 16 / 255, 2 / 255, 1.0).step(x0, [g])[0] - 0.5
    smooth = SignMomentum(x0, 16 / 255, 2 / 255, 1.0, smooth=2.0).step(x0, [g])[0] - 0.5
    assert int((plain.abs() > 0).sum()) == 3 and int((smooth.abs() > 0).sum()) > 3 * 9
    assert float(smooth.abs().max()) <= 2 / 255 + 1e-7 and float(smooth[0, 12, 12]) > 0
    with pytest.raises(ValueError, match="--smooth"):  # a blur wider than a photo makes no sense
        FMDPlusConfig(smooth=100.0)


def test_ssim_budget_holds_each_window_near_its_target() -> None:
    import numpy as np
    from PIL import Image

    from onlymine import metrics
    from onlymine.attacks.step import SSIM_C2, SignMomentum, ssim_budget

    x = torch.zeros(3, 48, 48)
    x[:, :, 24:] = torch.rand(3, 48, 24, generator=torch.Generator().manual_seed(0))
    b = ssim_budget(x, 16 / 255, 0.9)
    assert b.shape == (3, 48, 48) and float(b.max()) <= 16 / 255 + 1e-7
    flat = (1 / 0.9 - 1) * SSIM_C2
    assert abs(float(b[:, 4:20, 2:12].mean()) - flat**0.5) < 1e-6  # a flat region: SSIM's constant alone
    assert float(b[:, :, 30:].min()) > 15.9 / 255  # noise: the whole eps
    assert ssim_budget(torch.rand(3, 3, 7), 16 / 255, 0.9).shape == (3, 3, 7)  # smaller than SSIM's window
    # on a real photo, a change that fills the budget with random signs lands near the SSIM asked for
    photo = torch.from_numpy(np.asarray(Image.open("samples/chelsea.png").convert("RGB")).copy())
    photo = photo.permute(2, 0, 1).float() / 255
    sign = torch.randint(0, 2, photo.shape, generator=torch.Generator().manual_seed(1)).float() * 2 - 1
    for target in (0.85, 0.92):
        s = metrics.ssim(photo, (photo + ssim_budget(photo, 16 / 255, target) * sign).clamp(0, 1))
        assert target - 0.03 < s < target + 0.05
    # the optimiser takes it in place of the texture budget, and its start stays inside it
    opt = SignMomentum([photo], 16 / 255, 2 / 255, 1.0, texture=True, ssim=0.9)
    start = opt.start(torch.Generator().manual_seed(2))[0]
    assert bool(((start - photo).abs() <= ssim_budget(photo, 16 / 255, 0.9) + 1e-6).all())
    with pytest.raises(ValueError, match="--ssim-budget"):
        FMDPlusConfig(ssim_budget=1.0)
    with pytest.raises(ValueError, match="--luminance"):
        FMDPlusConfig(ssim_budget=0.85, luminance=True)
