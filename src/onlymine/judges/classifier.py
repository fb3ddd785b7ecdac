"""Any :class:`~onlymine.models.Classifier` as a (white-box model used as a black-box) judge."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from onlymine import threats
from onlymine.io import to_pil
from onlymine.judges.base import TopOneJudge
from onlymine.models import Classifier, load_model


class ClassifierJudge(TopOneJudge):
    """Top-1 of an image classifier, scored only through its predictions (never its gradients), on each image
    as an 8-bit PIL image through the model's published pipeline (what its owner's code would run).

    Args:
        model: a loaded :class:`Classifier`, or a model spec string.
        batch_size: images per forward pass.
    """

    def __init__(self, model: Classifier | str, batch_size: int = 16, device: str | torch.device = "cpu") -> None:
        self.model = load_model(model, device=device) if isinstance(model, str) else model
        self.name = self.model.name
        self.batch_size = batch_size

    @torch.no_grad()
    def top1(self, images: Sequence[torch.Tensor]) -> tuple[list[int], list[float]]:
        """Top-1 class and its softmax confidence per image, in batches of ``batch_size``."""
        classes: list[int] = []
        confs: list[float] = []
        for i in range(0, len(images), self.batch_size):
            cls, conf = self.model.predict_published([to_pil(im) for im in images[i : i + self.batch_size]])
            classes += cls.tolist()
            confs += conf.tolist()
        return classes, confs

    reads = threats.READS

    def predict(self, images: Sequence[torch.Tensor]) -> list[int]:
        return self.top1(images)[0]

    def read(self, images: Sequence[Any], how: str) -> list[Any]:
        """Top-1 on PIL ``images`` read ``how`` (``crop``, ``full`` or ``fivecrop``: :mod:`onlymine.threats`)."""
        return threats.read(self.model, images, how, self.batch_size)

    def confidences(self, images: Sequence[torch.Tensor]) -> list[float]:
        """Top-1 softmax confidence per image (for the paper's Figure 5)."""
        return self.top1(images)[1]
