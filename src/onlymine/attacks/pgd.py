"""PGD baseline: untargeted cross-entropy ascent on the authorized model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from onlymine.attacks.base import Attack, project, uniform_like
from onlymine.attacks.fmd import FMDConfig, StepConfig
from onlymine.models.classifier import Classifier


@dataclass(frozen=True)
class PGDConfig(StepConfig):
    name: ClassVar[str] = "pgd"
    presets: ClassVar[dict[str, dict[str, Any]]] = FMDConfig.presets


class PGD(Attack):
    """Projected gradient descent, Madry et al., "Towards Deep Learning Models Resistant to Adversarial
    Attacks", ICLR 2018 (arXiv:1706.06083): maximise CE(f(x*), y) in the L-inf ball.

    It fools the authorized model itself, so it is the baseline that shows why FMD needs a keep term; the
    same step rule as torchattacks.PGD.

    Args:
        model: the :class:`~onlymine.models.Classifier` to attack.
        config: a :class:`PGDConfig`, or its fields as keywords (``eps``, ``alpha``, ``steps``, ``random_start``,
            ``seed``, as :class:`~onlymine.attacks.FMD`).
        record_layers: layers whose feature distortion is recorded for comparison with FMD.

    Example:
        >>> adv = PGD(clf, eps=16/255, alpha=4/255, steps=100)(images)
    """

    name = "pgd"
    Config = PGDConfig

    def __init__(self, model: Classifier, config: PGDConfig | None = None,
                 record_layers: Sequence[str] | None = None, **options: Any) -> None:
        super().__init__(model, config, record_layers, **options)
        self.alpha, self.steps, self.random_start = float(self.cfg.alpha), int(self.cfg.steps), self.cfg.random_start

    def perturb(self, x0: list[torch.Tensor], y: torch.Tensor, gen: torch.Generator) -> list[torch.Tensor]:
        x = [project(x + uniform_like(x, self.eps, gen), x, self.eps) if self.random_start else x.clone()
             for x in x0]
        for _ in range(self.steps):
            self.checkpoint()
            for xi in x:
                xi.requires_grad_(True)
            loss = F.cross_entropy(self.model(x).float(), y, reduction="sum")
            grads = torch.autograd.grad(loss, x)
            with torch.no_grad():
                x = [project(xi + self.alpha * g.sign(), xo, self.eps) for xi, g, xo in zip(x, grads, x0, strict=True)]
        return x
