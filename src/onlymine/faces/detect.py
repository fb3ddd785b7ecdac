"""Face detection with MTCNN (facenet-pytorch; its weights ship in the wheel, so it works offline)."""

from __future__ import annotations

import functools
import logging

import numpy as np
import torch

from onlymine.faces.align import Face

log = logging.getLogger(__name__)


class DetectorError(RuntimeError):
    """The face detector cannot run here (package missing); the message says what to install."""


@functools.lru_cache(maxsize=2)
def _mtcnn(device: str):  # noqa: ANN202
    try:
        from facenet_pytorch import MTCNN
    except ImportError as e:
        raise DetectorError("face detection needs facenet-pytorch: pip install --no-deps facenet-pytorch requests"
                            ) from e
    return MTCNN(keep_all=True, device=device)


class FaceDetector:
    """MTCNN (Zhang et al. 2016) boxes and 5 landmarks, in full-resolution photo pixels.

    Args:
        min_score: keep faces whose MTCNN probability is at least this.
        max_side: photos are detected at most this large (longer side), for speed; boxes are scaled back.
        min_size: drop faces smaller than this many photo pixels.
        device: torch device for MTCNN.
    """

    name = "facenet-pytorch:mtcnn"

    def __init__(self, min_score: float = 0.95, max_side: int = 1024, min_size: float = 20.0,
                 device: str = "cpu") -> None:
        self.min_score, self.max_side, self.min_size, self.device = min_score, max_side, min_size, device

    @torch.no_grad()
    def detect(self, image: torch.Tensor) -> list[Face]:
        """Faces in one (3, H, W) [0,1] photo, left to right."""
        from onlymine.io import to_uint8

        h, w = image.shape[-2:]
        scale = min(1.0, self.max_side / max(h, w))
        x = image.detach().cpu().float()
        if scale < 1.0:
            x = torch.nn.functional.interpolate(x[None], scale_factor=scale, mode="bilinear", antialias=True,
                                                align_corners=False)[0]
        arr = to_uint8(x)
        boxes, probs, points = _mtcnn(self.device).detect(arr, landmarks=True)
        faces: list[Face] = []
        if boxes is None:
            return faces
        for b, p, lm in zip(boxes, probs, points, strict=True):
            if p is None or float(p) < self.min_score:
                continue
            f = Face(tuple(float(v) / scale for v in b), np.asarray(lm, dtype=np.float64) / scale, float(p))
            if f.size >= self.min_size:
                faces.append(f)
        faces.sort(key=lambda f: f.box[0])  # left to right
        return faces

    def __call__(self, images: list[torch.Tensor]) -> list[list[Face]]:
        return [self.detect(im) for im in images]
