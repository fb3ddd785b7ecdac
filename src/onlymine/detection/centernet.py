"""CenterNet MobileNetV3 (COCO-80, from the Human library) as a differentiable detector.

Zhou et al., "Objects as Points", 2019. The ONNX graph (kit ``centernet_mobilenetv3_coco.onnx``) takes a
512x512 stretched image and returns NHWC ``heatmap`` (sigmoid) and ``wh`` (left, top, right, bottom distances
in input pixels); decoding follows the original graph: 3x3 max-pool peaks, top-100 over (y, x, class),
boxes at stride 4. Per-class NMS (torchvision.ops) is added on top.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from onlymine.detection.base import DetectorError, DifferentiableDetector, load_onnx_module
from onlymine.detection.coco import COCO80
from onlymine.detection.detections import Detections, nms_detections

FILE = "centernet_mobilenetv3_coco.onnx"


class CenterNet(DifferentiableDetector):
    """Args:
    path: the ONNX file.
    min_score: peaks below this are dropped (0.2 keeps weak detections for mAP; judges threshold later).
    iou: per-class NMS IoU.
    top_k: peaks kept before thresholding (100 in the original graph).
    """

    name = "centernet"
    task = "object"
    names = COCO80
    size = 512
    stride = 4

    def __init__(self, path: str | Path, min_score: float = 0.2, iou: float = 0.5, top_k: int = 100) -> None:
        super().__init__()
        if not Path(path).is_file():
            raise DetectorError(f"{path}: CenterNet ONNX model not found")
        self.net = load_onnx_module(str(path))
        self.min_score, self.iou, self.top_k = min_score, iou, top_k

    def prepare(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """Stretch each image to 512x512 (bilinear, antialiased), differentiably."""
        return torch.cat([F.interpolate(im[None], size=(self.size, self.size), mode="bilinear",
                                        align_corners=False, antialias=True) for im in images]).clamp(0, 1)

    def forward(self, images: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        heatmap, wh = self.net(self.prepare(images))
        return {"heatmap": heatmap, "wh": wh}

    def decode(self, heads: dict[str, torch.Tensor], sizes: Sequence[tuple[int, int]]) -> list[Detections]:
        hm, wh = heads["heatmap"].detach(), heads["wh"].detach()  # N x 128 x 128 x C (NHWC)
        n, gh, gw, c = hm.shape
        pooled = F.max_pool2d(hm.permute(0, 3, 1, 2), 3, stride=1, padding=1).permute(0, 2, 3, 1)
        peaks = torch.where(hm == pooled, hm, torch.zeros_like(hm)).reshape(n, -1)
        scores, idx = peaks.topk(self.top_k, dim=1)
        out = []
        for i, (h, w) in enumerate(sizes):
            keep = scores[i] >= self.min_score
            s, flat = scores[i][keep], idx[i][keep]
            cls, cell = flat % c, flat // c
            x, y = (cell % gw).float() * self.stride, (cell // gw).float() * self.stride
            ltrb = wh[i].reshape(-1, 4)[cell]
            boxes = torch.stack([x - ltrb[:, 0], y - ltrb[:, 1], x + ltrb[:, 2], y + ltrb[:, 3]], dim=1)
            boxes = boxes * torch.tensor([w / self.size, h / self.size] * 2, device=boxes.device)
            out.append(nms_detections(boxes.cpu(), s.cpu(), cls.cpu(), self.iou, (h, w), self.names))
        return out
