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


# ---------------------------------------------------------------- the CLI on the tiny model (test_cli, test_safety)
FAST = ["--model", "torchvision:tiny", "--layer", TINY_LAYER, "--steps", "2", "--lam", "0.01", "--no-progress"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:  # noqa: ANN001
    """``onlymine ARGV``: exit status, stdout, stderr."""
    from onlymine import cli

    rc = cli.main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def tiny_everywhere(monkeypatch) -> None:  # noqa: ANN001
    """Every model spec the protect loop loads becomes the tiny classifier (the CLI path is what is tested)."""
    monkeypatch.setattr("onlymine.protect.loop.load_model",
                        lambda spec, device="cpu", **kw: tiny_classifier().to(device))
