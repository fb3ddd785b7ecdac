"""Where and how protection computes: the torch device (the precision and memory layout are in
:class:`onlymine.settings.RuntimeConfig` and :mod:`onlymine.models.fast`)."""

from __future__ import annotations

import ctypes
import logging
import sys
from functools import lru_cache

import torch

from onlymine.attacks.config import ConfigError

log = logging.getLogger(__name__)


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` -> the first CUDA GPU if there is one, else the CPU; anything else must exist here."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"--device: {device!r} is not a torch device (auto, cpu, cuda, cuda:N)") from e
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"--device {device}: no such CUDA device here (torch sees "
                          f"{torch.cuda.device_count()} GPU(s)); use --device cpu or auto")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {device}: MPS is not available here; use --device cpu or auto")
    return dev


@lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Ask glibc to serve large blocks from its heap and never give freed memory back (``mallopt``), for the
    rest of the process; ``False`` where that is not possible (not Linux, not glibc).

    Why: an attack step allocates activations of 30-120 MB; glibc maps each block over 32 MB afresh and unmaps
    it when freed, so every step pays a page fault per 4 KiB of them (measured 18% of a CPU step's time as
    kernel time, docs/performance.md). With the heap kept, the next step reuses the same pages; the process's
    resident memory stays at its peak instead of falling between steps."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    ok = bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))
    log.debug("glibc keeps freed memory: %s", ok)
    return ok
