"""FeatureOnly baseline: FMD without the keep term (lam = 0)."""

from __future__ import annotations

from collections.abc import Sequence

from onlymine.attacks.fmd import FMD
from onlymine.models.classifier import Classifier


class FeatureOnly(FMD):
    """Maximise only the feature distortion MSE(f_l(x*), f_l(x)) (FMD with ``lam=0``, the paper's ablation).

    It transfers to other models but usually destroys the authorized model's prediction too, which is why
    FMD adds its keep term. Arguments as :class:`FMD` without ``lam``.

    Example:
        >>> adv = FeatureOnly(clf, layer="features.7")(images)
    """

    name = "feature-only"

    def __init__(self, model: Classifier, layer: str | Sequence[str], eps: float = 16 / 255,
                 alpha: float = 4 / 255, steps: int = 100, random_start: bool = True, seed: int | None = 0) -> None:
        super().__init__(model, layer, eps=eps, alpha=alpha, steps=steps, lam=0.0,
                         random_start=random_start, keep_best=False, seed=seed)
