"""Attacks on a :class:`~onlymine.models.Classifier`: FMD and the baselines it is measured against.

Every attack is called as ``adv = atk(images, labels=None)`` with RGB in [0,1] (an (N, 3, H, W) tensor or a
list of (3, H_i, W_i) tensors of any sizes) and returns the same structure. ``atk.records`` then holds
one dict per image (see :func:`onlymine.attacks.base.image_records`).
"""

from onlymine.attacks.base import Attack, AttackResult
from onlymine.attacks.feature_only import FeatureOnly
from onlymine.attacks.fmd import FMD
from onlymine.attacks.fmd_plus import FMDPlus
from onlymine.attacks.pgd import PGD
from onlymine.attacks.uniform_noise import UniformNoise

ATTACKS = {"fmd": FMD, "fmd+": FMDPlus, "pgd": PGD, "feature-only": FeatureOnly, "uniform-noise": UniformNoise}

__all__ = ["ATTACKS", "FMD", "PGD", "FMDPlus", "Attack", "AttackResult", "FeatureOnly", "UniformNoise"]
