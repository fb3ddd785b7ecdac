"""Feature map distortion (FMD): the protection itself."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from onlymine.attacks.base import Attack, improve_best, project, uniform_like
from onlymine.attacks.config import AttackConfig, option
from onlymine.attacks.defaults import resolve
from onlymine.models.classifier import Classifier


@dataclass(frozen=True)
class StepConfig(AttackConfig):
    """An iterative attack: step size, number of steps, random start."""

    alpha: float = option(4 / 255, "step size, same units as --eps", everyday=True, unit="budget", above=0.0,
                          maximum=1.0)
    steps: int = option(100, "number of ascent steps", everyday=True, minimum=1)
    random_start: bool = option(True, "start from uniform noise inside the budget (the paper does)")


@dataclass(frozen=True)
class FMDConfig(StepConfig):
    """FMD's settings; ``layers``/``lam``/``keep_margin`` left empty are filled per model (attacks/defaults.py)."""

    name: ClassVar[str] = "fmd"
    revision: ClassVar[int] = 2  # 2: the published-pipeline keep margin (issue 23)
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "low": {"eps": 4 / 255, "alpha": 1 / 255, "steps": 50},
        "mid": {"eps": 8 / 255, "alpha": 2 / 255, "steps": 100},
        "high": {},
    }
    layers: tuple[str, ...] = option((), "feature layer(s) to distort (default: measured per model; "
                                     "`onlymine layers SPEC`)", everyday=True, flag="--layer", metavar="NAME")
    lam: float | None = option(None, "weight of the keep term (default: measured per model)", minimum=0.0)
    keep_best: bool = option(True, "return the most distorted iterate the authorized model still keeps "
                             "(off: the paper's last iterate)")
    early_stop: bool = option(False, "stop an image once margin-safe and its distortion has plateaued")
    keep_margin: float | None = option(None, "authorized logit margin the best-iterate rule asks for (default: "
                                       "by the attack precision, docs/pipelines.md)", minimum=0.0)


# The paper's exact procedure (Chai et al. 2024): FMD, last iterate, no best-iterate selection.
PAPER = {"eps": 16 / 255, "alpha": 4 / 255, "steps": 100, "keep_best": False, "random_start": True,
         "early_stop": False}


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
        config: an :class:`FMDConfig`, or its fields as keywords: ``eps`` (paper: 16/255), ``alpha`` (paper:
            4/255), ``steps`` (N, paper: 100), ``lam`` (not published; docs/defaults.md says how ours were
            chosen), ``random_start`` (paper: yes), ``seed``, and:
        keep_best: return, per image, the iterate with the largest feature distortion among those the
            authorized model still classifies as ``y`` with a logit margin of at least ``keep_margin`` (until
            one does, the one with the largest margin; :func:`~onlymine.attacks.base.improve_best`). ``False``
            is the paper's plain last iterate.
        early_stop: stop optimising an image once its best iterate is safe for the authorized model (logit
            margin of ``y`` over the runner-up >= ``stop_margin``) and its feature distortion has plateaued (grew
            by less than ``stop_tol`` (relative) over the last ``stop_patience`` steps). Stopped images leave the
            batch, so the remaining steps cost less. Off in paper mode.

    Shape:
        images: (N, 3, H, W) in [0,1], or a list of (3, H_i, W_i); labels: (N,) or None. Output: same as input.

    Example:
        >>> clf = onlymine.load_model("torchvision:mobilenet_v2")
        >>> atk = FMD(clf, layer="features.7", eps=16/255, alpha=4/255, steps=100, lam=0.01)
        >>> adv = atk(images)  # labels default to clf's clean predictions
    """

    name = "fmd"
    Config = FMDConfig

    def __init__(self, model: Classifier, layer: str | Sequence[str] | None = None, config: FMDConfig | None = None,
                 stop_margin: float = 2.0, stop_patience: int = 10, stop_tol: float = 0.02, **options: Any) -> None:
        if layer is not None:
            options["layers"] = (layer,) if isinstance(layer, str) else tuple(layer)
        cfg = resolve((config or self.Config()).replace(**options), model)
        self.layers = list(cfg.layers)
        super().__init__(model, cfg, record_layers=self.layers)
        for name in self.layers:
            model.taps.resolve(name)  # fail early on unknown layers
        self.alpha, self.steps, self.lam = float(cfg.alpha), int(cfg.steps), float(cfg.lam)
        self.random_start, self.keep_best, self.min_margin = cfg.random_start, cfg.keep_best, float(cfg.keep_margin)
        self.early_stop, self.stop_margin = cfg.early_stop, float(stop_margin)
        self.stop_patience, self.stop_tol = int(stop_patience), float(stop_tol)
        self.steps_run: list[int] = []  # per image, after a run

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
            self.checkpoint()
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
