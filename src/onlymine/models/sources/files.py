"""``torchscript:PATH`` and ``onnx:PATH``: model files with a sidecar JSON.

Input size, mean/std, crop and class names come from a sidecar JSON (``PATH`` with ``.json`` suffix, or
``PATH.json``) or from :func:`~onlymine.models.registry.load_model`'s keyword overrides. Both are *file
sources*: the whole rest of the spec is the path, colons included.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from onlymine.models.cfg import ModelCfg
from onlymine.models.classifier import Classifier
from onlymine.models.errors import ModelError
from onlymine.models.registry import register_source

log = logging.getLogger(__name__)


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
    resize = meta.get("resize_size")  # the shorter side, or [h, w]: both sides (squash)
    return ModelCfg(
        name=spec,
        input_size=(int(size[0]), int(size[1])),
        mean=tuple(meta.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(meta.get("std", (0.229, 0.224, 0.225))),
        interpolation=meta.get("interpolation", "bilinear"),
        crop_pct=meta.get("crop_pct", 0.875),
        resize_size=tuple(int(v) for v in resize) if isinstance(resize, (list, tuple)) else resize,
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



@register_source("torchscript", file_source=True)
def load_torchscript(name: str, variant: str | None, spec: str, **overrides: Any) -> Classifier:
    return _load_file_model("torchscript", name, spec, overrides)


@register_source("onnx", file_source=True)
def load_onnx(name: str, variant: str | None, spec: str, **overrides: Any) -> Classifier:
    return _load_file_model("onnx", name, spec, overrides)
