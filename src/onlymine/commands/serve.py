"""``onlymine serve``: the web page and JSON API (FastAPI under uvicorn)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="start the web page and JSON API",
        description="Serve the page and the JSON API (OpenAPI docs at /docs). Users pick only names from the "
                    "allowlists below; they can never send model files or paths. Every option can also be set "
                    "with an environment variable ONLYMINE_SERVE_<OPTION> (e.g. ONLYMINE_SERVE_WORKERS=2).")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--authorized", action="append", metavar="SPEC",
                   help="model spec users may authorize (repeatable; default torchvision:mobilenet_v2)")
    p.add_argument("--unauthorized", action="append", metavar="SPEC",
                   help="model spec that verifies every result (repeatable; default efficientnet-lite:lite0/1/2)")
    p.add_argument("--presets", type=json.loads, metavar="JSON",
                   help='presets offered, e.g. \'{"fast": {"preset": "low", "steps": 10}}\' (default low/mid/high)')
    p.add_argument("--default-preset")
    p.add_argument("--workers", type=int, help="jobs protected in parallel (default 1)")
    p.add_argument("--queue-limit", type=int, help="jobs allowed to wait; more get HTTP 429 (default 32)")
    p.add_argument("--max-files", type=int, help="photos per job (default 20)")
    p.add_argument("--max-upload-mb", type=float, help="largest photo in MB (default 20)")
    p.add_argument("--max-request-mb", type=float, help="largest request in MB (default 100)")
    p.add_argument("--max-pixels", type=int, help="largest photo in pixels (default 16000000)")
    p.add_argument("--result-ttl", type=float, metavar="SECONDS", help="results are deleted after this (default 3600)")
    p.add_argument("--request-timeout", type=float, metavar="SECONDS", help="longest HTTP request (default 60)")
    p.add_argument("--job-timeout", type=float, metavar="SECONDS", help="longest job (default 3600)")
    p.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                   help="allow this origin (CORS is off by default)")
    p.add_argument("--data-dir", type=Path, help="folder for job files (default: a new temporary folder)")
    p.add_argument("--device", help="torch device (default cpu)")
    p.add_argument("--torch-threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--no-preload", action="store_true", help="load models on the first job, not at start-up")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    try:
        from onlymine.web.config import ServerConfig
        from onlymine.web.server import LOOPBACK, serve
    except ImportError as e:
        print(f"onlymine: the web service needs the 'serve' extra: pip install 'onlymine[serve]' ({e})",
              file=sys.stderr)
        return 2
    mb = 2**20
    try:
        config = ServerConfig.from_env(
            authorized=tuple(a.authorized) if a.authorized else None,
            unauthorized=tuple(a.unauthorized) if a.unauthorized else None,
            presets=a.presets, default_preset=a.default_preset, workers=a.workers, queue_limit=a.queue_limit,
            max_files=a.max_files, max_upload_bytes=int(a.max_upload_mb * mb) if a.max_upload_mb else None,
            max_request_bytes=int(a.max_request_mb * mb) if a.max_request_mb else None, max_pixels=a.max_pixels,
            result_ttl_s=a.result_ttl, request_timeout_s=a.request_timeout, job_timeout_s=a.job_timeout,
            cors_origins=tuple(a.cors_origin) if a.cors_origin else None, data_dir=a.data_dir, device=a.device,
            torch_threads=a.torch_threads, preload=not a.no_preload)
    except (ValueError, TypeError) as e:
        print(f"onlymine: {e}", file=sys.stderr)
        return 2
    from onlymine.models import spec_available

    for spec in (*config.authorized, *config.unauthorized):
        ok, detail = spec_available(spec)
        if not ok:
            print(f"warning: model {spec}: weights not found here ({detail}); loading will try to download them",
                  file=sys.stderr)
    if a.host not in LOOPBACK:
        print(f"warning: listening on {a.host}: anyone who can reach this machine can use the service",
              file=sys.stderr)
    print(f"onlymine: serving on http://{a.host}:{a.port} (API docs at /docs); authorized: "
          f"{', '.join(config.authorized)}; unauthorized: {', '.join(config.unauthorized)}; "
          f"{config.workers} worker(s); loading models...")
    serve(config, host=a.host, port=a.port)
    return 0
