"""Named intermediate feature maps ("taps") via forward hooks.

Hooks are used rather than ``torchvision.models.feature_extraction.create_feature_extractor`` because they
work on every ``nn.Module`` (torchvision, EfficientNet-Lite, onnx2torch graphs, models FX cannot trace),
return the logits and the features in the same single forward pass, and cost nothing when no layer is
tapped. A tap name is a module name from ``named_modules()`` (``features.7``, ``_blocks.5``). For modules
whose output is a tuple, the first tensor is taken.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


class LayerError(KeyError):
    """An unknown layer name; the message lists close matches."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def _first_tensor(out: object) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            t = _first_tensor(o)
            if t is not None:
                return t
    return None


class StopForward(Exception):
    """Raised by a :meth:`FeatureTaps.capture` with ``stop=True`` once every tap has fired: the layers after the
    deepest tap are not needed (caught by :meth:`~onlymine.models.Classifier.run_features`)."""


class FeatureTaps:
    """Capture outputs of named submodules of ``net`` during a forward pass."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self._modules = {name: m for name, m in net.named_modules() if name}

    def names(self) -> list[str]:
        return list(self._modules)

    def resolve(self, name: str) -> nn.Module:
        if name not in self._modules:
            close = [n for n in self._modules if n.startswith(name) or name in n][:8]
            hint = f" Did you mean one of: {', '.join(close)}?" if close else " Run `onlymine layers SPEC`."
            raise LayerError(f"unknown layer {name!r}.{hint}")
        module = self._modules[name]
        if isinstance(module, torch.jit.ScriptModule):
            raise LayerError(f"layer {name!r} is a TorchScript module, which cannot be tapped; export the model "
                             "to ONNX and load it as onnx:PATH")
        return module

    @contextmanager
    def capture(self, layers: Sequence[str], detach: bool = False, strict: bool = True,
                stop: bool = False) -> Iterator[dict[str, torch.Tensor]]:
        """Record the outputs of ``layers`` during the forward passes run inside the block; with ``stop`` the
        pass raises :class:`StopForward` as soon as all of them are recorded."""
        feats: dict[str, torch.Tensor] = {}
        handles = []
        wanted = list(dict.fromkeys(layers))
        for name in wanted:
            module = self.resolve(name)

            def hook(_m: nn.Module, _inp: object, out: object, name: str = name) -> None:
                t = _first_tensor(out)
                if t is not None:
                    feats[name] = t.detach() if detach else t
                if stop and len(feats) == len(wanted):
                    raise StopForward

            handles.append(module.register_forward_hook(hook))
        try:
            yield feats
        finally:
            for h in handles:
                h.remove()
        missing = [n for n in layers if n not in feats]
        if strict and missing:
            raise LayerError(f"layer(s) {missing} produced no tensor output during the forward pass")
