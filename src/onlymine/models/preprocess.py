"""Differentiable resize / centre-crop / normalise from full-resolution [0,1] RGB to a model's input."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from onlymine.models.cfg import ModelCfg


def crop_box(height: int, width: int, cfg: ModelCfg) -> tuple[int, int, int, int]:
    """Return (top, left, crop_h, crop_w) in original pixels: the region the model sees.

    Equivalent to torchvision's ``Resize(int(size / crop_pct))`` + ``CenterCrop(size)``, but computed in the
    original image so that only the crop (not the whole photo) is resampled: memory and time stay bounded for
    large photos while the gradient still reaches every pixel of the crop at full resolution.
    """
    if cfg.crop_pct is None:
        return 0, 0, height, width
    in_h, in_w = cfg.input_size
    scale = (min(in_h, in_w) / cfg.crop_pct) / min(height, width)  # resize factor of the shorter side
    crop_h = min(height, max(1, round(in_h / scale)))
    crop_w = min(width, max(1, round(in_w / scale)))
    top = int(round((height - crop_h) / 2.0))
    left = int(round((width - crop_w) / 2.0))
    return top, left, crop_h, crop_w


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    antialias = mode in ("bilinear", "bicubic") and (x.shape[-2] > size[0] or x.shape[-1] > size[1])
    kwargs = {} if mode == "nearest" else {"align_corners": False, "antialias": antialias}
    return F.interpolate(x, size=size, mode=mode, **kwargs)


def to_model_input(images: torch.Tensor | Sequence[torch.Tensor], cfg: ModelCfg) -> torch.Tensor:
    """Map [0,1] RGB images of any size to the normalised (N, 3, h, w) batch the network expects.

    ``images`` is an (N, 3, H, W) tensor or a sequence of (3, H_i, W_i) tensors of different sizes.
    Every step is differentiable.
    """
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        groups: list[torch.Tensor] = [images]
    elif len({tuple(im.shape) for im in images}) == 1:  # same-size photos: one batched resize
        groups = [torch.stack(list(images)) if images[0].dim() == 3 else torch.cat(list(images))]
    else:
        groups = [im.unsqueeze(0) if im.dim() == 3 else im for im in images]
    outs = []
    for x in groups:
        top, left, ch, cw = crop_box(x.shape[-2], x.shape[-1], cfg)
        x = x[..., top : top + ch, left : left + cw]
        outs.append(_resize(x, cfg.input_size, cfg.interpolation))
    batch = outs[0] if len(outs) == 1 else torch.cat(outs, 0)
    mean = torch.tensor(cfg.mean, device=batch.device, dtype=batch.dtype).view(1, -1, 1, 1)
    std = torch.tensor(cfg.std, device=batch.device, dtype=batch.dtype).view(1, -1, 1, 1)
    return (batch - mean) / std
