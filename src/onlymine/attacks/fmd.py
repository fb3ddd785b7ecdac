"""Feature map distortion (FMD): the protection itself."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from onlymine.attacks.base import Attack, improve_best, project, uniform_like
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
            authorized model still classifies as ``y`` with a logit margin of at least ``min_margin`` (until one
            does, the one with the largest margin; :func:`~onlymine.attacks.base.improve_best`). ``False`` is
            the paper's plain last iterate.
        min_margin: the margin the best-iterate rule asks for (covers the attack precision's error).
        seed: random start seed.
        early_stop: stop optimising an image once its best iterate is safe for the authorized model (logit
            margin of ``y`` over the runner-up >= ``stop_margin``) and its feature distortion has plateaued
            (grew by less than ``stop_tol`` (relative) over the last ``stop_patience`` steps). Stopped images
            leave the batch, so the remaining steps cost less. Off in paper mode.
        stop_margin, stop_patience, stop_tol: the early-stopping rule above.

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
                 keep_best: bool = False, seed: int | None = 0, early_stop: bool = False,
                 stop_margin: float = 2.0, stop_patience: int = 10, stop_tol: float = 0.02,
                 min_margin: float = 0.0) -> None:
        self.layers = [layer] if isinstance(layer, str) else list(layer)
        if not self.layers:
            raise ValueError("FMD needs at least one feature layer")
        super().__init__(model, eps=eps, seed=seed, record_layers=self.layers)
        for name in self.layers:
            model.taps.resolve(name)  # fail early on unknown layers
        if steps < 0 or alpha <= 0:
            raise ValueError(f"need steps >= 0 and alpha > 0, got steps={steps}, alpha={alpha}")
        self.alpha, self.steps, self.lam = float(alpha), int(steps), float(lam)
        self.random_start, self.keep_best, self.min_margin = random_start, keep_best, float(min_margin)
        if stop_patience < 1 or stop_tol < 0:
            raise ValueError(f"need stop_patience >= 1 and stop_tol >= 0, got {stop_patience}, {stop_tol}")
        self.early_stop, self.stop_margin = early_stop, float(stop_margin)
        self.stop_patience, self.stop_tol = int(stop_patience), float(stop_tol)
        self.steps_run: list[int] = []  # per image, after a run

    def config(self) -> dict[str, Any]:
        return {**super().config(), "layer": self.layers, "alpha": self.alpha, "steps": self.steps,
                "lam": self.lam, "random_start": self.random_start, "keep_best": self.keep_best,
                "min_margin": self.min_margin,
                **({"early_stop": True, "stop_margin": self.stop_margin, "stop_patience": self.stop_patience,
                    "stop_tol": self.stop_tol} if self.early_stop else {})}

    def objective(self, x: list[torch.Tensor], clean: dict[str, torch.Tensor],
                  y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-image J, feature term and logits at ``x``."""
        logits, feats = self.model.forward_features(x, self.layers)
        feat = feature_mse(feats, clean)
        ce = F.cross_entropy(logits.float(), y, reduction="none")
        return feat - self.lam * ce, feat, logits

    def perturb(self, x0: list[torch.Tensor], y: torch.Tensor, gen: torch.Generator) -> list[torch.Tensor]:
        clean = self.clean_features(x0, self.layers)
        x = [project(x + uniform_like(x, self.eps, gen), x, self.eps) if self.random_start else x.clone()
             for x in x0]
        n = len(x0)
        track = self.keep_best or self.early_stop
        best = [xi.clone() for xi in x] if track else []
        best_feat = torch.full((n,), -math.inf, device=y.device)
        best_margin = torch.full((n,), float("-inf"), device=y.device)
        history: list[torch.Tensor] = []  # best_feat after each step (early stopping)
        self.steps_run = [0] * n
        active = list(range(n))
        for _ in range(self.steps):
            if not active:
                break
            idx = torch.tensor(active, device=y.device)
            xa = [x[i].requires_grad_(True) for i in active]
            ca = clean if len(active) == n else {k: v[idx] for k, v in clean.items()}
            j, feat, logits = self.objective(xa, ca, y[idx])
            grads = torch.autograd.grad(j.sum(), xa)
            if track:
                self._update_best(best, best_feat, best_margin, xa, active, feat.detach(), logits.detach(), y)
            with torch.no_grad():
                for k, i in enumerate(active):
                    x[i] = project(xa[k].detach() + self.alpha * grads[k].sign(), x0[i], self.eps)
                    self.steps_run[i] += 1
            if self.early_stop:
                history.append(best_feat.clone())
                active = self._still_active(active, history, best_feat, best_margin)
        if track and active:
            with torch.no_grad():
                idx = torch.tensor(active, device=y.device)
                xa = [x[i] for i in active]
                ca = clean if len(active) == n else {k: v[idx] for k, v in clean.items()}
                _, feat, logits = self.objective(xa, ca, y[idx])
                self._update_best(best, best_feat, best_margin, xa, active, feat, logits, y)
        if not self.keep_best:
            # plain last iterate; an early-stopped image returns its best (evaluated, margin-safe) iterate
            return [best[i] if i not in active and self.early_stop else x[i] for i in range(n)]
        return best

    def image_records(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        rows = super().image_records(*args, **kwargs)
        for row, k in zip(rows, self.steps_run, strict=False):
            row["steps"] = k
        return rows

    def _still_active(self, active: list[int], history: list[torch.Tensor], best_feat: torch.Tensor,
                      best_margin: torch.Tensor) -> list[int]:
        """Early stopping: drop images whose best iterate is margin-safe and whose distortion plateaued."""
        if len(history) <= self.stop_patience:
            return active
        before = history[-1 - self.stop_patience]
        keep = []
        for i in active:
            plateau = float(best_feat[i]) <= (1 + self.stop_tol) * float(before[i])
            if not (plateau and float(best_margin[i]) >= self.stop_margin):
                keep.append(i)
        return keep

    def _update_best(self, best: list[torch.Tensor], best_feat: torch.Tensor, best_margin: torch.Tensor,
                     x: list[torch.Tensor], index: list[int], feat: torch.Tensor, logits: torch.Tensor,
                     y: torch.Tensor) -> None:
        """The best-iterate rule on the images ``index`` (positions in ``best``) at ``x``."""
        m = margin(logits, y[torch.tensor(index, device=y.device)])
        improve_best(best, best_feat, best_margin, x, index, feat, m, self.min_margin)


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Logit margin z_y - max_{j != y} z_j per image (> 0: the model predicts y)."""
    z = logits.float()
    zy = z.gather(1, y[:, None]).squeeze(1)
    return zy - z.scatter(1, y[:, None], float("-inf")).amax(1)
