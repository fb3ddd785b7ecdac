"""UniformNoise baseline: random +-eps noise, to separate transfer from mere noise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from onlymine.attacks.base import Attack, project, uniform_like
from onlymine.attacks.config import AttackConfig
from onlymine.attacks.fmd import FMDConfig


@dataclass(frozen=True)
class UniformNoiseConfig(AttackConfig):
    name: ClassVar[str] = "uniform-noise"
    presets: ClassVar[dict[str, dict[str, Any]]] = {k: {"eps": v["eps"]} if "eps" in v else {}
                                                    for k, v in FMDConfig.presets.items()}


class UniformNoise(Attack):
    """x* = clip(x + U(-eps, eps), 0, 1): no model gradient at all.

    Args:
        model: the authorized :class:`~onlymine.models.Classifier` (used only for the records).
        eps: noise amplitude; seed: noise seed.

    Example:
        >>> adv = UniformNoise(clf, eps=16/255)(images)
    """

    name = "uniform-noise"
    Config = UniformNoiseConfig

    def perturb(self, x0: list[torch.Tensor], y: torch.Tensor, gen: torch.Generator) -> list[torch.Tensor]:
        return [project(x + uniform_like(x, self.eps, gen), x, self.eps) for x in x0]
