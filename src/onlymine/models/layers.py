"""Generic feature-layer pickers for networks whose module names say nothing about depth (onnx2torch graphs)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from onlymine.models.taps import FeatureTaps


def pick_layer(net: nn.Module, input_size: tuple[int, int], depth: float = 0.4) -> str | None:
    """A convolution output about ``depth`` deep (forward order) with a spatial map: the default FMD layer."""
    layers = pick_layers(net, input_size, (depth,))
    return layers[0] if layers else None


def pick_layers(net: nn.Module, input_size: tuple[int, int], depths: Sequence[float],
                nearest: bool = False) -> list[str]:
    """Convolution outputs (with a spatial map of at least 4x4) at these relative depths, in forward order,
    without repeats. onnx2torch graphs have flat node names, so depth is counted in convolutions; the index is
    rounded down (the single FMD layer, as recorded in earlier runs) or to the nearest (``nearest``)."""
    names = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    if not names:
        return []
    taps = FeatureTaps(net)
    with torch.no_grad(), taps.capture(names, detach=True, strict=False) as feats:
        net(torch.full((1, 3, *input_size), 0.5))
    order = [n for n in feats if feats[n].dim() == 4 and min(feats[n].shape[-2:]) >= 4]
    pos = round if nearest else int
    return list(dict.fromkeys(order[pos(d * (len(order) - 1))] for d in depths)) if order else []
