"""A tiny random-init conv classifier for fast tests (never presented as pretrained)."""

from __future__ import annotations

import torch
from torch import nn

from onlymine.models import Classifier, ModelCfg

TINY_LAYER = "2"  # the second conv: a (N, 8, 16, 16) feature map at the 32x32 input size
NUM_CLASSES = 5


def tiny_net(seed: int = 0) -> nn.Sequential:
    """conv-relu-conv-relu-pool-linear, deterministic weights from ``seed``."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, NUM_CLASSES),
    ).eval()


def tiny_classifier(seed: int = 0, crop_pct: float | None = 0.875) -> Classifier:
    cfg = ModelCfg(name="tiny", input_size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                   crop_pct=crop_pct, class_names=tuple("abcde"), pretrained=False, weights="random init")
    return Classifier(tiny_net(seed), cfg)
