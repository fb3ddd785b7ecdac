"""RetinaFace MobileNetV2 (WIDER FACE, from the ``retinaface`` package) as a differentiable face detector.

Deng et al., "RetinaFace: Single-stage Dense Face Localisation in the Wild", CVPR 2020. The ONNX graph (kit
``retinaface_mobilenetv2.onnx``) takes a 640x640 letterboxed image (long side resized to 640, zero padding
right/bottom, as the package does) and returns raw heads plus ``detections``: boxes decoded from the priors,
normalised to the 640 input, with the face score in the last column. NMS (IoU 0.4, as the package) is
torchvision's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from onlymine.detection.base import DetectorError, DifferentiableDetector, load_onnx_module
from onlymine.detection.detections import Detections, nms_detections

FILE = "retinaface_mobilenetv2.onnx"


class RetinaFace(DifferentiableDetector):
    """Args:
    path: the ONNX file.
    min_score: face score below which candidates are dropped before NMS.
    iou: NMS IoU (0.4 in the package).
    """

    name = "retinaface"
    task = "face"
    names = ("face",)
    size = 640

    def __init__(self, path: str | Path, min_score: float = 0.5, iou: float = 0.4) -> None:
        super().__init__()
        if not Path(path).is_file():
            raise DetectorError(f"{path}: RetinaFace ONNX model not found")
        self.net = load_onnx_module(str(path))
        self.min_score, self.iou = min_score, iou

    def scale(self, h: int, w: int) -> float:
        return self.size / max(h, w)

    def prepare(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """Letterbox each image into 640x640 (bilinear, antialiased), differentiably."""
        batch = []
        for im in images:
            h, w = im.shape[-2:]
            s = self.scale(h, w)
            nh, nw = max(1, round(h * s)), max(1, round(w * s))
            r = F.interpolate(im[None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
            batch.append(F.pad(r, (0, self.size - nw, 0, self.size - nh)))
        return torch.cat(batch).clamp(0, 1)

    def forward(self, images: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        bbox, landmarks, logits, score, dets = self.net(self.prepare(images))
        return {"bbox_deltas": bbox, "landmark_deltas": landmarks, "class_logits": logits,
                "face_score": score, "detections": dets}

    def decode(self, heads: dict[str, torch.Tensor], sizes: Sequence[tuple[int, int]]) -> list[Detections]:
        dets = heads["detections"].detach().cpu()
        out = []
        for i, (h, w) in enumerate(sizes):
            d = dets[i][dets[i][:, 15] >= self.min_score]
            boxes = d[:, :4] * (self.size / self.scale(h, w))
            out.append(nms_detections(boxes, d[:, 15], torch.zeros(len(d), dtype=torch.int64), self.iou,
                                      (h, w), self.names))
        return out
