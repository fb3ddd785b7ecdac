"""Faster execution of a :class:`Classifier` that computes the same function.

:func:`fast_classifier` returns a new Classifier (the original is left untouched, so verification can use it)
with:

* BatchNorm folded into the convolution before it (eval-mode BN is an affine map per channel, so the fused
  convolution gives the same output up to float rounding; the BN module is replaced by ``Identity`` so its
  name can still be tapped and yields the same tensor);
* ``channels_last`` memory layout (oneDNN's fast path for depthwise and 1x1 convolutions);
* in-place activations made out-of-place (autograd would clone their input first);
* each convolution and the ReLU6/ReLU after it run as one oneDNN call on CPUs (:mod:`onlymine.models.fused`);
* an autocast precision (``bf16`` / ``fp16``) where the hardware runs it natively;
* optionally ``torch.compile`` on the feature stages that are not tapped (hooks stay in eager modules).

Measured effect and the reasons for the defaults: docs/performance.md (``python benchmarks/speed.py``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from onlymine.models.classifier import Classifier
from onlymine.models.fused import fuse_conv_clip
from onlymine.models.taps import FeatureTaps

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products in hardware (AMX-BF16 or AVX512-BF16).

    Without them oneDNN emulates bf16 with fp32 instructions plus conversions, which is slower than fp32.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``auto`` -> ``bf16`` on CUDA GPUs that support it, else ``fp32``.

    Not bf16 on CPUs, even those with AMX-BF16: the FMD+ step with views was measured slower under bf16 autocast
    there (MobileNetV2's depthwise convolutions are memory-bound and the casts cost more than AMX saves;
    docs/performance.md). ``--precision bf16`` still asks for it."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if precision != "auto":
        return precision
    kind = torch.device(device).type
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "fp32"


def _conv_bn_pairs(net: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(conv name, bn name) where a BatchNorm2d's input is exactly the output tensor of a Conv2d.

    Found by running the network once with hooks, so it follows the real data flow rather than module order.
    """
    names = {m: n for n, m in net.named_modules()}
    produced: dict[int, str] = {}
    pairs: list[tuple[str, str]] = []
    handles = []

    def conv_hook(m: nn.Module, _inp: object, out: object) -> None:
        if isinstance(out, torch.Tensor):
            produced[id(out)] = names[m]

    def bn_hook(m: nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
        src = produced.get(id(inp[0])) if inp else None
        if src is not None:
            pairs.append((src, names[m]))

    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.BatchNorm2d):
            handles.append(m.register_forward_pre_hook(bn_hook))
    try:
        with torch.no_grad():
            net(example)
    finally:
        for h in handles:
            h.remove()
    return pairs


def _set_module(net: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, child, module)


def fold_batchnorm(net: nn.Module, example: torch.Tensor, keep: Sequence[str] = ()) -> tuple[nn.Module, int]:
    """A copy of ``net`` (eval mode) with each Conv2d -> BatchNorm2d pair fused; returns (net, pairs fused).

    Convolutions named in ``keep`` (tapped layers, whose own output must stay the pre-BN feature) and
    convolutions whose output is used more than once are left alone.
    """
    net = copy.deepcopy(net).eval()
    pairs = _conv_bn_pairs(net, example)
    uses: dict[str, int] = {}
    for conv, _ in pairs:
        uses[conv] = uses.get(conv, 0) + 1
    fused = 0
    for conv_name, bn_name in pairs:
        if conv_name in keep or uses[conv_name] > 1:
            continue
        conv, bn = net.get_submodule(conv_name), net.get_submodule(bn_name)
        if not (isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats and bn.running_mean is not None):
            continue
        _set_module(net, conv_name, fuse_conv_bn_eval(conv, bn))
        _set_module(net, bn_name, nn.Identity())
        fused += 1
    for p in net.parameters():
        p.requires_grad_(False)
    return net, fused


def _compile_stages(clf: Classifier, keep: Sequence[str]) -> int:
    """``torch.compile`` each feature stage that neither is nor contains nor lies inside a tapped layer."""
    n = 0
    for name in clf.stages():
        if any(k == name or k.startswith(name + ".") or name.startswith(k + ".") for k in keep):
            continue
        clf.net.get_submodule(name).compile()
        n += 1
    return n


def _out_of_place(net: nn.Module) -> None:
    """Make in-place activations (``ReLU6(inplace=True)`` ...) write a new tensor: autograd clones the input of an
    in-place activation it needs, one more pass over the largest feature maps (about 10% of MobileNetV2's gradient
    pass without the kept heap of ``--keep-memory``, nothing measurable with it; docs/performance.md). Same
    function."""
    for m in net.modules():
        if getattr(m, "inplace", False) is True:
            m.inplace = False


def _with_net(clf: Classifier, net: nn.Module) -> Classifier:
    """A shallow copy of ``clf`` (same class, config and extra attributes) running ``net``."""
    fast = copy.copy(clf)
    fast._modules = dict(clf._modules)  # its own module table, so the original keeps its network
    fast.net = net
    fast.taps = FeatureTaps(net)
    fast._stages = None
    return fast


def fast_classifier(clf: Classifier, keep: Sequence[str] = (), fold_bn: bool = True, channels_last: bool = True,
                    precision: str = "fp32", compile: bool = False, check: bool = True,
                    fuse: bool = True) -> Classifier:
    """A faster Classifier computing the same function as ``clf`` (which is not modified).

    Args:
        clf: the authorized model.
        keep: tapped layer names (their modules keep their exact output).
        fold_bn: fuse eval-mode BatchNorm into the preceding convolution.
        channels_last: run the network in NHWC memory layout.
        precision: ``fp32`` | ``bf16`` | ``fp16`` | ``auto`` (see :func:`resolve_precision`).
        compile: ``torch.compile`` the untapped feature stages (slow to start; see docs/performance.md).
        fuse: each convolution + clip activation pair as one call on CPU fp32
            (:func:`~onlymine.models.fused.fuse_conv_clip`).
        check: compare both models' fp32 logits on random images and return ``clf``'s network unchanged if
            they differ by more than float rounding (a model whose BatchNorm is not a plain affine map).
    """
    device = clf.device
    h, w = clf.cfg.input_size
    gen = torch.Generator().manual_seed(0)
    net = clf.net
    if fold_bn:
        example = torch.randn(2, 3, h, w, generator=gen).to(device)
        net, n = fold_batchnorm(clf.net, example, keep)
        log.info("%s: folded %d BatchNorm layer(s) into convolutions", clf.name, n)
    elif channels_last or compile or fuse:
        net = copy.deepcopy(clf.net)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if net is not clf.net:
        _out_of_place(net)
    if fuse:
        log.info("%s: fused %d convolution + activation pair(s)", clf.name, fuse_conv_clip(net, keep))
    fast = _with_net(clf, net)
    fast.channels_last = channels_last
    if check and net is not clf.net:
        images = torch.rand(2, 3, h + h // 7, w + w // 7, generator=gen).to(device)
        with torch.no_grad():
            ref, got = clf(images).float(), fast(images).float()
        tol = 1e-3 * max(1.0, float(ref.abs().max()))
        if ref.shape != got.shape or not torch.allclose(ref, got, atol=tol, rtol=1e-3):
            log.warning("%s: the fast network changed the logits (max diff %.2e); using the plain one",
                        clf.name, float((ref - got).abs().max()) if ref.shape == got.shape else float("nan"))
            fast = _with_net(clf, clf.net)
    fast.amp_dtype = _DTYPES[resolve_precision(precision, device)]
    if compile:
        if fast.net is clf.net:
            fast = _with_net(clf, copy.deepcopy(clf.net))
        log.info("%s: compiled %d feature stage(s) with torch.compile", clf.name, _compile_stages(fast, keep))
    return fast
