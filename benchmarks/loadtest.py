"""Bounded load test of the web service on this machine (loopback only).

Starts ``onlymine serve``'s app in this process (or targets ``--url``, which must be a loopback address), sends
N uploads at once, follows every job to the end, downloads every protected file and checks it against its
original (same size, L-inf within the preset's eps, authorized prediction kept), and samples the process's
memory. Writes a JSON report and prints a Markdown summary for docs/web.md.

    python benchmarks/loadtest.py --n 20 --workers 2 --steps 2 -o docs/results/web_loadtest.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KIT_PHOTOS = REPO.parent / "shared" / "kit" / "photos" / "imagenet"


def machine() -> str:
    from onlymine.experiments.outputs import machine as describe

    return describe()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20, help="uploads (one photo each), all sent at once")
    p.add_argument("--concurrency", type=int, help="uploads in flight at a time (default: all N)")
    p.add_argument("--photos", type=Path, default=KIT_PHOTOS,
                   help="folder of photos (default: the kit's ImageNet photos)")
    p.add_argument("--glob", default="foolbox_*.jpg")
    p.add_argument("--url", help="an already running server on this machine (default: start one in this process)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--queue-limit", type=int, default=64)
    p.add_argument("--preset", default="low", help="budget preset (low|mid|high)")
    p.add_argument("--steps", type=int, help="override the preset's number of steps")
    p.add_argument("--unauthorized", action="append", help="judge specs (default: efficientnet-lite:lite0)")
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--timeout", type=float, default=900, help="give up after this many seconds")
    p.add_argument("-o", "--out", type=Path, help="JSON report")
    a = p.parse_args(argv)

    from onlymine.web import ServerConfig
    from onlymine.web.loadtest import check_loopback, run_load
    from onlymine.web.server import background_server

    files = sorted(a.photos.glob(a.glob))
    if not files:
        print(f"no photos matching {a.glob} in {a.photos}", file=sys.stderr)
        return 2
    preset = {"preset": a.preset, **({"steps": a.steps} if a.steps else {})}
    cfg = ServerConfig(presets={"load": preset}, unauthorized=tuple(a.unauthorized or ["efficientnet-lite:lite0"]),
                       workers=a.workers, queue_limit=a.queue_limit, max_files=1, torch_threads=a.torch_threads)
    eps_255 = round(cfg.settings(cfg.authorized[0], "load").eps * 255, 2)

    def progress(r) -> None:
        print(f"  {r.index:3d} {r.file:24s} {'ok' if r.correct else 'NOT OK'} {r.total_s}s {r.error}", flush=True)

    if a.url:
        check_loopback(a.url)
        report = run_load(a.url, files, a.n, a.concurrency, a.timeout, eps_255=None, on_result=progress)
    else:
        with background_server(cfg) as url:
            report = run_load(url, files, a.n, a.concurrency, a.timeout, eps_255=eps_255, on_result=progress)
    meta = {"date": dt.date.today().isoformat(), "machine": machine(),
            "photos": f"{os.path.relpath(a.photos, REPO)} ({a.glob})",
            "server": None if a.url else {"workers": cfg.workers, "preset": preset, "eps_255": eps_255,
                                          "unauthorized": list(cfg.unauthorized), "torch_threads": a.torch_threads},
            "command": "python benchmarks/loadtest.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    out = {"meta": meta, **report.to_dict()}
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\n{meta['date']}, {meta['machine']}; {meta['command']}")
    print("| uploads | concurrent | workers | completed | correct | lost | wall (s) | latency p50 / max (s) "
          "| max L-inf (/255) | RSS start -> peak (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    lat = report.latency_s
    print(f"| {report.n} | {report.concurrency} | {a.workers if not a.url else '?'} | {report.completed} | "
          f"{report.correct} | {report.lost} | {report.wall_s} | {lat.get('p50')} / {lat.get('max')} | "
          f"{report.max_linf_255} (eps {eps_255}) | {report.start_rss_mb} -> {report.peak_rss_mb} |")
    return 0 if report.correct == report.n else 1


if __name__ == "__main__":
    sys.exit(main())
