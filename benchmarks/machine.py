"""What machine a benchmark ran on, and its arithmetic peak (for docs/performance.md's bound).

Peak FLOP/s from ``lscpu``/``/proc/cpuinfo``: cores x clock x FLOPs per cycle per core, where FLOPs per cycle
are 2 (FMA) x vector lanes x FMA units: AVX-512 fp32 = 2 x 16 x 2 = 64 (Xeon Gold/Platinum have two
AVX-512 FMA units; one-unit SKUs have half), AVX2 fp32 = 2 x 8 x 2 = 32, AMX-BF16 = 1024 (a 16x32 by 32x16
bf16 tile product, 8192 multiply-adds, every 16 cycles). The clock is the nominal one in the model name
(turbo is not counted), so real peaks can be somewhat higher.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
from pathlib import Path
from typing import Any


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def nominal_ghz(model: str) -> float | None:
    m = re.search(r"@\s*([0-9.]+)\s*GHz", model)
    return float(m.group(1)) if m else None


def cpu_peak() -> dict[str, Any]:
    """Nominal peak GFLOP/s of the usable cores for fp32 (best vector unit) and AMX bf16 (if present)."""
    flags, model = cpu_flags(), cpu_model()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    ghz = nominal_ghz(model)
    if "avx512f" in flags:
        isa, per_cycle = "AVX-512 fp32 (2 FMA units)", 64
    elif "avx2" in flags:
        isa, per_cycle = "AVX2 fp32 (2 FMA units)", 32
    else:
        isa, per_cycle = "SSE fp32", 8
    out: dict[str, Any] = {"model": model, "cores": cores, "ghz": ghz, "fp32_isa": isa,
                           "fp32_flops_per_cycle": per_cycle, "amx_bf16": "amx_bf16" in flags,
                           "avx512_bf16": "avx512_bf16" in flags}
    out["fp32_peak_gflops"] = cores * ghz * per_cycle if ghz else None
    out["bf16_peak_gflops"] = cores * ghz * 1024 if ghz and "amx_bf16" in flags else None
    return out


def describe() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                            "python": platform.python_version(), "torch": torch.__version__,
                            "torch_threads": torch.get_num_threads(), "cpu": cpu_peak(),
                            "loadavg_start": list(os.getloadavg()),
                            # what the kernels may use: an ISA cap (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA) emulates
                            # an older CPU on this one
                            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
                            "isa_cap": {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
                                        if k in os.environ}}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
