"""Invariants of every attack (FMD, PGD, FeatureOnly, UniformNoise) on a tiny random-init classifier."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onlymine.attacks import FMD, PGD, Attack, FeatureOnly, UniformNoise
from onlymine.models import Classifier, LayerError
from tiny import TINY_LAYER, tiny_classifier

ATOL = 1e-6
RECORD_FIELDS = {"label", "clean_top1", "clean_conf", "protected_top1", "protected_conf", "linf", "psnr", "kept"}

Factory = Callable[..., Attack]
FACTORIES: dict[str, Factory] = {
    "fmd": lambda m, **kw: FMD(m, TINY_LAYER, steps=3, alpha=kw.get("eps", 16 / 255) / 4 + 1e-3, **kw),
    "pgd": lambda m, **kw: PGD(m, steps=3, alpha=kw.get("eps", 16 / 255) / 4 + 1e-3, record_layers=[TINY_LAYER], **kw),
    "feature-only": lambda m, **kw: FeatureOnly(m, TINY_LAYER, steps=3, alpha=kw.get("eps", 16 / 255) / 4 + 1e-3,
                                                **kw),
    "uniform-noise": lambda m, **kw: UniformNoise(m, record_layers=[TINY_LAYER], **kw),
}
NAMES = sorted(FACTORIES)


def make(name: str, model: Classifier, eps: float = 16 / 255, seed: int = 0) -> Attack:
    return FACTORIES[name](model, eps=eps, seed=seed)


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return tiny_classifier()


def images(n: int = 2, h: int = 24, w: int = 30, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------- invariants
@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    eps=st.floats(0.5 / 255, 32 / 255),
    n=st.integers(1, 3),
    h=st.integers(4, 40),
    w=st.integers(4, 40),
    seed=st.integers(0, 2**31 - 1),
    saturate=st.booleans(),
)
def test_output_in_eps_ball_and_range(clf, name, eps, n, h, w, seed, saturate):
    x = images(n, h, w, seed=seed % 1000)
    if saturate:  # pixels at exactly 0 and 1 must stay inside [0, 1]
        x = (x > 0.5).float()
    adv = make(name, clf, eps=eps, seed=seed)(x)
    assert adv.shape == x.shape and adv.dtype == x.dtype and adv.device == x.device
    assert float((adv - x).abs().max()) <= eps + ATOL
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert not adv.requires_grad


@pytest.mark.parametrize("name", NAMES)
def test_float64_input_keeps_dtype(clf, name):
    x = images().double()
    adv = make(name, clf)(x)
    assert adv.dtype == torch.float64
    assert float((adv - x).abs().max()) <= 16 / 255 + ATOL


@pytest.mark.parametrize("name", NAMES)
def test_list_of_different_sizes(clf, name):
    xs = [torch.rand(3, 20, 33), torch.rand(3, 41, 17), torch.rand(3, 32, 32)]
    atk = make(name, clf)
    adv = atk(xs)
    assert isinstance(adv, list) and len(adv) == 3
    for a, x in zip(adv, xs, strict=True):
        assert a.shape == x.shape
        assert float((a - x).abs().max()) <= 16 / 255 + ATOL
        assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert len(atk.records) == 3


@pytest.mark.parametrize("name", NAMES)
def test_single_chw_tensor_is_accepted(clf, name):
    x = torch.rand(3, 16, 16)
    adv = make(name, clf)(x)
    assert isinstance(adv, torch.Tensor) and adv.shape == x.shape


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_output_different_seed_differs(clf, name):
    x = images(2)
    a = make(name, clf, seed=7)(x)
    b = make(name, clf, seed=7)(x)
    c = make(name, clf, seed=8)(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", NAMES)
def test_eps_zero_is_refused_naming_the_flag(clf, name):
    with pytest.raises(ValueError, match=r"--eps must be greater than 0"):
        make(name, clf, eps=0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_input_and_model(name):
    clf = tiny_classifier().to("cuda")
    x = images(2).cuda()
    adv = make(name, clf)(x)
    assert adv.device == x.device and adv.dtype == x.dtype
    assert float((adv - x).abs().max()) <= 16 / 255 + ATOL
    cpu_adv = make(name, tiny_classifier())(x.cpu())
    # the random start is drawn on the CPU, so a seed means the same start on every device
    if name == "uniform-noise":
        assert torch.allclose(adv.cpu(), cpu_adv, atol=1e-6)


def test_input_on_cpu_model_elsewhere_comes_back_on_input_device(clf):
    # the model is on the CPU here; the output follows the input's device and dtype
    x = images(1).to(torch.float64)
    adv = FMD(clf, TINY_LAYER, steps=1)(x)
    assert adv.device == x.device and adv.dtype == x.dtype


# ------------------------------------------------------------------------------------------- labels, records
@pytest.mark.parametrize("name", NAMES)
def test_labels_default_to_clean_predictions_and_records_have_fields(clf, name):
    x = images(3)
    atk = make(name, clf)
    adv = atk(x)
    clean_cls, clean_conf = clf.predict(x)
    prot_cls, prot_conf = clf.predict(adv)
    assert len(atk.records) == 3
    for i, r in enumerate(atk.records):
        assert RECORD_FIELDS | {f"feat_mse[{TINY_LAYER}]", f"feat_rel[{TINY_LAYER}]"} <= set(r)
        assert r["label"] == r["clean_top1"] == int(clean_cls[i])
        assert r["clean_conf"] == pytest.approx(float(clean_conf[i]), abs=1e-5)
        assert r["protected_top1"] == int(prot_cls[i])
        assert r["protected_conf"] == pytest.approx(float(prot_conf[i]), abs=1e-5)
        assert r["kept"] == (r["protected_top1"] == r["clean_top1"])
        assert r["linf"] == pytest.approx(float((adv[i] - x[i]).abs().max()), abs=1e-6)
        mse = float(torch.mean((adv[i] - x[i]) ** 2))
        assert r["psnr"] == pytest.approx(10 * torch.log10(torch.tensor(1 / mse)).item(), abs=1e-3)
        assert r[f"feat_mse[{TINY_LAYER}]"] >= 0 and r[f"feat_rel[{TINY_LAYER}]"] >= 0


def test_explicit_labels_are_used(clf):
    x = images(2)
    clean, _ = clf.predict(x)
    other = (clean + 1) % 5
    atk = PGD(clf, steps=2, record_layers=[TINY_LAYER])
    atk(x, labels=other)
    assert [r["label"] for r in atk.records] == other.tolist()
    assert [r["clean_top1"] for r in atk.records] == clean.tolist()


def test_feature_distortion_record_matches_the_model(clf):
    x = images(2)
    atk = FMD(clf, TINY_LAYER, steps=2)
    adv = atk(x)
    _, f0 = clf.forward_features(x, [TINY_LAYER])
    _, f1 = clf.forward_features(adv, [TINY_LAYER])
    for i, r in enumerate(atk.records):
        mse = float(torch.mean((f1[TINY_LAYER][i] - f0[TINY_LAYER][i]) ** 2))
        assert r[f"feat_mse[{TINY_LAYER}]"] == pytest.approx(mse, rel=1e-4)
        assert r[f"feat_rel[{TINY_LAYER}]"] == pytest.approx(mse / float(torch.mean(f0[TINY_LAYER][i] ** 2)),
                                                              rel=1e-4)


# ------------------------------------------------------------------------------------------- behaviour
def test_fmd_distorts_features_more_than_uniform_noise(clf):
    x = images(4, 32, 32)
    key = f"feat_mse[{TINY_LAYER}]"
    fmd = FMD(clf, TINY_LAYER, steps=10, alpha=4 / 255, lam=0.0, keep_best=False)
    noise = UniformNoise(clf, record_layers=[TINY_LAYER])
    fmd(x), noise(x)
    for rf, rn in zip(fmd.records, noise.records, strict=True):
        assert rf[key] > 2 * rn[key]


def test_pgd_increases_the_loss(clf):
    x = images(4, 32, 32)
    y, _ = clf.predict(x)
    adv = PGD(clf, steps=5)(x)
    before = F.cross_entropy(clf(x), y, reduction="none")
    after = F.cross_entropy(clf(adv), y, reduction="none")
    assert bool((after > before).all())


def test_keep_best_keeps_whenever_the_last_iterate_keeps(clf):
    x = images(6, 32, 32, seed=3)
    plain = FMD(clf, TINY_LAYER, steps=6, lam=0.0, keep_best=False, seed=2)
    best = FMD(clf, TINY_LAYER, steps=6, lam=0.0, keep_best=True, seed=2)
    plain(x), best(x)
    for p, b in zip(plain.records, best.records, strict=True):
        if p["kept"]:
            assert b["kept"]
    assert sum(b["kept"] for b in best.records) >= sum(p["kept"] for p in plain.records)


def test_feature_only_is_fmd_without_keep_term(clf):
    atk = FeatureOnly(clf, TINY_LAYER, steps=2)
    assert atk.lam == 0.0 and atk.config()["attack"] == "feature-only"
    x = images(2)
    same = FMD(clf, TINY_LAYER, steps=2, lam=0.0, seed=0, keep_best=False)
    assert torch.equal(atk(x), same(x))


def test_config_describes_the_attack(clf):
    cfg = FMD(clf, [TINY_LAYER, "0"], eps=8 / 255, alpha=2 / 255, steps=5, lam=0.5, seed=3).config()
    assert cfg == {"attack": "fmd", "eps": 8 / 255, "seed": 3, "layers": [TINY_LAYER, "0"], "alpha": 2 / 255,
                   "steps": 5, "lam": 0.5, "random_start": True, "keep_best": True, "early_stop": False,
                   "keep_margin": 0.1}  # fp32 model: docs/pipelines.md


# ------------------------------------------------------------------------------------------- bad arguments
def test_rejects_images_outside_unit_range(clf):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        FMD(clf, TINY_LAYER, steps=1)(images(1) * 2)


@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (2, 4, 8, 8), (8, 8), (1, 2, 3, 8, 8)])
def test_rejects_non_rgb_shapes(clf, shape):
    with pytest.raises(ValueError, match="RGB"):
        UniformNoise(clf)(torch.rand(shape))


def test_rejects_wrong_number_of_labels(clf):
    with pytest.raises(ValueError, match="labels"):
        PGD(clf, steps=1)(images(2), labels=torch.tensor([0, 1, 2]))


@pytest.mark.parametrize("eps", [-0.1, 1.5])
def test_rejects_bad_eps(clf, eps):
    with pytest.raises(ValueError, match="eps"):
        UniformNoise(clf, eps=eps)


def test_rejects_bad_steps_and_alpha(clf):
    for steps in (-1, 0):
        with pytest.raises(ValueError, match="--steps must be at least 1"):
            FMD(clf, TINY_LAYER, steps=steps)
    with pytest.raises(ValueError, match="--alpha must be greater than 0"):
        FMD(clf, TINY_LAYER, alpha=0)
    assert FMD(clf, []).layers == [clf.default_layer()]  # no layer given: the model's default


def test_unknown_layer_fails_early_with_suggestions(clf):
    with pytest.raises(LayerError, match=r"unknown layer '7'.*onlymine layers"):
        FMD(clf, "7")
    with pytest.raises(LayerError, match=r"unknown layer 'features.7'"):
        FMD(clf, [TINY_LAYER, "features.7"])
