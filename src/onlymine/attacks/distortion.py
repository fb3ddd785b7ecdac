"""Distortion terms: how far the features of a protected image are from the clean image's, under the same view."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from onlymine.attacks.samplers import Framed, View, apply_view, frame_input, needs_antialias, pyramid, scale_view
from onlymine.models.classifier import Classifier

Size = tuple[int, int]


def relative_distortion(feats: dict[str, torch.Tensor], clean: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over layers of ||f_l(x*) - f_l(x)||^2 / ||f_l(x)||^2 per image -> (N,).

    Normalising each layer by its clean energy makes layers of very different scales count equally."""
    total = None
    for name, f in feats.items():
        c = clean[name].float()
        d = (f.float() - c).pow(2).flatten(1).sum(1) / c.pow(2).flatten(1).sum(1).clamp_min(1e-12)
        total = d if total is None else total + d
    assert total is not None
    return total


class FeatureDistortion:
    """Relative multi-layer distortion on the authorized model and on public surrogates (weight ``weight`` each),
    each model seeing every view scaled to its own input (a whole-frame view reads a copy of the photo at twice the
    largest input size, made once per step), compared with the clean image under the same view.

    The first view is read at the model's input size; the others (the random views) at ``scale`` times it, a
    cheaper pass. Only the first view's authorized pass runs the whole network (its logits feed the keep term):
    every other pass stops after the deepest tapped layer.

    Call :meth:`prepare` with the clean images, then once per step with the views of that step: it returns the
    distortion of the first view, the summed distortion of the others (both (N,)), and the authorized logits of
    the first view (what the keep term and the best-iterate rule read)."""

    def __init__(self, model: Classifier, layers: Sequence[str],
                 surrogates: Sequence[tuple[Classifier, Sequence[str]]] = (), weight: float = 1.0,
                 scale: float = 1.0, antialias: bool = True) -> None:
        self.models = [(model, list(layers), 1.0), *((c, list(n), float(weight)) for c, n in surrogates)]
        self.scale, self.antialias = float(scale), antialias
        self._cache: list[dict[tuple[View, Size], dict[str, torch.Tensor]]] = [{} for _ in self.models]

    @torch.no_grad()
    def prepare(self, x0: list[torch.Tensor]) -> None:
        self.x0 = x0
        self.z0 = [clf.preprocess(x0) for clf, _, _ in self.models]
        self.n = len(x0)
        self.size = tuple(self.z0[0].shape[-2:])
        self._cache = [{} for _ in self.models]
        # whole-frame views read a copy at twice the largest view size: as sharp as the model can see, and no
        # view's box is more than 2x its size on the shorter side (without the antialiasing filter, plain bilinear
        # then suffices: samplers.needs_antialias)
        self.side = 2 * max(max(self.small(i)) for i in range(len(self.models)))
        self._levels0: list[torch.Tensor] | None = None

    def small(self, i: int) -> Size:
        """The size at which model ``i`` reads the random views."""
        h, w = self.z0[i].shape[-2:]
        return (h, w) if self.scale == 1 else (max(1, round(h * self.scale)), max(1, round(w * self.scale)))

    def _input(self, i: int, view: View, z: torch.Tensor, levels: list[torch.Tensor] | None,
               size: Size) -> torch.Tensor:
        """Model ``i``'s input batch under ``view`` at ``size``: a transformation of its crop ``z`` (already at
        that size), or a box of the frame."""
        if isinstance(view, Framed):
            assert levels is not None
            cfg = self.models[i][0].cfg
            return apply_view(view.then, frame_input(levels, view.frame, size, cfg.mean, cfg.std, self.antialias))
        return apply_view(view, z)

    def levels0(self) -> list[torch.Tensor]:
        if self._levels0 is None:
            with torch.no_grad():
                self._levels0 = pyramid(self.x0, self.side, self.antialias)
        return self._levels0

    def _views(self, i: int, views: Sequence[View]) -> list[View]:
        """The step's views for model ``i``: the first at its input size, the others at :meth:`small`."""
        h = self.size[0]
        (hs, ws), (ht, wt) = self.z0[i].shape[-2:], self.small(i)
        first = views[0] if i == 0 else scale_view(views[0], hs, ws, hs / h)
        if (ht, wt) == self.size:
            return [first, *views[1:]]
        return [first, *(scale_view(v, ht, wt, ht / h) for v in views[1:])]

    def _at(self, z: torch.Tensor, size: Size, views: Sequence[View]) -> torch.Tensor:
        """``z`` resampled to ``size`` for ``views`` (left as it is when none of them reads the crop: a box of the
        frame reads the photo)."""
        if tuple(z.shape[-2:]) == tuple(size) or all(isinstance(v, Framed) for v in views):
            return z
        aa = self.antialias or needs_antialias(z.shape[-2] / size[0], z.shape[-1] / size[1])
        return F.interpolate(z, size=size, mode="bilinear", align_corners=False, antialias=aa)

    @torch.no_grad()
    def _clean(self, i: int, views: Sequence[View], fixed: bool) -> list[dict[str, torch.Tensor]]:
        """Clean features of model ``i`` under each view (the first at the input size, the others at
        :meth:`small`), the missing ones in one batch per size. The image itself and ``fixed`` views (a bank,
        or views held for several steps) are kept for the next steps; :meth:`forget` drops the held ones when a
        new draw replaces them."""
        clf, names, _ = self.models[i]
        cache, out = self._cache[i], [None] * len(views)
        sizes = [tuple(self.z0[i].shape[-2:]), *([self.small(i)] * (len(views) - 1))]
        missing: dict[Size, list[int]] = {}
        for k, v in enumerate(views):  # views are frozen records: equal views share their clean features
            if (v, sizes[k]) in cache:
                out[k] = cache[v, sizes[k]]
            else:
                missing.setdefault(sizes[k], []).append(k)  # type: ignore[arg-type]
        for size, ks in missing.items():
            levels = self.levels0() if any(isinstance(views[k], Framed) for k in ks) else None
            z = self._at(self.z0[i], size, [views[k] for k in ks])
            feats = clf.run_features(torch.cat([self._input(i, views[k], z, levels, size) for k in ks]), names)
            for j, k in enumerate(ks):
                out[k] = {name: f[j * self.n : (j + 1) * self.n] for name, f in feats.items()}
                if fixed or views[k] is None:
                    cache[views[k], size] = out[k]
        return out  # type: ignore[return-value]

    def forget(self) -> None:
        """Drop the clean features of held views (not the image's own)."""
        self._cache = [{key: f for key, f in c.items() if key[0] is None} for c in self._cache]

    def __call__(self, x: list[torch.Tensor], views: Sequence[View],
                 fixed: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = self.n
        first = rest = logits0 = None
        levels = pyramid(x, self.side, self.antialias) if any(isinstance(v, Framed) for v in views) else None
        for i, (clf, names, weight) in enumerate(self.models):
            vs = self._views(i, views)
            clean = self._clean(i, vs, fixed)
            z = clf.preprocess(x)
            full: Size = (int(z.shape[-2]), int(z.shape[-1]))
            if i == 0:  # the authorized first view: the whole network, for the keep term's logits
                with clf.taps.capture(names) as captured:
                    logits0 = clf.run_net(self._input(i, vs[0], z, levels, full))
                    feats = dict(captured)
            else:
                feats = clf.run_features(self._input(i, vs[0], z, levels, full), names)
            d = relative_distortion(feats, clean[0])
            first = d * weight if first is None else first + d * weight
            if len(vs) > 1:
                small = self.small(i)
                zs = self._at(z, small, vs[1:])
                feats = clf.run_features(torch.cat([self._input(i, v, zs, levels, small) for v in vs[1:]]), names)
                rest_clean = {name: torch.cat([c[name] for c in clean[1:]]) for name in names}
                r = weight * relative_distortion(feats, rest_clean).view(len(vs) - 1, n).sum(0)
                rest = r if rest is None else rest + r
        assert first is not None and logits0 is not None
        return first, rest if rest is not None else torch.zeros_like(first), logits0
