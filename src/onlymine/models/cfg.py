"""Per-model preprocessing record, in the spirit of timm's ``PretrainedCfg``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from onlymine.models.pipeline import Pipeline

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelCfg:
    """How a model wants its input, and what its outputs mean.

    Attributes:
        name: the model spec this config belongs to (e.g. ``torchvision:mobilenet_v2``).
        input_size: (H, W) the network runs at.
        mean, std: per-channel normalisation applied to [0,1] RGB inside the wrapper.
        interpolation: ``bilinear`` | ``bicubic`` | ``nearest`` (Pillow's filters).
        crop_pct: centre crop as a fraction of the resized shorter side (torchvision: 224/256), or of each
            side when ``resize_size`` is ``(h, w)``; ``None`` stretches the whole image to ``input_size`` (no
            crop, aspect ratio not kept).
        resize_size: what the photo is resized to before the centre crop of ``input_size``: an int is the
            shorter side (torchvision's ``resize_size``, aspect kept); ``(h, w)`` resizes both sides to it,
            aspect not kept (timm's ``crop_mode="squash"``); ``None``: the shorter side
            ``floor(min(input_size) / crop_pct)``, as timm derives it. Unused when ``crop_pct`` is ``None``.
        class_names: names of the logits, if known.
        pretrained: whether real trained weights are loaded (random-init models say ``False`` everywhere).
        weights: where the weights came from (file, package, hub cache), for provenance.
    """

    name: str
    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    crop_pct: float | None = 0.875
    class_names: tuple[str, ...] | None = field(default=None, repr=False)
    pretrained: bool = True
    weights: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)
    resize_size: int | tuple[int, int] | None = None

    def pipeline(self, quantize: bool = True) -> Pipeline:
        """The model's published pipeline: resize (the shorter side, or both sides), centre crop (or stretch),
        normalise."""
        if self.crop_pct is None:
            return Pipeline(tuple(self.input_size), None, self.interpolation, self.mean, self.std, quantize)
        resize: int | tuple[int, int] = self.resize_size or int(math.floor(min(self.input_size) / self.crop_pct + 1e-6))
        if not isinstance(resize, int):  # (h, w): both sides (squash)
            if len(resize) != 2:
                raise ValueError(f"{self.name}: resize_size must be an int or (h, w), not {self.resize_size!r}")
            resize = (int(resize[0]), int(resize[1]))
        return Pipeline(resize, tuple(self.input_size), self.interpolation, self.mean, self.std, quantize)
