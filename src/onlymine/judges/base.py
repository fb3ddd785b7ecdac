"""The judge protocol shared by classifiers, recognisers and detectors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Judge(Protocol):
    """An unauthorized model, white or black box.

    ``predict`` takes full-resolution [0,1] RGB images ((3, H, W) tensors of any sizes, as read from the saved
    files) and returns one prediction per image, in whatever form the task has (a class index, an identity,
    a list of boxes). ``kept`` says whether the protected image's prediction still matches the clean one;
    ``correct`` compares a prediction with a ground-truth label (``None`` when that has no meaning).
    """

    name: str

    def predict(self, images: Sequence[torch.Tensor]) -> list[Any]: ...

    def kept(self, clean: Any, protected: Any) -> bool: ...

    def correct(self, pred: Any, label: Any) -> bool | None: ...


class TopOneJudge:
    """Base for judges whose prediction is a single class index (top-1)."""

    name = "top1"

    def predict(self, images: Sequence[torch.Tensor]) -> list[int]:
        raise NotImplementedError

    def kept(self, clean: Any, protected: Any) -> float:
        """1 if the prediction is the clean one; for several reads of one photo (five crops), the share kept."""
        if isinstance(clean, list):
            return sum(int(c) == int(p) for c, p in zip(clean, protected, strict=True)) / len(clean)
        return float(int(clean) == int(protected))

    def correct(self, pred: Any, label: Any) -> float | None:
        if label is None or int(label) < 0:
            return None
        if isinstance(pred, list):
            return sum(int(p) == int(label) for p in pred) / len(pred)
        return float(int(pred) == int(label))
