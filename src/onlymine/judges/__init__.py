"""Unauthorized models ("judges"): anything that predicts on images and can say whether a prediction survived.

They are never queried while protecting; they only score the saved files afterwards.
"""

from onlymine.judges.base import Judge, TopOneJudge
from onlymine.judges.classifier import ClassifierJudge

__all__ = ["ClassifierJudge", "Judge", "TopOneJudge"]
