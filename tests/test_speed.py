"""Speed options keep the protection's invariants: the fast model computes the same function, early stopping
never returns a flipped image, bf16 stays inside the budget, and prefetching changes no output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import SAMPLE_LABELS, labelled_samples
from onlymine import io
from onlymine.attacks import FMD
from onlymine.attacks.fmd import margin
from onlymine.commands.options import add_settings_options, settings_from_args
from onlymine.models import Classifier, ModelCfg
from onlymine.models import fast as fastmod
from onlymine.models.fast import fast_classifier, fold_batchnorm, resolve_precision
from onlymine.protect import Protector, protect_paths
from onlymine.settings import ProtectSettings
from tiny import TINY_LAYER, tiny_classifier

REPO = Path(__file__).resolve().parents[1]
EPS = 16 / 255


def bn_classifier(seed: int = 0) -> Classifier:
    """conv-BN-ReLU6 x2 + head, with non-trivial BatchNorm statistics (random init, never pretrained)."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU6(),
        nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6, bias=False), nn.BatchNorm2d(6), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5),
    )
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    cfg = ModelCfg(name="tiny-bn", input_size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3, pretrained=False,
                   weights="random init")
    return Classifier(net.eval(), cfg)


def images(n: int = 4, size: tuple[int, int] = (40, 36), seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, *size, generator=g) for _ in range(n)]


# ------------------------------------------------------------------------------------- fast classifier
def test_fast_classifier_same_function_and_original_untouched() -> None:
    clf = bn_classifier()
    fast = fast_classifier(clf, keep=["4"])
    assert isinstance(fast.net[1], nn.Identity) and isinstance(fast.net[4], nn.Identity)
    assert isinstance(clf.net[1], nn.BatchNorm2d), "the original model must keep its BatchNorm"
    x = images()
    with torch.no_grad():
        a, fa = clf.forward_features(x, ["4", "5"])
        b, fb = fast.forward_features(x, ["4", "5"])
    torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    for name in ("4", "5"):  # a folded BN's name still taps the same tensor
        torch.testing.assert_close(fb[name], fa[name], atol=1e-4, rtol=1e-4)
    assert fast.channels_last and not clf.channels_last


def test_fold_keeps_tapped_convolutions() -> None:
    clf = bn_classifier()
    example = torch.randn(2, 3, 32, 32)
    net, n = fold_batchnorm(clf.net, example, keep=["0"])
    assert n == 1
    assert isinstance(net[1], nn.BatchNorm2d), "conv 0 is tapped: its output must stay pre-BN"
    assert isinstance(net[4], nn.Identity)


def test_fused_convolution_and_clip_compute_the_same_function_and_gradient() -> None:
    """MobileNetV2's conv -> folded BN -> ReLU6 triples as one oneDNN call (random init, never pretrained)."""
    from torchvision.models import mobilenet_v2

    from onlymine.models.fused import ConvClip, fuse_conv_clip

    torch.manual_seed(0)
    cfg = ModelCfg(name="mnv2-random", input_size=(64, 64), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                   pretrained=False, weights="random init")
    clf = Classifier(mobilenet_v2(weights=None).eval(), cfg)
    taps = ["features.4", "features.7.conv.0.2"]  # a block (fusion inside it is exact) and one ReLU6 (kept)
    plain = fast_classifier(clf, keep=taps, fuse=False)
    fused = fast_classifier(clf, keep=taps)
    n = sum(isinstance(m, ConvClip) for m in fused.net.modules())
    assert n == 34, "35 conv-ReLU6 pairs, one of them tapped"
    assert not isinstance(fused.net.get_submodule("features.7.conv.0.0"), ConvClip)
    assert fuse_conv_clip(fused.net, taps) == 0  # nothing left to fuse
    x = torch.rand(3, 3, 64, 64).to(memory_format=torch.channels_last)
    out = {}
    for name, m in (("plain", plain), ("fused", fused)):
        xx = x.clone().requires_grad_(True)
        with m.taps.capture(taps) as feats:
            logits = m.run_net(xx)
        loss = logits.logsumexp(1).sum() + sum(f.pow(2).mean() for f in feats.values())
        out[name] = (logits.detach(), {k: v.detach() for k, v in feats.items()}, torch.autograd.grad(loss, xx)[0])
    (la, fa, ga), (lb, fb, gb) = out["plain"], out["fused"]
    torch.testing.assert_close(lb, la, atol=1e-5, rtol=1e-5)
    for k in taps:
        torch.testing.assert_close(fb[k], fa[k], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gb, ga, atol=1e-6, rtol=1e-4)
    with torch.no_grad():  # the no-grad path and the plain fallback (autocast) give the same logits too
        torch.testing.assert_close(fused.run_net(x), la, atol=1e-5, rtol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = fused.run_net(x).float()
    assert torch.allclose(low, la, atol=0.5, rtol=0.1)
    relu = ConvClip(nn.Conv2d(3, 4, 3, padding=1), 0.0, float("inf"))  # ReLU: the relu post-op
    y = torch.randn(2, 3, 9, 9, requires_grad=True)
    torch.testing.assert_close(relu(y), relu.conv(y).relu())
    g1 = torch.autograd.grad(relu(y).pow(2).sum(), y)[0]
    g2 = torch.autograd.grad(relu.conv(y).relu().pow(2).sum(), y)[0]
    torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-4)


def test_fast_classifier_falls_back_when_folding_changes_the_function(monkeypatch) -> None:
    clf = bn_classifier()

    def broken(net, example, keep=()):
        out, n = fold_batchnorm(net, example, keep)
        out[0].weight.data.mul_(3)
        return out, n

    monkeypatch.setattr(fastmod, "fold_batchnorm", broken)
    fast = fast_classifier(clf)
    assert isinstance(fast.net[1], nn.BatchNorm2d)
    x = images(2)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), clf(x))


def test_resolve_precision(monkeypatch) -> None:
    monkeypatch.setattr(fastmod, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(fastmod, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "fp32"  # measured slower there, even with AMX
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("int8", "cpu")


# ------------------------------------------------------------------------------------- early stopping
def test_early_stop_never_returns_a_flipped_image() -> None:
    clf = tiny_classifier()
    x = images(6, seed=3)
    # tol so large that "plateaued" always holds: images stop as soon as the margin rule allows
    atk = FMD(clf, TINY_LAYER, eps=EPS, alpha=4 / 255, steps=30, lam=0.01, keep_best=False, early_stop=True,
              stop_margin=0.05, stop_patience=2, stop_tol=10.0, seed=0)
    adv = atk(x)
    y = clf.predict(x)[0]
    stopped = [i for i, k in enumerate(atk.steps_run) if k < 30]
    assert stopped, "the rule should stop some images early here"
    with torch.no_grad():
        m = margin(clf(adv), y)
    for i in stopped:
        assert float(m[i]) >= 0.05 - 1e-4, f"image {i} stopped with margin {float(m[i])}"
        assert atk.records[i]["kept"] and atk.records[i]["steps"] == atk.steps_run[i]
    for a, x0 in zip(adv, x, strict=True):
        assert float((a - x0).abs().max()) <= EPS + 1e-6 and float(a.min()) >= 0 and float(a.max()) <= 1


def test_early_stop_off_is_the_plain_loop() -> None:
    clf = tiny_classifier()
    x = images(3, seed=1)
    plain = FMD(clf, TINY_LAYER, steps=5, seed=0)(x)
    never = FMD(clf, TINY_LAYER, steps=5, seed=0, early_stop=True, stop_margin=float("inf"))(x)
    for a, b in zip(plain, never, strict=True):
        torch.testing.assert_close(a, b)


def test_clean_features_computed_once(monkeypatch) -> None:
    clf = tiny_classifier()
    calls = []
    orig = clf.forward_features

    def counting(images, layers):
        calls.append(torch.is_grad_enabled())
        return orig(images, layers)

    monkeypatch.setattr(clf, "forward_features", counting)
    FMD(clf, TINY_LAYER, steps=3, keep_best=False)(images(2))
    # clean pass (no grad) + 3 steps + records pass: no second clean pass for the attack itself
    assert len(calls) == 5 and calls.count(False) == 2


# ------------------------------------------------------------------------------------- bf16
def test_bf16_keeps_the_invariants() -> None:
    clf = bn_classifier()
    fast = fast_classifier(clf, precision="bf16")
    assert fast.amp_dtype == torch.bfloat16
    x = images(3)
    with torch.no_grad():
        assert fast(x).dtype == torch.float32
    adv = FMD(fast, "2", steps=3, keep_best=True)(x)
    for a, x0 in zip(adv, x, strict=True):
        assert a.dtype == torch.float32 and a.shape == x0.shape
        assert float((a - x0).abs().max()) <= EPS + 1e-6 and float(a.min()) >= 0 and float(a.max()) <= 1


# ------------------------------------------------------------------------------------- pipeline
def _photos(folder: Path, n: int = 5) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (36 + 4 * i, 40, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    (folder / "p9_broken.png").write_bytes(b"not an image")
    return folder


def _settings(**kw) -> ProtectSettings:
    return ProtectSettings.build(**{"model": "tiny", "layers": [TINY_LAYER], "steps": 2, "lam": 0.01,
                                    "retries": 1, **kw})


def test_prefetch_gives_the_same_outputs_as_sequential(tmp_path: Path) -> None:
    src = _photos(tmp_path / "in")
    outs = {}
    for ahead in (0, 2):
        out = tmp_path / f"out{ahead}"
        prot = Protector(_settings(), device="cpu", model=tiny_classifier())
        summary = protect_paths([src], out, prot.settings, batch_size=2, progress=False, protector=prot,
                                prefetch=ahead)
        assert summary.count("error") == 1 and summary.count("ok") + summary.count("failed") == 5
        rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
        for r in rows:
            r.pop("seconds", None)
            r.pop("output", None)
        files = {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}
        outs[ahead] = (rows, files)
    assert outs[0][1] and outs[0][1] == outs[2][1]
    assert outs[0][0] == outs[2][0]


def test_batch_pixels_bounds_batches(tmp_path: Path, monkeypatch) -> None:
    src = _photos(tmp_path / "in")
    prot = Protector(_settings(), device="cpu", model=tiny_classifier())
    sizes: list[int] = []
    orig = prot.protect_batch

    def spy(ims, outputs, *args, **kw):
        sizes.append(sum(im.rgb[0].numel() for im in ims))
        return orig(ims, outputs, *args, **kw)

    monkeypatch.setattr(prot, "protect_batch", spy)
    protect_paths([src], tmp_path / "out", prot.settings, batch_size=8, progress=False, protector=prot,
                  batch_pixels=3000)
    assert len(sizes) == 5 and max(sizes) <= 40 * 52  # one photo per batch: two never fit in 3000 pixels


def test_protector_attacks_the_fast_copy_and_verifies_with_the_model(tmp_path: Path) -> None:
    clf = bn_classifier()
    prot = Protector(_settings(model="tiny-bn", layers=["2"]), device="cpu", model=clf)
    assert prot.attack.model is prot.fast_model and prot.fast_model is not clf
    assert isinstance(prot.model.net[1], nn.BatchNorm2d)
    summary = protect_paths([_photos(tmp_path / "in", 2)], tmp_path / "out", prot.settings, progress=False,
                            protector=prot)
    assert summary.count("ok") + summary.count("failed") == 2


def test_cli_speed_flags_and_paper_mode() -> None:
    import argparse

    p = argparse.ArgumentParser()
    add_settings_options(p)
    s = settings_from_args(p.parse_args(["--attack", "fmd", "--early-stop", "--precision", "bf16", "--no-fold-bn",
                                         "--compile"]))
    r = s.runtime
    got = (s.config.early_stop, r.precision, r.fold_bn, r.compile, r.channels_last)
    assert got == (True, "bf16", False, True, True)
    assert settings_from_args(p.parse_args(["--paper"])).config.early_stop is False
    assert ProtectSettings.build(paper=True).config.early_stop is False


# ------------------------------------------------------------------------------------- benchmarks
def test_gpu_throughput_cpu_dry_run() -> None:
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_throughput.py"), "--device", "cpu", "--dry-run"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert {r["precision"] for r in rows} == {"fp32", "bf16"}
    assert all(r["img_steps_per_s"] > 0 and r["device"] == "cpu" for r in rows)


def test_naive_reference_stays_in_budget(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import speed

    pytest.importorskip("torchvision")
    from onlymine.models import spec_available

    if not spec_available(speed.SPEC)[0]:
        pytest.skip("MobileNetV2 weights unavailable")
    (path, label), = speed.pick_photos(1, labelled_samples(tmp_path / "photos", {"chelsea.png": "chelsea.png"}))
    assert label == SAMPLE_LABELS["chelsea.png"]
    steps = speed.naive_protect([path], tmp_path, steps=1, eps=EPS, alpha=4 / 255, lam=0.01, layer="features.7")
    assert steps == 1
    out = io.load_image(tmp_path / (path.stem + ".png")).rgb
    x0 = io.load_image(path).rgb
    assert out.shape == x0.shape and float((out - x0).abs().max()) <= EPS + 1 / 255
