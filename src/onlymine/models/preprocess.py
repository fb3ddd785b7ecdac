"""Differentiable resize / centre-crop / normalise from full-resolution [0,1] RGB to a model's input."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from onlymine.models.cfg import ModelCfg


def crop_box(height: int, width: int, cfg: ModelCfg) -> tuple[int, int, int, int]:
    """(top, left, crop_h, crop_w) in original pixels: the region of the photo the model's centre crop covers
    (the resize maps it onto the crop; used to tell the inside of the crop from the ring around it)."""
    g = cfg.pipeline().geometry(height, width)
    sy, sx = height / g.size[0], width / g.size[1]
    top, left = int(round(g.top * sy)), int(round(g.left * sx))
    return top, left, min(height - top, int(round(g.crop_h * sy))), min(width - left, int(round(g.crop_w * sx)))


def to_model_input(images: torch.Tensor | Sequence[torch.Tensor], cfg: ModelCfg,
                   quantize: bool = True) -> torch.Tensor:
    """Map [0,1] RGB images of any size to the normalised (N, 3, h, w) batch the network expects, through the
    model's pipeline (:meth:`ModelCfg.pipeline`, Pillow's arithmetic; every step differentiable)."""
    return cfg.pipeline(quantize).apply(images)
