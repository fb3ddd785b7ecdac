"""Distortion terms: how far the features of a protected image are from the clean image's, under the same view."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from onlymine.attacks.samplers import Framed, View, apply_view, frame_input, pyramid, scale_view
from onlymine.models.classifier import Classifier


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

    Call :meth:`prepare` with the clean images, then once per step with the views of that step: it returns the
    distortion of the first view, the summed distortion of the others (both (N,)), and the authorized logits of
    the first view (what the keep term and the best-iterate rule read)."""

    def __init__(self, model: Classifier, layers: Sequence[str],
                 surrogates: Sequence[tuple[Classifier, Sequence[str]]] = (), weight: float = 1.0) -> None:
        self.models = [(model, list(layers), 1.0), *((c, list(n), float(weight)) for c, n in surrogates)]
        self._cache: list[dict[View, dict[str, torch.Tensor]]] = [{} for _ in self.models]

    @torch.no_grad()
    def prepare(self, x0: list[torch.Tensor]) -> None:
        self.x0 = x0
        self.z0 = [clf.preprocess(x0) for clf, _, _ in self.models]
        self.n = len(x0)
        self.size = tuple(self.z0[0].shape[-2:])
        self._cache = [{} for _ in self.models]
        # whole-frame views read a copy at twice the largest input size: as sharp as the model can see
        self.side = 2 * max(max(clf.cfg.input_size) for clf, _, _ in self.models)
        self._levels0: list[torch.Tensor] | None = None

    def _input(self, i: int, view: View, z: torch.Tensor, levels: list[torch.Tensor] | None) -> torch.Tensor:
        """Model ``i``'s input batch under ``view``: a transformation of its crop ``z``, or a box of the frame."""
        if isinstance(view, Framed):
            assert levels is not None
            cfg = self.models[i][0].cfg
            return apply_view(view.then, frame_input(levels, view.frame, cfg.input_size, cfg.mean, cfg.std))
        return apply_view(view, z)

    def levels0(self) -> list[torch.Tensor]:
        if self._levels0 is None:
            with torch.no_grad():
                self._levels0 = pyramid(self.x0, self.side)
        return self._levels0

    def _views(self, i: int, views: Sequence[View]) -> list[View]:
        if i == 0:
            return list(views)
        h, (hs, ws) = self.size[0], self.z0[i].shape[-2:]
        return [scale_view(v, hs, ws, hs / h) for v in views]

    @torch.no_grad()
    def _clean(self, i: int, views: Sequence[View], fixed: bool) -> list[dict[str, torch.Tensor]]:
        """Clean features of model ``i`` under each view, the missing ones in one batch. The image itself and
        ``fixed`` views (a bank, or views held for several steps) are kept for the next steps; :meth:`forget`
        drops the held ones when a new draw replaces them."""
        clf, names, _ = self.models[i]
        cache, out = self._cache[i], [None] * len(views)
        missing = []
        for k, v in enumerate(views):  # views are frozen records: equal views share their clean features
            if v in cache:
                out[k] = cache[v]
            else:
                missing.append(k)
        if missing:
            framed = any(isinstance(views[k], Framed) for k in missing)
            levels = self.levels0() if framed else None
            with clf.taps.capture(names) as feats:
                clf.run_net(torch.cat([self._input(i, views[k], self.z0[i], levels) for k in missing]))
            for j, k in enumerate(missing):
                out[k] = {name: f[j * self.n : (j + 1) * self.n] for name, f in feats.items()}
                if fixed or views[k] is None:
                    cache[views[k]] = out[k]
        return out  # type: ignore[return-value]

    def forget(self) -> None:
        """Drop the clean features of held views (not the image's own)."""
        self._cache = [{None: c[None]} if None in c else {} for c in self._cache]

    def __call__(self, x: list[torch.Tensor], views: Sequence[View],
                 fixed: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = self.n
        first = rest = logits0 = None
        levels = pyramid(x, self.side) if any(isinstance(v, Framed) for v in views) else None
        for i, (clf, names, weight) in enumerate(self.models):
            vs = self._views(i, views)
            clean = self._clean(i, vs, fixed)
            z = clf.preprocess(x)
            with clf.taps.capture(names) as captured:
                batch = (self._input(i, vs[0], z, levels) if len(vs) == 1
                         else torch.cat([self._input(i, v, z, levels) for v in vs]))
                logits = clf.run_net(batch)
                feats = dict(captured)
            d = relative_distortion({k: f[:n] for k, f in feats.items()}, clean[0])
            d = d if i == 0 else weight * d
            first = d if first is None else first + d
            if len(vs) > 1:
                rest_clean = {name: torch.cat([c[name] for c in clean[1:]]) for name in names}
                r = weight * relative_distortion({k: f[n:] for k, f in feats.items()}, rest_clean).view(
                    len(vs) - 1, n).sum(0)
                rest = r if rest is None else rest + r
            if i == 0:
                logits0 = logits[:n]
        assert first is not None and logits0 is not None
        return first, rest if rest is not None else torch.zeros_like(first), logits0
