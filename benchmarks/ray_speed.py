"""The Ray path against the plain path on one machine, in one run (issue 21's "within 15%").

Protects the same photos into fresh output folders with ``protect_paths`` (the plain CLI path) and with
``protect_ray`` on a local cluster (``--workers`` 1 and 2), interleaved over ``--rounds``, and reports images per
second, the ratio to plain, and Ray's per-task overhead (an empty ``map_batches`` over one-row batches), which is
what a paper estimate for N GPUs needs beside a measured single-GPU rate.

    python benchmarks/ray_speed.py --photos 8 --rounds 2 --json docs/results/ray-speed.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

from onlymine.distributed import connect, protect_ray
from onlymine.protect import protect_paths
from onlymine.settings import ProtectSettings

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT.parent / "shared" / "kit" / "photos" / "imagenet"


def _noop(batch: dict) -> dict:
    return batch


def task_overhead(n: int = 64) -> float:
    """Seconds per one-row batch of an empty map_batches (after a warm-up pass)."""
    import ray.data

    ds = ray.data.from_items([{"i": i} for i in range(n)])
    for _ in ds.map_batches(_noop, batch_size=1).iter_rows():
        pass
    t = time.perf_counter()
    for _ in ray.data.from_items([{"i": i} for i in range(n)]).map_batches(_noop, batch_size=1).iter_rows():
        pass
    return (time.perf_counter() - t) / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--source", default=str(KIT if KIT.is_dir() else ROOT / "samples"))
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=None, help="override the preset's steps (a quicker check)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    photos = sorted(p for p in Path(a.source).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    photos = photos[: a.photos]
    tmp = Path(tempfile.mkdtemp(prefix="ray-speed-"))
    src = tmp / "in"
    src.mkdir()
    for p in photos:
        shutil.copy(p, src / p.name)
    settings = ProtectSettings.build(**({"steps": a.steps} if a.steps else {}))
    t = time.perf_counter()
    connect("local", 2)
    start_s = time.perf_counter() - t
    runs: dict[str, list[float]] = {"plain": [], "ray x1": [], "ray x2": []}
    steadies: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(a.rounds):
        for name in runs:
            out = tmp / f"{name.replace(' ', '')}-{r}"
            seen: list[float] = []

            def note(_o: object, seen: list[float] = seen) -> None:
                seen.append(time.perf_counter())

            t, t0_wall = time.perf_counter(), time.time()
            if name == "plain":
                s = protect_paths([src], out, settings, batch_size=a.batch_size, progress=False, on_outcome=note)
            else:
                s = protect_ray([src], out, settings, workers=int(name[-1]), batch_size=a.batch_size,
                                on_outcome=note)
            wall = time.perf_counter() - t
            assert s.count("ok") + s.count("failed") == len(photos), f"{name}: not every photo was protected"
            # the rate after every worker's first batch, from when the files were written (rows reach the
            # driver in bursts): model loading and actor start-up stay out of it
            written = sorted(f.stat().st_mtime for f in out.glob("*.png"))
            k = min(len(written) - 1, a.batch_size * (1 if name == "plain" else int(name[-1])))
            steady = (len(written) - k) / (written[-1] - written[k - 1]) if k >= 1 else float("nan")
            runs[name].append(len(photos) / wall)
            steadies[name].append(steady)
            print(f"round {r} {name}: {len(photos) / wall:.4f} images/s ({wall:.1f} s; after the first batch "
                  f"{steady:.4f} images/s, first rows after {seen[0] - t:.1f} s, first file after "
                  f"{written[0] - t0_wall:.1f} s)", flush=True)
    overhead = task_overhead()
    plain = sum(runs["plain"]) / len(runs["plain"])
    steady_plain = sum(steadies["plain"]) / len(steadies["plain"])
    rows = [{"path": k, "images_per_s": sum(v) / len(v), "x_plain": sum(v) / len(v) / plain,
             "steady_images_per_s": sum(steadies[k]) / len(v),
             "steady_x_plain": sum(steadies[k]) / len(v) / steady_plain} for k, v in runs.items()]
    result = {"machine": describe(), "photos": len(photos), "source": a.source, "rounds": a.rounds,
              "batch_size": a.batch_size, "settings_key": settings.key(), "steps": settings.config.steps,
              "cluster_start_s": start_s, "task_overhead_s": overhead, "rows": rows}
    print("| path | images/s | x plain | after the first batch: images/s | x plain |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['path']} | {row['images_per_s']:.4f} | {row['x_plain']:.3f} | "
              f"{row['steady_images_per_s']:.4f} | {row['steady_x_plain']:.3f} |")
    print(f"local cluster start {start_s:.1f} s; Ray per-task overhead {overhead * 1000:.1f} ms per one-row batch")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=1, default=str) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
