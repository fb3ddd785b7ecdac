"""FMD throughput per model, batch size and precision (the engine of ``onlymine protect``, without file I/O).

For each configuration: the fast authorized model (:func:`onlymine.models.fast.fast_classifier`) and
:class:`onlymine.attacks.FMD` on a batch of 512x512 photos (kit photos when present, else uniform noise of
the same size: the speed does not depend on the content); a 1-step run warms up, then the marginal time of
``--steps`` more steps gives image-steps per second (and images/s at N = 100). One JSON line per
configuration on stdout, a Markdown table at the end. ``benchmarks/gpu.sh`` runs the CUDA set;
``--dry-run`` is a seconds-long CPU check of this script (random-init MobileNetV2, tiny batch).

    python benchmarks/gpu_throughput.py --device cuda --batch 64 256 --precision fp32 bf16
    python benchmarks/gpu_throughput.py --device cpu --dry-run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from onlymine import io
from onlymine.attacks import FMD
from onlymine.attacks.defaults import layers_for
from onlymine.models import load_model
from onlymine.models.fast import fast_classifier

KIT = Path(__file__).resolve().parents[2] / "shared" / "kit" / "photos" / "imagenet"
MODELS = ("torchvision:mobilenet_v2", "efficientnet-lite:lite0", "torchvision:resnet50:random")


def photos(n: int, size: int, device: torch.device) -> tuple[torch.Tensor, str]:
    files = sorted(KIT.glob("*.jpg")) if KIT.is_dir() else []
    ims = [x for x in (io.load_image(f).rgb for f in files[:64]) if tuple(x.shape) == (3, 512, 512)]
    if ims and size == 512:
        return torch.stack([ims[i % len(ims)] for i in range(n)]).to(device), f"kit photos ({len(ims)} distinct)"
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, size, size, generator=g).to(device), "uniform noise"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(spec: str, batch: int, precision: str, steps: int, size: int, device: torch.device) -> dict[str, Any]:
    row: dict[str, Any] = {"model": spec, "batch": batch, "precision": precision, "steps": steps,
                           "device": device.type, "size": size}
    clf = load_model(spec, device=device)
    layer = layers_for("fmd", clf)[0]
    fast = fast_classifier(clf, keep=[layer], precision=precision)
    x, row["images"] = photos(batch, size, device)
    short = FMD(fast, layer, steps=1, keep_best=True)
    long = FMD(fast, layer, steps=1 + steps, keep_best=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        short(x)  # warm-up (cuDNN autotuning, allocator)
        sync(device)
        t = time.perf_counter()
        short(x)
        sync(device)
        t1 = time.perf_counter()
        long(x)
        sync(device)
        t2 = time.perf_counter()
    except torch.OutOfMemoryError:
        row["error"] = "out of memory"
        return row
    per_step = max((t2 - t1) - (t1 - t), 1e-9) / steps
    row["ms_per_step"] = round(per_step * 1000, 3)
    row["img_steps_per_s"] = round(batch / per_step, 2)
    row["images_per_s_at_N100"] = round(batch / (per_step * 100 + (t1 - t)), 3)
    if device.type == "cuda":
        row["peak_mem_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | batch | precision | ms/step | image-steps/s | images/s at N=100 | peak GPU mem GB |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['batch']} | {r['precision']} | {r['error']} | | | |")
        else:
            lines.append(f"| {r['model']} | {r['batch']} | {r['precision']} | {r['ms_per_step']} | "
                         f"{r['img_steps_per_s']} | {r['images_per_s_at_N100']} | {r.get('peak_mem_gb', '-')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--batch", nargs="+", type=int, default=[64, 256])
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--size", type=int, default=512, help="photo side in pixels")
    p.add_argument("--json", type=Path, help="also append the JSON lines to this file")
    p.add_argument("--dry-run", action="store_true", help="tiny CPU check: random MobileNetV2, batch 2, 64 px")
    a = p.parse_args(argv)
    if a.dry_run:
        a.models, a.batch, a.steps, a.size = ["torchvision:mobilenet_v2:random"], [2], 1, 64
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_throughput: no CUDA device here (use --device cpu --dry-run to check the script)", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    header = {"torch": torch.__version__, "device": torch.cuda.get_device_name(device) if device.type == "cuda"
              else "cpu", "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    print(json.dumps({"header": header}), file=sys.stderr)
    rows = []
    for spec in a.models:
        for batch in a.batch:
            for precision in a.precision:
                row = measure(spec, batch, precision, a.steps, a.size, device)
                rows.append(row)
                line = json.dumps(row)
                print(line, flush=True)
                if a.json:
                    a.json.parent.mkdir(parents=True, exist_ok=True)
                    with open(a.json, "a") as f:
                        f.write(json.dumps({**row, **header}) + "\n")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
