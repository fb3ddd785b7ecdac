"""Feature map distortion (FMD): the protection itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from onlymine.attacks.base import Attack, project, uniform_like
from onlymine.models.classifier import Classifier


def feature_mse(feats: dict[str, torch.Tensor], clean: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-image MSE between feature maps, summed over the tapped layers -> (N,)."""
    total = None
    for name, f in feats.items():
        d = (f.float() - clean[name].float()).pow(2).flatten(1).mean(1)
        total = d if total is None else total + d
    assert total is not None
    return total


class FMD(Attack):
    r"""Feature map distortion from Chai et al., "Only My Model On My Data: A Privacy Preserving Approach
    Protecting one Model and Deceiving Unauthorized Black-Box Models", arXiv:2402.09316.

    Maximises :math:`J = \mathrm{MSE}(f_l(x^*), f_l(x)) - \lambda\,\mathrm{CE}(f(x^*), y)` subject to
    :math:`\|x^* - x\|_\infty \le \epsilon`, :math:`x^* \in [0,1]`, by a random start in the eps-ball and
    ``steps`` sign-gradient ascent steps of size ``alpha`` with projection. The feature term makes the image
    look different to models that share low-level features with the authorized one; the CE term keeps the
    authorized model's decision ``y`` (by default its own clean prediction, since users have no labels).

    Args:
        model: authorized :class:`~onlymine.models.Classifier` (white box).
        layer: feature tap name, or a list of names whose MSEs are summed (``onlymine layers SPEC``).
        eps: L-inf budget (paper: 16/255).
        alpha: step size (paper: 4/255).
        steps: number of steps N (paper: 100).
        lam: weight of the keep term (not published; see docs/defaults.md for how ours were chosen).
        random_start: start uniformly inside the eps-ball (paper: yes).
        keep_best: return, per image, the iterate with the largest feature distortion among those the
            authorized model still classifies as ``y`` (falls back to the last iterate). ``False`` is the
            paper's plain last iterate.
        seed: random start seed.

    Shape:
        images: (N, 3, H, W) in [0,1], or a list of (3, H_i, W_i); labels: (N,) or None. Output: same as input.

    Example:
        >>> clf = onlymine.load_model("torchvision:mobilenet_v2")
        >>> atk = FMD(clf, layer="features.7", eps=16/255, alpha=4/255, steps=100, lam=0.01)
        >>> adv = atk(images)  # labels default to clf's clean predictions
    """

    name = "fmd"

    def __init__(self, model: Classifier, layer: str | Sequence[str], eps: float = 16 / 255,
                 alpha: float = 4 / 255, steps: int = 100, lam: float = 0.01, random_start: bool = True,
                 keep_best: bool = False, seed: int | None = 0) -> None:
        self.layers = [layer] if isinstance(layer, str) else list(layer)
        if not self.layers:
            raise ValueError("FMD needs at least one feature layer")
        super().__init__(model, eps=eps, seed=seed, record_layers=self.layers)
        for name in self.layers:
            model.taps.resolve(name)  # fail early on unknown layers
        if steps < 0 or alpha <= 0:
            raise ValueError(f"need steps >= 0 and alpha > 0, got steps={steps}, alpha={alpha}")
        self.alpha, self.steps, self.lam = float(alpha), int(steps), float(lam)
        self.random_start, self.keep_best = random_start, keep_best

    def config(self) -> dict[str, Any]:
        return {**super().config(), "layer": self.layers, "alpha": self.alpha, "steps": self.steps,
                "lam": self.lam, "random_start": self.random_start, "keep_best": self.keep_best}

    def objective(self, x: list[torch.Tensor], clean: dict[str, torch.Tensor],
                  y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-image J, feature term and logits at ``x``."""
        logits, feats = self.model.forward_features(x, self.layers)
        feat = feature_mse(feats, clean)
        ce = F.cross_entropy(logits.float(), y, reduction="none")
        return feat - self.lam * ce, feat, logits

    def perturb(self, x0: list[torch.Tensor], y: torch.Tensor, gen: torch.Generator) -> list[torch.Tensor]:
        with torch.no_grad():
            _, clean = self.model.forward_features(x0, self.layers)
        x = [project(x + uniform_like(x, self.eps, gen), x, self.eps) if self.random_start else x.clone()
             for x in x0]
        best = [xi.clone() for xi in x]
        best_feat = torch.full((len(x0),), -1.0, device=y.device)
        for _ in range(self.steps):
            for xi in x:
                xi.requires_grad_(True)
            j, feat, logits = self.objective(x, clean, y)
            grads = torch.autograd.grad(j.sum(), x)
            if self.keep_best:
                self._update_best(best, best_feat, x, feat.detach(), logits.detach(), y)
            with torch.no_grad():
                x = [project(xi + self.alpha * g.sign(), xo, self.eps) for xi, g, xo in zip(x, grads, x0, strict=True)]
        if not self.keep_best:
            return x
        with torch.no_grad():
            _, feat, logits = self.objective(x, clean, y)
            self._update_best(best, best_feat, x, feat, logits, y)
        # images never valid keep the last iterate (the pipeline's verification reports them)
        return [b if float(bf) >= 0 else xi for b, bf, xi in zip(best, best_feat, x, strict=True)]

    @staticmethod
    def _update_best(best: list[torch.Tensor], best_feat: torch.Tensor, x: list[torch.Tensor],
                     feat: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        better = (logits.argmax(-1) == y) & (feat > best_feat)
        for i in torch.nonzero(better).flatten().tolist():
            best[i] = x[i].detach().clone()
            best_feat[i] = feat[i]
