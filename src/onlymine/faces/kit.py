"""The offline kit's ONNX models as model specs: ``kit:NAME[:HEAD]``.

Every model in ``KIT/models`` (see its ``MODELS.md``) is usable two ways:

* white box: :func:`load_kit` converts the graph with onnx2torch into a :class:`~onlymine.models.Classifier`
  (the authorized model FMD differentiates through);
* black box: :func:`kit_session` runs the same file with onnxruntime (an unauthorized model, never
  differentiated).

All kit graphs take float32 NCHW RGB in [0,1] at a fixed size and do their own normalisation inside, so the
``ModelCfg`` has mean 0 / std 1 and ``crop_pct=None`` (the face crop is made by :mod:`onlymine.faces.align`).
A *head* picks which output becomes the logits: ``logits`` as is, probabilities as log-probabilities (argmax
unchanged), a sigmoid as two-class log-probabilities, an embedding as is (identity needs a gallery, see
:mod:`onlymine.faces.gallery`), detector outputs as image-level scores.

The kit folder comes from :func:`set_kit_dir` (the ``--kit`` flag), else ``$ONLYMINE_KIT``; it may be the kit
root (holding ``models/``) or the models folder itself. The product never requires it.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from onlymine.models.cfg import ModelCfg
from onlymine.models.errors import ModelError

log = logging.getLogger(__name__)

ENV = "ONLYMINE_KIT"
# onnx2torch's Slice converter indexes with a list on every forward pass; torch warns each time (harmless here)
warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing",
                        category=UserWarning, module="onnx2torch")
_KIT_DIR: Path | None = None


@dataclass(frozen=True)
class Head:
    """How one output of a kit graph becomes (N, K) logits."""

    output: str  # ONNX output name
    kind: str  # logits | probs | sigmoid | embedding | heatmap_max | face_max
    class_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class KitModel:
    """One kit model: file, fixed input size, task, heads, and the face crop its original pipeline uses."""

    file: str
    input_size: tuple[int, int]
    task: str  # identity | emotion | attribute | detector
    heads: dict[str, Head]
    default_head: str
    crop: str  # an alignment rule of onlymine.faces.align.CROPS
    description: str
    threshold: float | None = None  # identity: same person if distance below (for reference)
    extra: dict[str, Any] = field(default_factory=dict)


EXPRESSIONS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
FER_EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
MALE_FEMALE = ("male", "female")

KIT_MODELS: dict[str, KitModel] = {
    "faceapi_recognition": KitModel(
        "faceapi_recognition.onnx", (150, 150), "identity",
        {"embedding": Head("embedding", "embedding")}, "embedding", "dlib150",
        "face-api.js / dlib ResNet face recognition, 128-D", threshold=0.6),
    "facenet_casia_inception_resnet_v1": KitModel(
        "facenet_casia_inception_resnet_v1.onnx", (160, 160), "identity",
        {"embedding": Head("embedding", "embedding")}, "embedding", "mtcnn160",
        "FaceNet Inception-ResNet-v1 (CASIA-WebFace), 512-D", threshold=1.1),
    "human_faceres": KitModel(
        "human_faceres.onnx", (224, 224), "identity",
        {"embedding": Head("descriptor", "embedding"),
         "gender": Head("gender_male_prob", "sigmoid", MALE_FEMALE),
         "age": Head("age_probs", "probs", tuple(str(a) for a in range(100)))},
        "embedding", "loose", "HSE FaceRec (Human faceres): 1024-D descriptor + gender + age"),
    "faceapi_expression": KitModel(
        "faceapi_expression.onnx", (112, 112), "emotion",
        {"logits": Head("logits", "logits", EXPRESSIONS)}, "logits", "loose",
        "face-api.js expression net, 7 classes"),
    "human_emotion": KitModel(
        "human_emotion.onnx", (64, 64), "emotion",
        {"probs": Head("probs", "probs", FER_EMOTIONS)}, "probs", "loose",
        "mini-Xception emotion (FER2013, Human), 7 classes"),
    "faceapi_age_gender": KitModel(
        "faceapi_age_gender.onnx", (112, 112), "attribute",
        {"gender": Head("gender_probs", "probs", MALE_FEMALE), "age": Head("age", "regression")},
        "gender", "loose", "face-api.js age (years) + gender"),
    "human_gear": KitModel(
        "human_gear.onnx", (198, 198), "attribute",
        {"race": Head("race_probs", "probs", ("white", "black", "asian", "indian", "other")),
         "gender": Head("gender_probs", "probs", MALE_FEMALE),
         "age": Head("age_bin_probs", "probs", ("15", "23", "28", "35.5", "45.5", "55.5", "65"))},
        "race", "gear", "GEAR race (5) + gender + age bins (Human)"),
    "retinaface_mobilenetv2": KitModel(
        "retinaface_mobilenetv2.onnx", (640, 640), "detector",
        {"face": Head("class_logits", "face_max", ("no face", "face"))}, "face", "letterbox",
        "RetinaFace MobileNetV2 face detector (image-level 'face present' score here)"),
    "centernet_mobilenetv3_coco": KitModel(
        "centernet_mobilenetv3_coco.onnx", (512, 512), "detector",
        {"tags": Head("heatmap", "heatmap_max", None)}, "tags", "stretch",
        "CenterNet MobileNetV3 COCO detector (image-level per-class peak score here)"),
}


# ------------------------------------------------------------------------------------------- kit folder
def set_kit_dir(path: str | os.PathLike[str] | None) -> None:
    """Use this kit folder (root or its ``models/``) for ``kit:`` specs; ``None`` falls back to $ONLYMINE_KIT."""
    global _KIT_DIR
    _KIT_DIR = Path(path).expanduser() if path else None


def kit_dir(required: bool = True) -> Path | None:
    """The kit's models folder, or ``None`` (``required=False``) when no kit is configured."""
    root = _KIT_DIR or (Path(os.environ[ENV]).expanduser() if os.environ.get(ENV) else None)
    if root is None:
        if required:
            raise ModelError(f"kit: specs need the offline kit: pass --kit DIR or set {ENV}=DIR")
        return None
    models = root / "models" if (root / "models").is_dir() else root
    if not models.is_dir():
        if required:
            raise ModelError(f"kit folder {root} does not exist")
        return None
    return models


def kit_model(name: str) -> KitModel:
    if name not in KIT_MODELS:
        raise ModelError(f"kit has no model {name!r}; known: {sorted(KIT_MODELS)}")
    return KIT_MODELS[name]


def kit_path(name: str) -> Path:
    path = kit_dir() / kit_model(name).file  # type: ignore[operator]
    if not path.is_file():
        raise ModelError(f"kit:{name}: model file {path} is missing")
    return path


def kit_available(name: str, variant: str | None = None) -> tuple[bool, str]:
    if name not in KIT_MODELS:
        return False, f"unknown kit model {name!r}"
    models = kit_dir(required=False)
    if models is None:
        return False, f"no kit configured (--kit DIR or {ENV})"
    path = models / KIT_MODELS[name].file
    return path.is_file(), str(path)


# ------------------------------------------------------------------------------------------ white box
@functools.lru_cache(maxsize=16)
def _converted(path: str) -> nn.Module:
    import onnx
    from onnx2torch import convert

    try:
        return convert(onnx.load(path)).eval()
    except Exception as e:  # onnx raises several unrelated types for bad files
        raise ModelError(f"{path}: cannot convert ONNX model ({type(e).__name__}: {e})") from e


@functools.lru_cache(maxsize=16)
def output_names(path: str) -> tuple[str, ...]:
    import onnx

    return tuple(o.name for o in onnx.load(path, load_external_data=False).graph.output)


def head_to_logits(out: torch.Tensor, kind: str) -> torch.Tensor:
    """Map one raw output to (N, K) logits (argmax preserved)."""
    if kind in ("logits", "embedding"):
        return out
    if kind == "probs":
        return out.clamp_min(1e-12).log()
    if kind == "sigmoid":  # (N, 1) probability of the first class name
        p = out.reshape(-1, 1).clamp(1e-7, 1 - 1e-7)
        return torch.cat([p.log(), (1 - p).log()], 1)
    if kind == "regression":
        return out.reshape(len(out), -1)
    if kind == "heatmap_max":  # NHWC sigmoid heatmap -> per-class peak as a logit
        p = out.flatten(1, 2).amax(1).clamp(1e-7, 1 - 1e-7)
        return (p / (1 - p)).log()
    if kind == "face_max":  # (N, anchors, 2) [bg, face] logits -> [0, best face margin]
        margin = (out[..., 1] - out[..., 0]).amax(1, keepdim=True)
        return torch.cat([torch.zeros_like(margin), margin], 1)
    raise ValueError(f"unknown head kind {kind!r}")


class KitNet(nn.Module):
    """An onnx2torch graph plus the head that turns the chosen output into logits.

    Feature taps are ``graph.<onnx node name>`` (e.g. ``graph.net/Conv_16``).
    """

    def __init__(self, graph: nn.Module, outputs: tuple[str, ...], head: Head) -> None:
        super().__init__()
        self.graph = graph
        self.index = outputs.index(head.output)
        self.kind = head.kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.graph(x)
        if isinstance(out, (tuple, list)):
            out = out[self.index]
        return head_to_logits(out, self.kind)


def load_kit(name: str, variant: str | None, spec: str) -> Any:
    """``kit:NAME[:HEAD]`` -> a :class:`~onlymine.faces.classifier.FaceClassifier`."""
    from onlymine.faces.classifier import FaceClassifier

    km = kit_model(name)
    head_name = variant or km.default_head
    if head_name not in km.heads:
        raise ModelError(f"{spec}: kit:{name} has no head {head_name!r}; known: {sorted(km.heads)}")
    head = km.heads[head_name]
    path = str(kit_path(name))
    net = KitNet(_converted(path), output_names(path), head)
    cfg = ModelCfg(
        name=spec, input_size=km.input_size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
        interpolation="bilinear", crop_pct=None, class_names=head.class_names, weights=path,
        extra={"kit": name, "task": km.task, "head": head_name, "crop": km.crop,
               "embedding": head.kind == "embedding", **km.extra})
    return FaceClassifier(net, cfg)


# ------------------------------------------------------------------------------------------ black box
@functools.lru_cache(maxsize=16)
def _session(path: str) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, min(4, os.cpu_count() or 1))
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


class KitSession:
    """onnxruntime session of a kit model: a black box that takes (N, 3, H, W) [0,1] chips."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.model = kit_model(name)
        self.path = str(kit_path(name))
        self.session = _session(self.path)
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, chips: torch.Tensor | np.ndarray, batch_size: int = 16) -> dict[str, np.ndarray]:
        x = chips.detach().cpu().numpy() if isinstance(chips, torch.Tensor) else np.asarray(chips)
        x = np.ascontiguousarray(x, dtype=np.float32)
        parts: list[list[np.ndarray]] = []
        for i in range(0, len(x), batch_size):
            parts.append(self.session.run(self.outputs, {"image": x[i : i + batch_size]}))
        return {n: np.concatenate([p[k] for p in parts]) for k, n in enumerate(self.outputs)}

    def logits(self, chips: torch.Tensor | np.ndarray, head: str | None = None) -> np.ndarray:
        h = self.model.heads[head or self.model.default_head]
        out = torch.from_numpy(self.run(chips)[h.output])
        return head_to_logits(out, h.kind).numpy()


def kit_session(name: str) -> KitSession:
    return KitSession(name)
