"""The one wrapper every authorized model goes through: [0,1] RGB in, logits and named feature maps out."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from onlymine.models.cfg import ModelCfg
from onlymine.models.taps import FeatureTaps, StopForward


class Classifier(nn.Module):
    """A differentiable classifier that owns its preprocessing (like foolbox's model wrapper).

    Attacks only ever see this interface: inputs are RGB in [0,1] of any size (an (N, 3, H, W) tensor, or a
    list of (3, H_i, W_i) tensors for photos of different sizes); resizing, cropping and mean/std happen
    inside, differentiably, so an L-inf budget is always in plain pixel/255 units.

    The model reads photos through two copies of one pipeline (:mod:`onlymine.models.pipeline`):
    :meth:`preprocess`, differentiable, for the attack, and :attr:`published`, the transform the model's
    publisher declares (torchvision's ``weights.transforms()``), on PIL images, for the verdicts that count:
    the clean label the attack defends and the verification of every saved file (:meth:`predict_published`).

    Args:
        net: the network, taking the normalised (N, 3, h, w) batch and returning (N, K) logits.
        cfg: its :class:`ModelCfg` (input size, mean/std, interpolation, crop, class names).
        published: the published transform (``PIL.Image -> (3, h, w)``); default: built from ``cfg``.

    Example:
        >>> clf = load_model("torchvision:mobilenet_v2")
        >>> logits, feats = clf.forward_features(images, ["features.7"])
    """

    quantize = True  # the model reads 8-bit images (Pillow rounds them): see Pipeline.quantize

    def __init__(self, net: nn.Module, cfg: ModelCfg, published: Callable[[Any], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.net = net.eval()
        self.cfg = cfg
        self._published = published
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.taps = FeatureTaps(self.net)
        self._stages: list[str] | None = None
        # execution options, set by onlymine.models.fast.fast_classifier (same function, faster)
        self.channels_last = False
        self.amp_dtype: torch.dtype | None = None

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def device(self) -> torch.device:
        for t in self.net.parameters():
            return t.device
        for t in self.net.buffers():
            return t.device
        return torch.device("cpu")

    def preprocess(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """The differentiable copy of the published pipeline: normalised (N, 3, h, w) batch."""
        return self.cfg.pipeline(self.quantize).apply(images)

    @property
    def published(self) -> Callable[[Any], torch.Tensor]:
        """The published transform, ``PIL.Image -> (3, h, w)`` normalised tensor."""
        if self._published is None:
            self._published = self.cfg.pipeline(self.quantize).reference()
        return self._published

    @published.setter
    def published(self, transform: Callable[[Any], torch.Tensor] | None) -> None:
        self._published = transform

    @torch.no_grad()
    def published_logits(self, images: Sequence[Any], batch_size: int = 16) -> torch.Tensor:
        """Logits (N, K) of PIL images read through :attr:`published` (fp32 unless this is a fast copy)."""
        out = []
        for i in range(0, len(images), batch_size):
            batch = torch.stack([self.published(im) for im in images[i : i + batch_size]]).to(self.device)
            out.append(self.run_net(batch).float())
        return torch.cat(out) if out else torch.zeros(0, 0)

    def predict_published(self, images: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(top-1 class, its softmax confidence) per PIL image, through the published transform."""
        conf, cls = self.published_logits(images).softmax(-1).max(-1)
        return cls, conf

    def forward(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits (N, K) for [0,1] images."""
        return self.run_net(self.preprocess(images))

    def run_net(self, x: torch.Tensor) -> torch.Tensor:
        """The network on a preprocessed batch, in this wrapper's memory layout and autocast precision."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.amp_dtype is None:
            return self.net(x)
        with torch.autocast(x.device.type, dtype=self.amp_dtype):
            return self.net(x).float()

    def run_features(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """The named feature maps of a preprocessed batch; the network stops after the deepest of them (a
        distortion term that needs no logits skips the rest of the forward and backward pass)."""
        with self.taps.capture(layers, stop=True) as feats, contextlib.suppress(StopForward):
            self.run_net(x)
        return dict(feats)

    def forward_features(
        self, images: torch.Tensor | Sequence[torch.Tensor], layers: Sequence[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and the named intermediate feature maps, in one forward pass."""
        with self.taps.capture(layers) as feats:
            logits = self.run_net(self.preprocess(images))
        return logits, dict(feats)

    @torch.no_grad()
    def predict(self, images: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(top-1 class, its softmax confidence) per image."""
        probs = self.forward(images).float().softmax(-1)
        conf, cls = probs.max(-1)
        return cls, conf

    def layers(self) -> list[str]:
        """Names of the tappable layers (module names, in forward order where known)."""
        return self.taps.names()

    def stages(self) -> list[str]:
        """The main feature stages: the children of the container whose feature-map outputs span the most
        spatial scales (then: the most of them), keeping only the sub-blocks when there are at least three
        (``features.0..18`` for MobileNetV2, ``_blocks.0..15`` for EfficientNet-Lite, ``layer1..4`` for ResNet,
        ``features.denseblock1..4`` and transitions for DenseNet, ``encoder.layers.*`` for ViT)."""
        if self._stages is None:
            shapes = self.layer_shapes()
            modules = dict(self.net.named_modules())
            by_parent: dict[str, list[str]] = {}
            for name, shape in shapes.items():
                if len(shape) >= 3 and not (len(shape) == 4 and shape[-1] == shape[-2] == 1):
                    by_parent.setdefault(name.rpartition(".")[0], []).append(name)

            def span(names: list[str]) -> tuple[bool, int, int]:  # prefer the container spanning most scales
                return len(names) >= 3, len({shapes[n][2:] if len(shapes[n]) == 4 else () for n in names}), len(names)

            best = max(by_parent.values(), key=span) if by_parent else []
            blocks = [n for n in best if any(True for _ in modules[n].children())]
            self._stages = blocks if len(blocks) >= 3 else best
        return self._stages

    def default_layer(self) -> str:
        """A mid-depth stage (about 40% deep): the fallback feature layer for models without a measured one."""
        stages = self.stages()
        if not stages:
            raise ValueError(f"{self.name}: no feature-map layer found; pass a layer explicitly")
        return stages[int(0.4 * (len(stages) - 1))]

    def spread_layers(self, fractions: Sequence[float] = (0.22, 0.39, 0.61, 0.78)) -> list[str]:
        """Stages at the given fractions of depth (FMD+'s multi-layer fallback): ``features.4/7/11/14`` for
        MobileNetV2, ``_blocks.3/6/9/12`` for EfficientNet-Lite."""
        stages = self.stages()
        if not stages:
            raise ValueError(f"{self.name}: no feature-map layer found; pass a layer explicitly")
        return list(dict.fromkeys(stages[round(f * (len(stages) - 1))] for f in fractions))

    @torch.no_grad()
    def layer_shapes(self, layers: Sequence[str] | None = None) -> dict[str, tuple[int, ...]]:
        """Output shape of each tappable layer for one input at the model's input size."""
        names = list(layers) if layers is not None else self.layers()
        h, w = self.cfg.input_size
        x = torch.zeros(1, 3, h, w, device=self.device)
        with self.taps.capture(names, detach=True, strict=False) as feats:
            self.net((x - 0.5) / 0.25)
        order = list(feats)
        return {n: tuple(feats[n].shape) for n in order}
