"""MediaPipe BlazeFace (mediapipe 0.10.14, ``solutions.face_detection``) as a black-box face detector.

Bazarevsky et al., "BlazeFace: Sub-millisecond Neural Face Detection on Mobile GPUs", 2019. The TFLite
models ship inside the mediapipe wheel (``mediapipe/modules/face_detection/*.tflite``), so it runs offline.
``model_selection=1`` is the full-range model (faces up to ~5 m; better on group photos), 0 the short-range.

mediapipe 0.10.14 was built against protobuf 4 and calls ``SymbolDatabase.GetPrototype``, which protobuf >= 5
removed (onnx here needs protobuf >= 6). :func:`protobuf_compat` adds that one method back (on
``MessageFactory`` and ``SymbolDatabase``) as
``message_factory.GetMessageClass`` -- the documented replacement -- before mediapipe is imported.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from onlymine.detection.base import DetectorError
from onlymine.detection.detections import Detections


def protobuf_compat() -> None:
    """Give protobuf >= 5 back the ``GetPrototype`` that mediapipe 0.10.14's packet getters call."""
    from google.protobuf import message_factory, symbol_database

    for cls in (message_factory.MessageFactory, symbol_database.SymbolDatabase):
        if not hasattr(cls, "GetPrototype"):
            cls.GetPrototype = lambda self, descriptor: message_factory.GetMessageClass(descriptor)  # type: ignore[attr-defined]


class BlazeFace:
    """Args:
    min_score: ``min_detection_confidence``.
    model_selection: 0 short range, 1 full range.
    """

    name = "blazeface"
    task = "face"
    names: Sequence[str] = ("face",)

    def __init__(self, min_score: float = 0.5, model_selection: int = 1) -> None:
        try:
            protobuf_compat()
            from mediapipe.python.solutions import face_detection
        except ImportError as e:
            raise DetectorError(f"mediapipe is not importable ({e}); install mediapipe==0.10.14 --no-deps") from e
        self.detector = face_detection.FaceDetection(model_selection=model_selection,
                                                     min_detection_confidence=min_score)

    def detect(self, images: Sequence[torch.Tensor]) -> list[Detections]:
        from onlymine.io import to_uint8

        out = []
        for im in images:
            rgb = to_uint8(im.detach().cpu())
            h, w = rgb.shape[:2]
            found = self.detector.process(rgb).detections or []
            boxes, scores = [], []
            for d in found:
                b = d.location_data.relative_bounding_box
                boxes.append([b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h])
                scores.append(float(d.score[0]))
            bx = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
            bx[:, 0::2], bx[:, 1::2] = bx[:, 0::2].clamp(0, w), bx[:, 1::2].clamp(0, h)
            out.append(Detections(bx, scores, torch.zeros(len(boxes), dtype=torch.int64), self.names))
        return out

    def close(self) -> None:
        self.detector.close()
