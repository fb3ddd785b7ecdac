"""Attacks on a :class:`~onlymine.models.Classifier`: FMD and the baselines it is measured against.

Every attack is called as ``adv = atk(images, labels=None)`` with RGB in [0,1] (an (N, 3, H, W) tensor or a
list of (3, H_i, W_i) tensors of any sizes) and returns the same structure. ``atk.records`` then holds
one dict per image (see :func:`onlymine.attacks.base.image_records`). Each attack owns a frozen config
(``Attack.Config``, fields in :mod:`onlymine.attacks.config`'s self-describing form).
"""

from onlymine.attacks.base import Attack, AttackResult, Cancelled
from onlymine.attacks.feature_only import FeatureOnly, FeatureOnlyConfig
from onlymine.attacks.fmd import FMD, FMDConfig
from onlymine.attacks.fmd_plus import FMDPlus, FMDPlusConfig
from onlymine.attacks.pgd import PGD, PGDConfig
from onlymine.attacks.uniform_noise import UniformNoise, UniformNoiseConfig

ATTACKS: dict[str, type[Attack]] = {"fmd+": FMDPlus, "fmd": FMD, "pgd": PGD, "feature-only": FeatureOnly,
                                    "uniform-noise": UniformNoise}

__all__ = ["ATTACKS", "FMD", "PGD", "Attack", "AttackResult", "Cancelled", "FMDConfig", "FMDPlus", "FMDPlusConfig",
           "FeatureOnly", "FeatureOnlyConfig", "PGDConfig", "UniformNoise", "UniformNoiseConfig"]
