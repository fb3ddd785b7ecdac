"""``timm:NAME[:random]``: any timm classifier (``NAME`` may carry a pretrained tag: ``resnet18.tv_in1k``).

``timm.create_model(NAME, pretrained=True)``: the weights come from the Hugging Face cache, downloaded by timm
when online (weights already in the cache are loaded from the file, with no network access). ``random`` builds
an untrained model, for tests only; its config says ``pretrained=False``.

The :class:`ModelCfg` is timm's own pretrained config (``timm.data.resolve_data_config``): input size,
interpolation, mean/std, ``crop_pct``, and the resize timm derives from it, ``floor(size / crop_pct)``: of the
shorter side for ``crop_mode="center"``, of both sides for ``"squash"`` (``ModelCfg.resize_size=(h, w)``).
The published transform is timm's eval transform itself (``timm.data.create_transform``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from onlymine.models.cfg import ModelCfg
from onlymine.models.classifier import Classifier
from onlymine.models.errors import ModelError
from onlymine.models.pipeline import INTERPOLATIONS
from onlymine.models.registry import register_source

KNOWN_SPECS = {
    "timm:resnet50": "ResNet-50 (timm a1_in1k), ImageNet (Hugging Face cache; needs internet once)",
    "timm:mobilenetv3_large_100": "MobileNetV3-Large, ImageNet (Hugging Face cache; needs internet once)",
    "timm:efficientnet_b0": "EfficientNet-B0, ImageNet (Hugging Face cache; needs internet once)",
    "timm:convnext_tiny": "ConvNeXt-T, ImageNet (Hugging Face cache; needs internet once)",
    "timm:vit_base_patch16_224": "ViT-B/16 (augreg in21k ft in1k), ImageNet (Hugging Face cache; needs internet once)",
}
DEFAULT_CROP_PCT = 0.875  # timm's, when a config has none


def _timm(spec: str) -> Any:
    try:
        import timm
    except ImportError as e:
        raise ModelError(f"{spec}: pip install timm") from e
    return timm


def _pretrained_cfg(timm: Any, name: str, spec: str) -> Any:
    if not timm.is_model(name):
        raise ModelError(f"{spec}: timm has no model named {name!r} (see timm.list_models())")
    return timm.models.get_pretrained_cfg(name)


def _weights_source(pcfg: Any) -> str | None:
    """Where timm would fetch the pretrained weights of ``pcfg`` from (a hub id or URL), or ``None``."""
    if pcfg is None:
        return None
    return pcfg.file or pcfg.hf_hub_id or pcfg.url or None


def cached_weights(pcfg: Any) -> Path | None:
    """The local file timm would load ``pcfg``'s weights from, if it is here (no download): its Hugging Face
    hub cache entry when it has a hub id (timm then uses the hub), else the torch hub cache file of its URL."""
    if pcfg is None:
        return None
    if pcfg.file:
        return Path(pcfg.file) if Path(pcfg.file).is_file() else None
    if pcfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = pcfg.hf_hub_id.partition("@")
        for filename in [pcfg.hf_hub_filename] if pcfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]:
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str):
                return Path(found)
        return None
    if pcfg.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / pcfg.url.rsplit("/", 1)[-1]
        return path if path.is_file() else None
    return None


def timm_available(name: str, variant: str | None) -> tuple[bool, str]:
    try:
        pcfg = _pretrained_cfg(_timm(f"timm:{name}"), name, f"timm:{name}")
    except ModelError as e:
        return False, str(e)
    found = cached_weights(pcfg)
    if found is not None:
        return True, str(found)
    where = _weights_source(pcfg)
    return False, f"{where} (not cached; downloads when online)" if where else "timm has no pretrained weights for it"


def _hub_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:
        return "the Hugging Face cache"


def _class_names(net: Any) -> tuple[str, ...] | None:
    """timm's own ImageNet class names (from the files timm ships) for the model's label set, else torchvision's
    ImageNet names for a 1000-class model, else ``None``."""
    num = int(getattr(net, "num_classes", 0) or 0)
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(net)
        if subset:
            info = ImageNetInfo(subset)
            if info.num_classes() == num:
                return tuple(info.index_to_description(i) for i in range(num))
    except (ImportError, OSError, ValueError, KeyError, AssertionError):
        pass
    if num == 1000:
        from onlymine.models.sources.torchvision import imagenet_class_names

        return imagenet_class_names()
    return None


def timm_model_cfg(spec: str, data: dict[str, Any], class_names: tuple[str, ...] | None, pretrained: bool,
                   weights: str) -> ModelCfg:
    """timm's data config (``resolve_data_config``) as a :class:`ModelCfg`; modes the differentiable pipeline
    cannot reproduce raise :class:`ModelError`."""
    channels, height, width = (int(v) for v in data["input_size"])
    if channels != 3:
        raise ModelError(f"{spec}: the model takes {channels}-channel input; onlymine feeds RGB")
    interpolation = data.get("interpolation") or "bilinear"
    if interpolation not in INTERPOLATIONS:
        raise ModelError(f"{spec}: timm's {interpolation!r} interpolation is not supported; onlymine's "
                         f"differentiable pipeline reproduces {', '.join(INTERPOLATIONS)}")
    crop_pct = float(data.get("crop_pct") or DEFAULT_CROP_PCT)
    mode = data.get("crop_mode") or "center"
    if data.get("crop_border_pixels"):
        raise ModelError(f"{spec}: timm's crop_border_pixels is not supported")
    resize: int | tuple[int, int]
    if mode == "center":  # timm: Resize(shorter side) -> CenterCrop, for square input sizes
        if height != width:
            raise ModelError(f"{spec}: timm's 'center' crop of a non-square input ({height}x{width}) resizes "
                             "with ResizeKeepRatio, which onlymine's pipeline does not reproduce")
        resize = math.floor(height / crop_pct)
    elif mode == "squash":  # timm: Resize((h, w)) -> CenterCrop, aspect ratio not kept
        resize = (math.floor(height / crop_pct), math.floor(width / crop_pct))
    else:
        raise ModelError(f"{spec}: timm crop_mode {mode!r} is not supported (only 'center' and 'squash')")
    return ModelCfg(
        name=spec,
        input_size=(height, width),
        mean=tuple(float(v) for v in data["mean"]),
        std=tuple(float(v) for v in data["std"]),
        interpolation=interpolation,
        crop_pct=crop_pct,
        resize_size=resize,
        class_names=class_names,
        pretrained=pretrained,
        weights=weights,
    )


@register_source("timm", available=timm_available, known_specs=KNOWN_SPECS)
def load_timm(name: str, variant: str | None, spec: str) -> Classifier:
    if variant not in (None, "random"):
        raise ModelError(f"{spec}: timm specs take no variant but ':random'; choose pretrained weights with a "
                         f"tag in the name (timm:{name}.TAG, see timm.list_pretrained('{name}*'))")
    timm = _timm(spec)
    pcfg = _pretrained_cfg(timm, name, spec)
    pretrained = variant != "random"
    kwargs: dict[str, Any] = {}
    weights = "random init (NOT pretrained)"
    if pretrained:
        where = _weights_source(pcfg)
        if where is None:
            raise ModelError(f"{spec}: timm has no pretrained weights for {name!r}; use '{spec}:random' for an "
                             "untrained model (tests only)")
        found = cached_weights(pcfg)
        if found is not None:  # load the cached file itself: no hub request (which retries for a minute offline)
            kwargs["pretrained_cfg_overlay"] = {"file": str(found)}
        weights = f"timm {pcfg.hf_hub_id or name} ({found.name if found else where})"
    try:
        net = timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError, ValueError) as e:  # the hub's LocalEntryNotFoundError and URLError are OSErrors
        if not pretrained:
            raise ModelError(f"{spec}: timm cannot build {name!r} ({type(e).__name__}: {e})") from e
        raise ModelError(
            f"{spec}: pretrained weights {_weights_source(pcfg)} are not in the Hugging Face cache "
            f"({_hub_cache_dir()}) and could not be downloaded ({type(e).__name__}). Connect to the internet "
            f"once, or use '{spec}:random' for an untrained model (tests only)."
        ) from e
    if not getattr(net, "num_classes", 1):
        raise ModelError(f"{spec}: the model has no classifier head (num_classes=0); choose a tag with one")
    data = timm.data.resolve_data_config({}, model=net)
    cfg = timm_model_cfg(spec, data, _class_names(net), pretrained, weights)
    return Classifier(net, cfg, published=timm.data.create_transform(**data))
