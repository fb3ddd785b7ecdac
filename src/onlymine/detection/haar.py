"""OpenCV Haar cascade face detector (Viola & Jones, CVPR 2001; cascades shipped in opencv-python<5).

A classic, non-neural black box: ``CascadeClassifier.detectMultiScale`` on the grayscale image. It has no
confidence; the number of merged neighbours (``detectMultiScale2``) is mapped to a score in (0, 1) by n / (n + 5)
so that mAP has a ranking, and every box it returns counts as a detection.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from onlymine.detection.base import DetectorError
from onlymine.detection.detections import Detections, limit_side, to_bgr_uint8


class HaarFaces:
    """Args:
    cascade: file name inside ``cv2.data.haarcascades``.
    min_neighbors / scale_factor / min_size: ``detectMultiScale`` parameters (OpenCV's usual values).
    max_side: images with a longer side are downscaled first (speed); boxes map back to original pixels.
    """

    name = "haar"
    task = "face"
    names: Sequence[str] = ("face",)

    def __init__(self, cascade: str = "haarcascade_frontalface_default.xml", min_neighbors: int = 5,
                 scale_factor: float = 1.1, min_size: int = 24, max_side: int | None = 1280) -> None:
        try:
            import cv2
        except ImportError as e:
            raise DetectorError("opencv-python-headless<5 is not installed") from e
        data = getattr(cv2, "data", None)
        path = f"{data.haarcascades}{cascade}" if data is not None else cascade
        self.cv2 = cv2
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise DetectorError(f"{path}: Haar cascade not found (OpenCV 5 dropped them; use opencv<5)")
        self.min_neighbors, self.scale_factor, self.min_size = min_neighbors, scale_factor, min_size
        self.max_side = max_side

    def detect(self, images: Sequence[torch.Tensor]) -> list[Detections]:
        out = []
        for im in images:
            small, scale = limit_side(im.detach().cpu(), self.max_side)
            gray = self.cv2.cvtColor(to_bgr_uint8(small), self.cv2.COLOR_BGR2GRAY)
            rects, neighbours = self.cascade.detectMultiScale2(
                gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                minSize=(self.min_size, self.min_size))
            corners = [[x, y, x + w, y + h] for x, y, w, h in rects]
            boxes = torch.tensor(corners, dtype=torch.float32).reshape(-1, 4) / scale
            n = torch.tensor(list(neighbours), dtype=torch.float32).reshape(-1)
            out.append(Detections(boxes, n / (n + 5), torch.zeros(len(boxes), dtype=torch.int64),
                                  self.names))
        return out
