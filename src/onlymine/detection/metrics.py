"""Cross-task transfer metrics for detectors: the clean image's detections are the pseudo ground truth.

* survival: fraction of clean detections (score >= threshold) still found on the protected image by a
  protected detection (score >= threshold) of the same class with IoU >= ``iou`` (greedy one-to-one
  matching, highest clean score first);
* new false detections: protected detections (score >= threshold) that match no clean detection;
* mAP of the protected detections (all scores) against the clean detections (score >= threshold) as
  ground truth, with torchmetrics' ``MeanAveragePrecision`` (COCO mAP@[.5:.95] and mAP@.5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torchvision.ops import box_iou

from onlymine.detection.detections import Detections


def match(clean: Detections, protected: Detections, iou: float = 0.5) -> tuple[list[int], list[int]]:
    """Greedy one-to-one matching by class and IoU; returns (clean indices matched, protected indices matched)."""
    if not len(clean) or not len(protected):
        return [], []
    ious = box_iou(clean.boxes, protected.boxes)
    ious[clean.labels[:, None] != protected.labels[None, :]] = -1
    used: set[int] = set()
    mc, mp = [], []
    for i in torch.argsort(clean.scores, descending=True).tolist():
        order = torch.argsort(ious[i], descending=True).tolist()
        j = next((j for j in order if j not in used and ious[i, j] >= iou), None)
        if j is not None:
            used.add(j)
            mc.append(i)
            mp.append(j)
    return mc, mp


@dataclass
class ImageScores:
    """One image under one detector."""

    n_clean: int
    n_survived: int
    n_protected: int
    new_false: int

    @property
    def survival(self) -> float | None:
        return self.n_survived / self.n_clean if self.n_clean else None


def score_image(clean: Detections, protected: Detections, threshold: float, iou: float = 0.5) -> ImageScores:
    c, p = clean.above(threshold), protected.above(threshold)
    mc, _ = match(c, p, iou)
    return ImageScores(n_clean=len(c), n_survived=len(mc), n_protected=len(p), new_false=len(p) - len(mc))


@dataclass
class DetectionScores:
    """A detector over a set of images (pooled over all clean detections)."""

    n_images: int
    n_clean: int
    n_survived: int
    n_protected: int
    new_false: int
    survival: float | None
    new_false_per_image: float
    map: float | None
    map_50: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mean_average_precision(clean: Sequence[Detections], protected: Sequence[Detections],
                           threshold: float) -> tuple[float | None, float | None]:
    """(mAP@[.5:.95], mAP@.5) of ``protected`` against ``clean`` >= threshold; None without any pseudo-GT box."""
    from torchmetrics.detection import MeanAveragePrecision

    targets = [c.above(threshold) for c in clean]
    if sum(len(t) for t in targets) == 0:
        return None, None
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
    metric.update([{"boxes": p.boxes, "scores": p.scores, "labels": p.labels} for p in protected],
                  [{"boxes": t.boxes, "labels": t.labels} for t in targets])
    res = metric.compute()
    vals = [float(res["map"]), float(res["map_50"])]
    return tuple(None if v < 0 or math.isnan(v) else v for v in vals)  # type: ignore[return-value]


def score_detections(clean: Sequence[Detections], protected: Sequence[Detections], threshold: float,
                     iou: float = 0.5) -> tuple[DetectionScores, list[ImageScores]]:
    """Pooled scores and per-image scores of a detector on protected vs clean images."""
    if len(clean) != len(protected):
        raise ValueError(f"{len(clean)} clean vs {len(protected)} protected predictions")
    rows = [score_image(c, p, threshold, iou) for c, p in zip(clean, protected, strict=True)]
    n_clean = sum(r.n_clean for r in rows)
    n_surv = sum(r.n_survived for r in rows)
    m, m50 = mean_average_precision(clean, protected, threshold)
    total = DetectionScores(
        n_images=len(rows), n_clean=n_clean, n_survived=n_surv, n_protected=sum(r.n_protected for r in rows),
        new_false=sum(r.new_false for r in rows), survival=n_surv / n_clean if n_clean else None,
        new_false_per_image=sum(r.new_false for r in rows) / max(1, len(rows)), map=m, map_50=m50)
    return total, rows
