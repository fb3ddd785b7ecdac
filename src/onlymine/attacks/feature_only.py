"""FeatureOnly baseline: FMD without the keep term (lam = 0)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from onlymine.attacks.config import option
from onlymine.attacks.fmd import FMD, FMDConfig, StepConfig
from onlymine.models.classifier import Classifier


@dataclass(frozen=True)
class FeatureOnlyConfig(StepConfig):
    name: ClassVar[str] = "feature-only"
    presets: ClassVar[dict[str, dict[str, Any]]] = FMDConfig.presets
    layers: tuple[str, ...] = option((), "feature layer(s) to distort (default: as FMD)", everyday=True,
                                     flag="--layer", metavar="NAME")


class FeatureOnly(FMD):
    """Maximise only the feature distortion MSE(f_l(x*), f_l(x)) (FMD with ``lam=0``, the paper's ablation).

    It transfers to other models but usually destroys the authorized model's prediction too, which is why
    FMD adds its keep term. Arguments as :class:`FMD` without ``lam``.

    Example:
        >>> adv = FeatureOnly(clf, layer="features.7")(images)
    """

    name = "feature-only"
    Config = FeatureOnlyConfig

    def __init__(self, model: Classifier, layer: str | Sequence[str] | None = None,
                 config: FeatureOnlyConfig | None = None, **options: Any) -> None:
        cfg = (config or FeatureOnlyConfig()).replace(**options)
        if layer is not None:
            cfg = cfg.replace(layers=(layer,) if isinstance(layer, str) else tuple(layer))
        super().__init__(model, config=FMDConfig(eps=cfg.eps, seed=cfg.seed, alpha=cfg.alpha, steps=cfg.steps,
                                                 random_start=cfg.random_start, layers=cfg.layers, lam=0.0,
                                                 keep_best=False))
        self.cfg = cfg.replace(layers=tuple(self.layers))
