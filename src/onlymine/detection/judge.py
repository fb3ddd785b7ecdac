"""Any detector as an unauthorized-model judge (:class:`onlymine.judges.Judge`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from onlymine.detection.base import Detector
from onlymine.detection.detections import Detections
from onlymine.detection.metrics import score_image


class DetectorJudge:
    """A detector scored only through its outputs.

    ``predict`` returns one JSON-ready dict per image (``Detections.to_dict``: boxes xyxy in original pixels,
    scores, labels, names) so evaluations can be cached; :meth:`detections` turns one back. A protected
    prediction is ``kept`` when every clean detection above ``threshold`` is still found (same class,
    IoU >= ``iou``).

    Args:
        detector: any :class:`Detector`.
        threshold: score from which a detection counts (survival, new false detections, pseudo ground truth).
        iou: matching IoU.
    """

    def __init__(self, detector: Detector, threshold: float = 0.5, iou: float = 0.5) -> None:
        self.detector = detector
        self.name = detector.name
        self.task = detector.task
        self.threshold = threshold
        self.iou = iou

    def predict(self, images: Sequence[torch.Tensor]) -> list[dict[str, Any]]:
        return [d.to_dict() for d in self.detector.detect(list(images))]

    def detections(self, pred: Detections | dict[str, Any]) -> Detections:
        return pred if isinstance(pred, Detections) else Detections.from_dict(pred, self.detector.names)

    def kept(self, clean: Any, protected: Any) -> bool:
        s = score_image(self.detections(clean), self.detections(protected), self.threshold, self.iou)
        return s.n_survived == s.n_clean

    def correct(self, pred: Any, label: Any) -> bool | None:
        """With ``label`` the class names present (a ``;``-separated string or a collection, as the kit's
        detection/labels.csv tags): whether every tag this detector knows is detected above the threshold;
        ``None`` without tags or when the detector knows none of them."""
        if not label or not isinstance(label, (str, list, tuple, set, frozenset)):
            return None
        tags = set(label.split(";")) if isinstance(label, str) else set(label)
        tags &= set(self.detector.names)
        if not tags:
            return None
        return tags <= set(self.detections(pred).above(self.threshold).label_names())
