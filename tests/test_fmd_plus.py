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


def test_settings_and_build_attack_wire_fmd_plus() -> None:
    from onlymine.attacks import FMDPlus as Exported
    from onlymine.protect import build_attack, retry_changes
    from onlymine.settings import PLUS_PRESETS, ProtectSettings

    s = ProtectSettings.build(preset="mid", model="torchvision:mobilenet_v2", attack="fmd+", momentum=0.5).resolved()
    assert s.eps == PLUS_PRESETS["mid"]["eps"] and s.alpha == PLUS_PRESETS["mid"]["alpha"]
    assert s.layer == ["features.4", "features.7", "features.11", "features.14"] and s.lam == 10.0
    tiny = ProtectSettings.build(model="tiny", attack="fmd+", steps=2, diversity=0.0).resolved()
    atk = build_attack(tiny_classifier(), tiny)
    assert isinstance(atk, Exported) and atk.layers and atk.momentum == 1.0 and atk.diversity == 0.0
    adv = atk(_images(2))
    assert all(float((a - x).abs().max()) <= tiny.eps + 1e-6 for a, x in zip(adv, _images(2), strict=True))
    assert retry_changes(tiny, 0) == {"lam": 100.0, "keep_best": True, "seed": 1}
    assert retry_changes(ProtectSettings.build(attack="pgd"), 0) is None
    # FMD+ options change the resume key only for FMD+
    fmd = ProtectSettings.build(attack="fmd")
    assert fmd.key() == ProtectSettings.build(attack="fmd", momentum=0.0).key()
    assert tiny.key() != ProtectSettings.build(model="tiny", attack="fmd+", steps=2).resolved().key()
    # the paper flag is FMD whatever the default attack
    assert ProtectSettings.build(paper=True, attack=None).attack == "fmd"


def test_spread_layers_picks_distinct_stages_by_depth() -> None:
    clf = tiny_classifier()
    layers = clf.spread_layers()
    assert layers and len(layers) == len(set(layers)) and set(layers) <= set(clf.stages())


def test_cosine_schedule_decays_from_alpha_to_a_quarter_and_keeps_old_resume_keys() -> None:
    import math

    import pytest

    from onlymine.attacks.fmd_plus import step_size
    from onlymine.protect import build_attack
    from onlymine.settings import ProtectSettings

    a = 4 / 255
    assert [step_size(a, k, 10, "cosine") for k in (0, 9)] == pytest.approx([a, a / 4])
    sizes = [step_size(a, k, 25, "cosine") for k in range(25)]
    assert sizes[0] == pytest.approx(a) and sizes[-1] == pytest.approx(a / 4)
    assert all(x >= y for x, y in zip(sizes, sizes[1:], strict=False))
    assert sizes[12] == pytest.approx(a / 4 + (a - a / 4) * 0.5 * (1 + math.cos(math.pi / 2)))
    assert all(step_size(a, k, 25) == a for k in range(25))
    with pytest.raises(ValueError, match="schedule"):
        FMDPlus(tiny_classifier(), TINY_LAYER, schedule="linear")
    s = ProtectSettings.build(model="tiny", attack="fmd+", steps=3, schedule="cosine")
    atk = build_attack(tiny_classifier(), s.resolved())
    assert atk.schedule == "cosine" and atk.config()["schedule"] == "cosine"
    xs = _images(2)
    assert all(float((v - x).abs().max()) <= s.eps + 1e-6 for v, x in zip(atk(xs), xs, strict=True))
    # the new fields stay out of the resume key at their defaults, so runs recorded before it still resume
    base = ProtectSettings.build(model="tiny", attack="fmd+", steps=3)
    d = {k: v for k, v in base.to_dict().items() if k not in ("preset", "schedule", "surrogates", "linbp", "importance",
                                                                  "views", "shuffle", "robust_keep")}
    import hashlib
    import json

    assert base.key() == hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
    assert s.key() != base.key()


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
    assert plus.settings.layer == clf.spread_layers() and plus.attack.layers == clf.spread_layers()
    fmd = Protector(ProtectSettings.build(model="tiny", attack="fmd", steps=1), device="cpu", model=clf)
    assert fmd.settings.layer == [clf.default_layer()]
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
    assert "surrogates" not in FMDPlus(clf, TINY_LAYER).config()


def test_surrogate_settings_resume_keys_and_errors(monkeypatch) -> None:  # noqa: ANN001
    import pytest

    from onlymine import protect
    from onlymine.protect import Protector, build_attack
    from onlymine.settings import ProtectSettings

    base = ProtectSettings.build(model="tiny", attack="fmd+", steps=2)
    with_sur = ProtectSettings.build(model="tiny", attack="fmd+", steps=2, surrogates=["tiny:other"])
    assert with_sur.key() != base.key()
    with pytest.raises(ValueError, match="fmd\\+ only"):
        build_attack(tiny_classifier(), ProtectSettings.build(attack="fmd", surrogates=["x"]), [(tiny_classifier(), ["2"])])
    with pytest.raises(ValueError, match="surrogate"):
        build_attack(tiny_classifier(), with_sur.resolved())  # named but not loaded
    with pytest.raises(ValueError, match="cannot also be a surrogate"):
        protect.load_surrogates(["tiny"], "tiny", "cpu")
    loaded: list[str] = []

    def fake_load(spec: str, device: object = "cpu") -> object:
        loaded.append(spec)
        return _tiny_surrogate()

    monkeypatch.setattr(protect, "load_model", fake_load)
    prot = Protector(with_sur, device="cpu", model=tiny_classifier())
    assert loaded == ["tiny:other"] and len(prot.surrogates) == 1
    sur, names = prot.surrogates[0]
    assert names == sur.spread_layers() and prot.attack.surrogates[0][1] == names
    assert prot.attack.config()["surrogates"] == {sur.name: names}



def test_linear_backward_changes_gradients_only_and_is_wired() -> None:
    from onlymine.attacks.fmd_plus import linear_backward
    from onlymine.protect import build_attack
    from onlymine.settings import ProtectSettings

    net = tiny_classifier().net
    net[1].inplace = True  # torchvision's ReLU6 modules are in-place
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    plain_out = net(x)
    (plain,) = torch.autograd.grad(plain_out.sum(), x)
    with linear_backward(net):
        lin_out = net(x)
        (lin,) = torch.autograd.grad(lin_out.sum(), x)
    assert torch.equal(plain_out, lin_out)  # forward values untouched
    assert not torch.allclose(plain, lin)  # the ReLUs no longer gate the gradient
    # a fully linear backward pass is the gradient of the same network without its ReLUs
    linear = torch.nn.Sequential(*(m for m in net if not isinstance(m, torch.nn.ReLU)))
    (want,) = torch.autograd.grad(linear(x).sum(), x)
    assert torch.allclose(lin, want, atol=1e-5)
    with linear_backward(net, start=0.5):  # only the second ReLU is linearised
        (half,) = torch.autograd.grad(net(x).sum(), x)
    assert not torch.allclose(half, lin) and not torch.allclose(half, plain)
    assert not any(m._forward_hooks for m in net.modules())  # hooks removed on exit
    assert net[1].inplace and not net[3].inplace
    # settings -> attack; off by default and then out of the resume key
    s = ProtectSettings.build(model="tiny", attack="fmd+", steps=3, linbp=0.5)
    atk = build_attack(tiny_classifier(), s.resolved())
    assert atk.linbp == 0.5 and atk.config()["linbp"] == 0.5
    assert s.key() != ProtectSettings.build(model="tiny", attack="fmd+", steps=3).key()
    xs = _images(2)
    assert all(float((v - x).abs().max()) <= s.eps + 1e-6 for v, x in zip(atk(xs), xs, strict=True))
    assert not any(m._forward_hooks for m in atk.model.net.modules())  # the attack leaves no hooks behind


def test_importance_decrease_and_fia_mode() -> None:
    from onlymine.attacks.fmd_plus import importance_decrease
    from onlymine.protect import build_attack
    from onlymine.settings import ProtectSettings

    clean = {"a": torch.ones(2, 4)}
    w = {"a": torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])}
    shrink = {"a": torch.tensor([[0.0, 1, 1, 1], [1.0, 1, 1, 1]])}
    # image 0 lost its important feature (decrease 1 / (1 * 2)); image 1 changed nothing
    assert torch.allclose(importance_decrease(shrink, clean, w), torch.tensor([0.5, 0.0]))
    assert torch.allclose(importance_decrease({"a": 2 * torch.ones(2, 4)}, clean, w), torch.tensor([-0.5, -0.5]))
    clf = tiny_classifier()
    xs = _images(3)
    atk = FMDPlus(clf, [TINY_LAYER, "0"], eps=8 / 255, alpha=2 / 255, steps=5, importance=3, seed=2)
    weights = atk._importance(clf.preprocess(xs), clf.predict(xs)[0], None, torch.Generator().manual_seed(0))
    assert set(weights) == {TINY_LAYER, "0"} and all(float(v.abs().sum()) > 0 for v in weights.values())
    adv = atk(xs)
    clean_pred = clf.predict(xs)[0]
    for a, x in zip(adv, xs, strict=True):
        assert float((a - x).abs().max()) <= 8 / 255 + 1e-6
    assert [r["kept"] for r in atk.records] == (clf.predict(adv)[0] == clean_pred).tolist()
    plain = FMDPlus(clf, [TINY_LAYER, "0"], eps=8 / 255, alpha=2 / 255, steps=5, seed=2)(xs)
    assert any(not torch.equal(a, b) for a, b in zip(adv, plain, strict=True))  # FIA changes the objective
    s = ProtectSettings.build(model="tiny", attack="fmd+", steps=2, importance=4)
    assert build_attack(clf, s.resolved()).importance == 4
    assert s.key() != ProtectSettings.build(model="tiny", attack="fmd+", steps=2).key()
