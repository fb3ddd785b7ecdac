"""Distortion terms: how far the features of a protected image are from the clean image's, under the same view."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from onlymine.attacks.views import View, apply_view, scale_view
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
    each model seeing every view scaled to its own input, compared with the clean image under the same view.

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

    def _views(self, i: int, views: Sequence[View]) -> list[View]:
        if i == 0:
            return list(views)
        h, (hs, ws) = self.size[0], self.z0[i].shape[-2:]
        return [scale_view(v, hs, ws, hs / h) for v in views]

    @torch.no_grad()
    def _clean(self, i: int, views: Sequence[View], fixed: bool) -> list[dict[str, torch.Tensor]]:
        """Clean features of model ``i`` under each view: views of a fixed bank (and the image itself) are
        computed once each; fresh views once per step, together."""
        clf, names, _ = self.models[i]
        cache, out = self._cache[i], [None] * len(views)
        fresh = []
        for k, v in enumerate(views):  # views are frozen records: equal views share their clean features
            if v in cache:
                out[k] = cache[v]
            elif fixed or v is None:
                with clf.taps.capture(names) as feats:
                    clf.run_net(apply_view(v, clf.preprocess(self.x0)))
                out[k] = cache[v] = dict(feats)
            else:
                fresh.append(k)
        if fresh:
            with clf.taps.capture(names) as feats:
                clf.run_net(torch.cat([apply_view(views[k], self.z0[i]) for k in fresh]))
            for j, k in enumerate(fresh):
                out[k] = {name: f[j * self.n : (j + 1) * self.n] for name, f in feats.items()}
        return out  # type: ignore[return-value]

    def __call__(self, x: list[torch.Tensor], views: Sequence[View],
                 fixed: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = self.n
        first = rest = logits0 = None
        for i, (clf, names, weight) in enumerate(self.models):
            vs = self._views(i, views)
            clean = self._clean(i, vs, fixed)
            z = clf.preprocess(x)
            with clf.taps.capture(names) as captured:
                batch = apply_view(vs[0], z) if len(vs) == 1 else torch.cat([apply_view(v, z) for v in vs])
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
