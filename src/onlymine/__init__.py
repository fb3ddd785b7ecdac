"""onlymine: protect images so that only the model you authorize can read them.

Implements feature map distortion (FMD) from Chai et al., "Only My Model On My Data" (arXiv 2402.09316).
"""

from onlymine.attacks import FMD, PGD, Attack, FeatureOnly, FMDPlus, UniformNoise
from onlymine.models import Classifier, ModelCfg, load_model

__version__ = "0.1.0"

__all__ = ["FMD", "PGD", "FMDPlus", "Attack", "Classifier", "FeatureOnly", "ModelCfg", "UniformNoise", "load_model"]
