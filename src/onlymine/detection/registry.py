"""Detector names -> builders. The two differentiable detectors read ONNX files from a models folder (the
offline kit's ``models/``: ``--models-dir``, else ``$ONLYMINE_MODELS_DIR``, else ``../shared/kit/models``); the
black boxes come from pip packages."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onlymine.detection import centernet, retinaface
from onlymine.detection.base import Detector, DetectorError

OBJECT_DETECTORS = ("centernet", "yolov3-tiny")
FACE_DETECTORS = ("retinaface", "mtcnn", "blazeface", "haar", "nudenet")
DETECTORS = OBJECT_DETECTORS + FACE_DETECTORS


def default_models_dir() -> Path:
    return Path(os.environ.get("ONLYMINE_MODELS_DIR", Path("..") / "shared" / "kit" / "models"))


def _builders(models_dir: Path) -> dict[str, Callable[..., Detector]]:
    from onlymine.detection.blazeface import BlazeFace
    from onlymine.detection.haar import HaarFaces
    from onlymine.detection.mtcnn import MTCNNDetector
    from onlymine.detection.nudenet import NudeNet
    from onlymine.detection.yolo import YoloV3Tiny

    return {
        "centernet": lambda **kw: centernet.CenterNet(models_dir / centernet.FILE, **kw),
        "retinaface": lambda **kw: retinaface.RetinaFace(models_dir / retinaface.FILE, **kw),
        "yolov3-tiny": YoloV3Tiny,
        "nudenet": NudeNet,
        "mtcnn": MTCNNDetector,
        "blazeface": BlazeFace,
        "haar": HaarFaces,
    }


def build_detector(name: str, models_dir: str | Path | None = None, **options: Any) -> Detector:
    """Build one detector; raises :class:`DetectorError` with a one-line reason when it cannot run here."""
    builders = _builders(Path(models_dir) if models_dir else default_models_dir())
    if name not in builders:
        raise DetectorError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
    return builders[name](**options)


# Score from which a detection "counts" (survival, new false detections, pseudo ground truth for mAP): the
# value each model's own pipeline or its documentation uses (CenterNet 0.3 and YOLOv3-tiny 0.4: kit MODELS.md;
# RetinaFace 0.9 and MTCNN 0.9: common deployment values; BlazeFace 0.5: mediapipe's default; NudeNet 0.4;
# Haar has no score, every box counts).
THRESHOLDS = {"centernet": 0.3, "yolov3-tiny": 0.4, "retinaface": 0.9, "mtcnn": 0.9, "blazeface": 0.5,
              "haar": 0.5, "nudenet": 0.4}
