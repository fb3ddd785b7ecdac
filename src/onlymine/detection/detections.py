"""One image's detections: boxes (xyxy, original-image pixels), scores and class indices, plus class names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torchvision.ops import batched_nms, clip_boxes_to_image


@dataclass
class Detections:
    """Detections of one image.

    Attributes:
        boxes: (K, 4) float, ``x1, y1, x2, y2`` in pixels of the original (full-resolution) image.
        scores: (K,) float confidences in [0, 1].
        labels: (K,) int64 class indices into ``names``.
        names: the detector's class names (shared, not copied per image).
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    names: Sequence[str] = field(default_factory=tuple, repr=False)

    def __post_init__(self) -> None:
        self.boxes = torch.as_tensor(self.boxes, dtype=torch.float32).reshape(-1, 4).cpu()
        self.scores = torch.as_tensor(self.scores, dtype=torch.float32).reshape(-1).cpu()
        self.labels = torch.as_tensor(self.labels, dtype=torch.int64).reshape(-1).cpu()
        if not len(self.boxes) == len(self.scores) == len(self.labels):
            raise ValueError(f"{len(self.boxes)} boxes, {len(self.scores)} scores, {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls, names: Sequence[str] = ()) -> Detections:
        return cls(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), names)

    def above(self, threshold: float) -> Detections:
        """Only the detections with score >= ``threshold``."""
        keep = self.scores >= threshold
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep], self.names)

    def label_names(self) -> list[str]:
        return [self.names[i] if 0 <= i < len(self.names) else str(i) for i in self.labels.tolist()]

    def to_dict(self, digits: int = 2) -> dict[str, Any]:
        """JSON-ready form (rounded pixel boxes)."""
        return {"boxes": [[round(v, digits) for v in b] for b in self.boxes.tolist()],
                "scores": [round(s, 4) for s in self.scores.tolist()],
                "labels": self.labels.tolist(), "names": self.label_names()}

    @classmethod
    def from_dict(cls, d: dict[str, Any], names: Sequence[str] = ()) -> Detections:
        return cls(torch.tensor(d["boxes"]).reshape(-1, 4), torch.tensor(d["scores"]),
                   torch.tensor(d["labels"], dtype=torch.int64), names)


def nms_detections(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou: float,
                   size: tuple[int, int], names: Sequence[str], class_agnostic: bool = False,
                   max_det: int = 300) -> Detections:
    """Clip to the image ``size`` (H, W), drop empty boxes, then (per-class) NMS with torchvision.ops."""
    boxes = clip_boxes_to_image(boxes.float(), size)
    ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, scores, labels = boxes[ok], scores[ok].float(), labels[ok]
    groups = torch.zeros_like(labels) if class_agnostic else labels
    keep = batched_nms(boxes, scores, groups, iou)[:max_det]
    return Detections(boxes[keep], scores[keep], labels[keep], names)


def to_bgr_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) [0,1] RGB tensor -> (H, W, 3) uint8 BGR array, as ``cv2.imread`` would give."""
    from onlymine.io import to_uint8

    return np.ascontiguousarray(to_uint8(image.detach().cpu())[:, :, ::-1])


def limit_side(image: torch.Tensor, max_side: int | None) -> tuple[torch.Tensor, float]:
    """Downscale (antialiased) so the long side is at most ``max_side``; returns (image, scale <= 1).
    Boxes found on the result map back to the original by dividing by the scale."""
    h, w = image.shape[-2:]
    if not max_side or max(h, w) <= max_side:
        return image, 1.0
    s = max_side / max(h, w)
    small = torch.nn.functional.interpolate(image[None].float(), size=(max(1, round(h * s)), max(1, round(w * s))),
                                            mode="bilinear", align_corners=False, antialias=True)[0]
    return small.clamp(0, 1), s
