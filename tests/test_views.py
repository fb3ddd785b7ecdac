"""Random input views (attacks/views.py) and FMD+'s multi-view mode, on a tiny random-init model."""

from __future__ import annotations

import pytest
import torch
from tests.tiny import TINY_LAYER, tiny_classifier

from onlymine.attacks.fmd_plus import FMDPlus
from onlymine.attacks.keep import RobustKeep
from onlymine.attacks.samplers import BankViews
from onlymine.attacks.views import BlockShuffle, ResizePad


def _images(n: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.rand(3, 40 + 7 * i, 48, generator=g) for i in range(n)]


def test_block_shuffle_without_rotation_permutes_pixels_and_is_replayable() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.rand(2, 3, 30, 34, generator=g)
    for blocks in (2, 3, 4):
        v = BlockShuffle.draw(30, 34, blocks, g, angle=0.0)
        assert len(v.lengths) == blocks and sum(v.lengths) == (30 if v.dim == 2 else 34)
        assert all(min(lengths) >= 1 for lengths, _ in v.inner)
        out = v(z)
        assert out.shape == z.shape and torch.equal(out, v(z))  # same view, same result
        # no rotation: the same pixel values per image and channel, rearranged
        assert torch.equal(out.flatten(2).sort(-1).values, z.flatten(2).sort(-1).values)
    views = {BlockShuffle.draw(30, 34, 3, g) for _ in range(5)}
    assert len(views) == 5  # frozen records: hashable, and fresh draws differ


def test_block_shuffle_rotates_and_passes_gradients() -> None:
    z = torch.rand(1, 3, 24, 24, requires_grad=True)
    v = BlockShuffle.draw(24, 24, 2, torch.Generator().manual_seed(3))
    assert any(abs(a) > 1 for a in v.angles)
    v(z).sum().backward()
    assert z.grad is not None and float(z.grad.abs().sum()) > 0


def test_resize_pad_shrinks_into_a_zero_frame_and_fills_the_bank() -> None:
    import torch.nn.functional as F

    v = ResizePad(24, 3, 5)
    z = torch.rand(2, 3, 32, 32) + 0.1
    out = v(z)
    assert out.shape == z.shape
    inside = out[..., 3:27, 5:29]
    assert torch.allclose(inside, F.interpolate(z, size=(24, 24), mode="bilinear", align_corners=False,
                                                antialias=True))
    assert float(out.abs().sum()) == pytest.approx(float(inside.abs().sum()))  # zeros outside the shrunk image
    bank = BankViews(32, torch.Generator().manual_seed(0), n=5).bank
    assert bank[0] is None and len(bank) == 6
    assert all(isinstance(t, ResizePad) and int(32 * 0.85) <= t.size < 32 for t in bank[1:])


@pytest.mark.parametrize("shuffle", [0, 2])
def test_multi_view_mode_keeps_the_invariants(shuffle: int) -> None:
    clf = tiny_classifier()
    xs = _images()
    eps = 8 / 255
    kw = dict(eps=eps, alpha=2 / 255, steps=5, seed=4, views=3, shuffle=shuffle)
    atk = FMDPlus(clf, [TINY_LAYER, "0"], **kw)
    adv = atk(xs)
    again = FMDPlus(clf, [TINY_LAYER, "0"], **kw)(xs)
    plain = FMDPlus(clf, [TINY_LAYER, "0"], eps=eps, alpha=2 / 255, steps=5, seed=4)(xs)
    clean = clf.predict(xs)[0]
    for a, x, b in zip(adv, xs, again, strict=True):
        assert a.shape == x.shape and float((a - x).abs().max()) <= eps + 1e-6
        assert float(a.min()) >= 0 and float(a.max()) <= 1 and torch.equal(a, b)
    assert [r["kept"] for r in atk.records] == (clf.predict(adv)[0] == clean).tolist()
    assert any(not torch.equal(a, p) for a, p in zip(adv, plain, strict=True))
    assert atk.config()["views"] == 3 and atk.config()["shuffle"] == shuffle


def test_multi_view_settings_wiring_and_errors() -> None:
    from onlymine.protect import build_attack
    from onlymine.settings import ProtectSettings

    clf = tiny_classifier()
    s = ProtectSettings.build(model="tiny", attack="fmd+", steps=2, views=4, shuffle=3)
    atk = build_attack(clf, s)
    assert (atk.cfg.views, atk.cfg.shuffle) == (4, 3)
    assert s.key() != ProtectSettings.build(model="tiny", attack="fmd+", steps=2, views=2).key()
    for bad, flag in (({"views": 0}, "--views"), ({"shuffle": 1}, "--shuffle"), ({"shuffle": -2}, "--shuffle")):
        with pytest.raises(ValueError, match=flag):
            FMDPlus(clf, TINY_LAYER, **bad)


def test_views_scale_to_another_input_size() -> None:
    g = torch.Generator().manual_seed(5)
    v = BlockShuffle.draw(30, 34, 3, g)
    assert v.scaled(30, 34) == v
    big = v.scaled(60, 68)
    n = 60 if v.dim == 2 else 68
    assert sum(big.lengths) == n and big.order == v.order and big.angles == v.angles
    assert big(torch.rand(1, 3, 60, 68)).shape == (1, 3, 60, 68)
    r = ResizePad(28, 2, 3)
    assert r.scaled(32, 32, 1.0) == r and r.scaled(64, 64, 2.0) == ResizePad(56, 4, 6)


def test_multi_view_mode_with_a_surrogate() -> None:
    clf, sur = tiny_classifier(), tiny_classifier(seed=1)
    xs = _images(2)
    kw = dict(eps=8 / 255, alpha=2 / 255, steps=4, seed=1, views=2, shuffle=2)
    adv = FMDPlus(clf, TINY_LAYER, surrogates=[(sur, [TINY_LAYER])], **kw)(xs)
    alone = FMDPlus(clf, TINY_LAYER, **kw)(xs)
    for a, x in zip(adv, xs, strict=True):
        assert float((a - x).abs().max()) <= 8 / 255 + 1e-6
    assert any(not torch.equal(a, b) for a, b in zip(adv, alone, strict=True))


def test_robust_keep_checks_jpeg_and_half_size_copies() -> None:
    import torch.nn.functional as F

    from onlymine.attacks.fmd import margin

    clf = tiny_classifier()
    xs = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    y = clf.predict(xs)[0]
    kw = dict(eps=8 / 255, alpha=2 / 255, steps=4, seed=2, views=2, shuffle=2)
    atk = FMDPlus(clf, TINY_LAYER, robust_keep=True, **kw)
    m = margin(clf.run_net(clf.preprocess(xs)), y)
    keep, valid = atk.keep(clf, xs, m, y, torch.Generator().manual_seed(0))
    assert keep.shape == valid.shape == (3,) and bool((valid <= m).all())
    plain_keep, plain_valid = FMDPlus(clf, TINY_LAYER, **kw).keep(clf, xs, m, y, torch.Generator())
    assert torch.equal(plain_valid, m) and torch.equal(plain_keep, F.relu(2.0 - m))
    assert bool((keep >= plain_keep).all())  # the extra hinges only add
    adv = atk(xs)
    for a, x in zip(adv, xs, strict=True):
        assert float((a - x).abs().max()) <= 8 / 255 + 1e-6
    assert atk.config()["robust_keep"] is True and isinstance(atk.keep, RobustKeep)
    assert [r["kept"] for r in atk.records] == (clf.predict(adv)[0] == y).tolist()


@pytest.mark.parametrize("frame", [False, True])
def test_held_views_compute_their_clean_features_once_per_draw(frame: bool, monkeypatch) -> None:
    """--redraw K: a draw of views serves K steps; the clean image is run once per draw, not per step, and the
    result stays a valid protection that differs from drawing every step."""
    from onlymine.attacks import distortion as dist

    clf = tiny_classifier()
    xs = _images(2)
    clean_batches: list[int] = []
    original = dist.FeatureDistortion._clean

    def counting(self, i, views, fixed):  # noqa: ANN001, ANN202
        before = {k: len(c) for k, c in enumerate(self._cache)}
        out = original(self, i, views, fixed)
        clean_batches.append(int(len(self._cache[i]) > before[i] or not fixed))
        return out

    monkeypatch.setattr(dist.FeatureDistortion, "_clean", counting)
    kw = dict(eps=8 / 255, alpha=2 / 255, steps=6, seed=2, views=2, shuffle=2, frame=frame)
    held = FMDPlus(clf, TINY_LAYER, redraw=3, **kw)(xs)
    computed_held, clean_batches[:] = sum(clean_batches), []
    every = FMDPlus(clf, TINY_LAYER, redraw=1, **kw)(xs)
    computed_every = sum(clean_batches)
    # drawn at steps 0 and 3 (+ the final check reads the cached image): 2 batches, against one per step
    assert computed_held == 2 and computed_every >= 6
    for a, x in zip(held, xs, strict=True):
        assert float((a - x).abs().max()) <= 8 / 255 + 1e-6 and 0 <= float(a.min()) <= float(a.max()) <= 1
    assert any(not torch.equal(a, b) for a, b in zip(held, every, strict=True))
    with pytest.raises(ValueError, match="--redraw"):
        FMDPlus(clf, TINY_LAYER, redraw=0)


def test_feature_passes_stop_after_the_deepest_tap() -> None:
    """run_features: the layers after the deepest tap never run (the distortion needs no logits), and the
    features are those of the whole pass."""
    clf = tiny_classifier()
    ran: list[str] = []
    handle = clf.net[6].register_forward_hook(lambda *_: ran.append("linear"))
    z = torch.rand(2, 3, 32, 32)
    feats = clf.run_features(z, [TINY_LAYER])
    assert ran == []
    with clf.taps.capture([TINY_LAYER]) as full:
        clf.run_net(z)
    assert ran == ["linear"] and torch.equal(feats[TINY_LAYER], full[TINY_LAYER])
    handle.remove()


def test_view_scale_reads_the_random_views_smaller_and_the_image_at_its_input_size() -> None:
    from onlymine.attacks import samplers
    from onlymine.attacks.distortion import FeatureDistortion
    from onlymine.attacks.samplers import FrameViews

    assert not samplers.needs_antialias(2.0, 1.3) and samplers.needs_antialias(1.0, 2.5)
    clf = tiny_classifier()
    shapes: list[tuple[int, ...]] = []
    handle = clf.net[0].register_forward_pre_hook(lambda _m, inp: shapes.append(tuple(inp[0].shape)))
    xs = _images(2)
    dist = FeatureDistortion(clf, [TINY_LAYER], scale=0.75)
    dist.prepare(xs)
    assert dist.small(0) == (24, 24) and dist.side == 48
    views = FrameViews(3, "bsr", 2).draw(torch.Generator().manual_seed(0), 32, 32)
    first, rest, logits = dist([x.clone().requires_grad_(True) for x in xs], views, False)
    handle.remove()
    # clean: the image (32) and the 3 views (24) in one batch per size; then the image with logits, the views
    assert sorted(shapes) == sorted([(2, 3, 32, 32), (6, 3, 24, 24), (2, 3, 32, 32), (6, 3, 24, 24)])
    assert logits.shape == (2, 5) and first.shape == rest.shape == (2,)
    assert float(first.detach().abs().max()) < 1e-9 and float(rest.detach().abs().max()) < 1e-9  # clean itself
    with pytest.raises(ValueError, match="view"):
        FMDPlus(clf, TINY_LAYER, view_scale=0.1)  # a view a tenth of the input is no view of the photo
    out = FMDPlus(clf, TINY_LAYER, eps=8 / 255, alpha=2 / 255, steps=3, seed=0, views=3, view_scale=0.75)(xs)
    for a, x in zip(out, xs, strict=True):
        assert a.shape == x.shape and float((a - x).abs().max()) <= 8 / 255 + 1e-6
    assert any(float((a - x).abs().max()) > 0 for a, x in zip(out, xs, strict=True))


def test_plain_bilinear_views_are_an_option_that_changes_only_the_resampling() -> None:
    from onlymine.attacks.samplers import FULL, FrameCrop, frame_input, pyramid

    x = [torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(5))]
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    box = FrameCrop(0.1, 0.2, 0.9, 0.8)
    aa, plain = (frame_input(x, box, (32, 32), mean, std, antialias=a) for a in (True, False))
    assert aa.shape == plain.shape == (1, 3, 32, 32) and not torch.equal(aa, plain)
    assert float((aa - plain).abs().mean()) < 0.1  # the same picture, resampled differently
    # over 2x, the filter is used either way (plain bilinear would skip pixels)
    assert torch.equal(frame_input(x, FULL, (16, 16), mean, std, antialias=False),
                       frame_input(x, FULL, (16, 16), mean, std, antialias=True))
    assert torch.equal(pyramid(x, 16, False)[0], pyramid(x, 16, True)[0])
    clf, xs = tiny_classifier(), _images(2)
    kw = dict(eps=8 / 255, alpha=2 / 255, steps=3, seed=0, views=2)
    a, b = FMDPlus(clf, TINY_LAYER, **kw)(xs), FMDPlus(clf, TINY_LAYER, antialias=False, **kw)(xs)
    assert any(not torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert all(float((q - x).abs().max()) <= 8 / 255 + 1e-6 for q, x in zip(b, xs, strict=True))


def test_keep_freed_memory_sets_glibc_once() -> None:
    import platform
    import sys

    from onlymine.runtime import keep_freed_memory

    ok = keep_freed_memory()
    assert ok is keep_freed_memory()  # cached: asked once per process
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert ok is glibc


def test_ops_views_chain_operators_replay_and_pass_gradients() -> None:
    from onlymine.attacks.operators import BASIC, LEVELS, OperatorChain
    from onlymine.attacks.samplers import Framed, FrameViews

    g = torch.Generator().manual_seed(2)
    z = torch.rand(2, 3, 30, 34, requires_grad=True)
    chains = [OperatorChain.draw(g, 16 / 255) for _ in range(20)]
    assert all(len(c.ops) in LEVELS and 0 < c.radius <= 2 * 16 / 255 * 1.5 / 0.226 + 1e-9 for c in chains)
    assert len({BASIC[k][0] for c in chains for k, *_ in c.ops}) >= 5  # the chains mix the basic operators
    for c in chains:
        out = c(z)
        assert out.shape == z.shape and torch.equal(out, c(z))  # a frozen record replays exactly
        assert c.scaled(60, 68)(torch.rand(1, 3, 60, 68)).shape == (1, 3, 60, 68)
    flip = OperatorChain(((BASIC.index(("hflip", 0.0)), 0.0, 0.0, 0.0),), 0.0, 0)
    assert torch.equal(flip(z), z.flip(-1))  # one operator, no noise: exactly that operator
    sum(c(z).sum() for c in chains[:4]).backward()
    assert z.grad is not None and float(z.grad.abs().sum()) > 0
    views = FrameViews(3, "ops", eps=8 / 255).draw(g, 30, 34)
    assert views[0] is None and all(isinstance(v, Framed) and isinstance(v.then, OperatorChain) for v in views[1:])
    assert max(v.then.radius for v in views[1:]) <= 2 * 8 / 255 * 1.5 / 0.226 + 1e-9  # the noise follows eps


def test_fmd_plus_with_ops_views_keeps_the_invariants() -> None:
    clf = tiny_classifier()
    xs = _images(2)
    eps = 8 / 255
    adv = FMDPlus(clf, TINY_LAYER, eps=eps, alpha=2 / 255, steps=3, seed=0, views=2, transform="ops")(xs)
    for a, x in zip(adv, xs, strict=True):
        assert a.shape == x.shape and float((a - x).abs().max()) <= eps + 1e-6 and float(a.min()) >= 0
