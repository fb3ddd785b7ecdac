"""What every detector offers: ``detect(images) -> list[Detections]`` on full-resolution [0,1] RGB tensors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from onlymine.detection.detections import Detections


class DetectorError(RuntimeError):
    """A detector cannot be built here (missing package or model file); the message says which and why."""


@runtime_checkable
class Detector(Protocol):
    """A detector, white or black box.

    Attributes:
        name: short id (``centernet``, ``retinaface``, ``yolov3-tiny``, ...).
        task: ``object`` (COCO classes) or ``face``.
        names: class names indexed by ``Detections.labels``.
    """

    name: str
    task: str
    names: Sequence[str]

    def detect(self, images: Sequence[torch.Tensor]) -> list[Detections]: ...


class DifferentiableDetector(nn.Module):
    """A torch detector: ``forward`` maps a list of [0,1] images to raw heads (differentiable w.r.t. the
    pixels), ``decode`` turns those heads into per-image :class:`Detections` in original pixels (top-k /
    thresholds / NMS, not differentiable). ``detect`` does both without gradients, in batches."""

    name = "detector"
    task = "object"
    names: Sequence[str] = ()
    batch_size = 4

    def forward(self, images: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def decode(self, heads: dict[str, torch.Tensor], sizes: Sequence[tuple[int, int]]) -> list[Detections]:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        return torch.device("cpu")

    @torch.no_grad()
    def detect(self, images: Sequence[torch.Tensor]) -> list[Detections]:
        out: list[Detections] = []
        for i in range(0, len(images), self.batch_size):
            chunk = [im.to(self.device, torch.float32) for im in images[i : i + self.batch_size]]
            out += self.decode(self(chunk), [tuple(im.shape[-2:]) for im in chunk])
        return out


def load_onnx_module(path: str) -> nn.Module:
    """An ONNX file as an eval-mode, frozen torch module (plain ``onnx2torch.convert``)."""
    import onnx
    from onnx2torch import convert

    try:
        net = convert(onnx.load(path)).eval()
    except (OSError, ValueError) as e:
        raise DetectorError(f"{path}: cannot load ONNX model ({e})") from e
    for p in net.parameters():
        p.requires_grad_(False)
    return net
