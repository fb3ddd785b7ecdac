"""onlymine: protect images so that only the model you authorize can read them.

Implements feature map distortion (FMD) from Chai et al., "Only My Model On My Data" (arXiv 2402.09316).
"""

from onlymine.attacks import FMD, PGD, Attack, FeatureOnly, FMDPlus, UniformNoise
from onlymine.attacks.fmd_plus import FMDPlusConfig
from onlymine.models import Classifier, ModelCfg, load_model

__version__ = "0.1.0"


def protect_dataset(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
    """:func:`onlymine.distributed.protect_dataset` (imported on first use: Ray is only needed there)."""
    from onlymine.distributed import protect_dataset as run

    return run(*args, **kwargs)

__all__ = ["FMD", "PGD", "Attack", "Classifier", "FMDPlus", "FMDPlusConfig", "FeatureOnly", "ModelCfg", "UniformNoise",
           "load_model", "protect_dataset"]
