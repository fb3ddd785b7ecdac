"""MTCNN face detector (facenet-pytorch's port, weights shipped in the wheel) as a black box.

Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded Convolutional Networks", 2016.
Uses ``MTCNN.detect`` (image pyramid, P/R/O-Net, the package's own NMS) on the uint8 image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from onlymine.detection.base import DetectorError
from onlymine.detection.detections import Detections, limit_side


class MTCNNDetector:
    """Args:
    min_score: drop faces below this probability.
    min_face_size: smallest face side in pixels the pyramid looks for (package default 20).
    max_side: images with a longer side are downscaled first (the pyramid on a 2560-px photo takes ~30 s on
        2 cores); boxes are mapped back to original pixels. ``None``: full resolution.
    """

    name = "mtcnn"
    task = "face"
    names: Sequence[str] = ("face",)

    def __init__(self, min_score: float = 0.5, min_face_size: int = 20, max_side: int | None = 1280) -> None:
        try:
            from facenet_pytorch import MTCNN
        except ImportError as e:
            raise DetectorError("facenet-pytorch is not installed (pip install --no-deps facenet-pytorch)") from e
        self.mtcnn = MTCNN(keep_all=True, min_face_size=min_face_size, device="cpu").eval()
        self.min_score, self.max_side = min_score, max_side

    @torch.no_grad()
    def detect(self, images: Sequence[torch.Tensor]) -> list[Detections]:
        from onlymine.io import to_uint8

        out = []
        for im in images:
            small, scale = limit_side(im.detach().cpu(), self.max_side)
            boxes, probs = self.mtcnn.detect(to_uint8(small))
            if boxes is None:
                out.append(Detections.empty(self.names))
                continue
            # facenet-pytorch returns object arrays under numpy 2; make them plain floats
            boxes, probs = np.asarray(boxes, dtype=np.float32), np.asarray(probs, dtype=np.float32)
            keep = probs >= self.min_score
            out.append(Detections(torch.from_numpy(boxes[keep]) / scale, torch.from_numpy(probs[keep]),
                                  torch.zeros(int(keep.sum()), dtype=torch.int64), self.names))
        return out
