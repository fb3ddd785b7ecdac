"""NudeNet 3 (YOLOv8n-style ONNX detector of 18 body-part / face classes, ``nudenet`` package) as a black box.

Runs the package's own ``NudeDetector.detect`` (its preprocessing, onnxruntime session, 0.2 score floor and
OpenCV NMS) on the image as ``cv2.imread`` would give it, and maps its output to :class:`Detections`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from onlymine.detection.base import DetectorError
from onlymine.detection.detections import Detections, to_bgr_uint8


class NudeNet:
    """Args:
    min_score: drop detections below this (the package already drops < 0.2).
    """

    name = "nudenet"
    task = "face"

    def __init__(self, min_score: float = 0.2) -> None:
        try:
            import nudenet
            from nudenet import nudenet as impl
        except ImportError as e:
            raise DetectorError("nudenet is not installed (pip install nudenet)") from e
        self.detector = nudenet.NudeDetector()
        self.names: Sequence[str] = tuple(getattr(impl, "__labels"))
        self.min_score = min_score

    def detect(self, images: Sequence[torch.Tensor]) -> list[Detections]:
        out = []
        for im in images:
            found = [d for d in self.detector.detect(to_bgr_uint8(im)) if d["score"] >= self.min_score]
            boxes = [[x, y, x + w, y + h] for x, y, w, h in (d["box"] for d in found)]
            out.append(Detections(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                                  [d["score"] for d in found], [self.names.index(d["class"]) for d in found],
                                  self.names))
        return out
