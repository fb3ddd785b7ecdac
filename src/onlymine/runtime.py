"""Where and how protection computes: the torch device (the precision and memory layout are in
:class:`onlymine.settings.RuntimeConfig` and :mod:`onlymine.models.fast`)."""

from __future__ import annotations

import torch

from onlymine.attacks.config import ConfigError


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
