"""A bounded load test against a server on this machine: N concurrent uploads, every job followed to the end,
every protected file downloaded and checked, the server's memory sampled.

Used by ``benchmarks/loadtest.py`` (figures for docs/web.md) and by the test suite (20 concurrent uploads).
Only loopback addresses are accepted: this never sends anything to another machine.
"""

from __future__ import annotations

import io as _io
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np
from PIL import Image

from onlymine import io
from onlymine.web.server import LOOPBACK

log = logging.getLogger(__name__)


@dataclass
class UploadResult:
    """What happened to one upload."""

    index: int
    file: str
    job_id: str | None = None
    http_status: int | None = None
    state: str | None = None
    image_status: str | None = None
    authorized_kept: bool | None = None
    linf_255: float | None = None
    same_size: bool | None = None
    submit_s: float | None = None
    total_s: float | None = None
    retries_429: int = 0
    error: str = ""

    @property
    def correct(self) -> bool:
        """Done, verified by the server, and the downloaded file checked here: same size, within eps."""
        return (self.state == "done" and self.image_status == "ok" and bool(self.authorized_kept)
                and bool(self.same_size) and self.linf_255 is not None and not self.error)


@dataclass
class LoadReport:
    n: int
    concurrency: int
    wall_s: float
    completed: int
    correct: int
    lost: int
    distinct_jobs: int
    peak_rss_mb: float | None
    start_rss_mb: float | None
    max_linf_255: float | None
    eps_255: float | None
    latency_s: dict[str, float] = field(default_factory=dict)
    results: list[UploadResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    if host not in LOOPBACK:
        raise ValueError(f"load tests only run against this machine (127.0.0.1, ::1, localhost), not {host!r}")


class RssSampler:
    """Samples this process's resident memory (Linux /proc) on a thread; the server runs in-process."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak: float | None = None
        self.start: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def rss_mb() -> float | None:
        try:
            with open(f"/proc/{os.getpid()}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def __enter__(self) -> RssSampler:
        self.start = self.peak = self.rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            now = self.rss_mb()
            if now is not None and (self.peak is None or now > self.peak):
                self.peak = now


def _decode(data: bytes) -> np.ndarray:
    with Image.open(_io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def one_upload(base: str, index: int, path: Path, timeout_s: float, preset: str | None = None,
               poll_s: float = 0.5, deadline: float | None = None) -> UploadResult:
    """Submit ``path`` as one job, follow it, download the protected file and compare it with the original."""
    res = UploadResult(index=index, file=path.name)
    t0 = time.perf_counter()
    deadline = deadline or (time.monotonic() + timeout_s)
    data = path.read_bytes()
    form = {"preset": preset} if preset else {}
    try:
        with httpx.Client(base_url=base, timeout=timeout_s) as client:
            while True:
                r = client.post("/api/jobs", files=[("files", (path.name, data))], data=form)
                if r.status_code != 429 or time.monotonic() > deadline:
                    break
                res.retries_429 += 1
                time.sleep(float(r.headers.get("Retry-After", "1")) / 10)
            res.http_status, res.submit_s = r.status_code, round(time.perf_counter() - t0, 3)
            if r.status_code != 202:
                res.error = f"submit: HTTP {r.status_code}: {r.text[:200]}"
                return res
            job = r.json()
            res.job_id = job["id"]
            while job["state"] not in ("done", "failed"):
                if time.monotonic() > deadline:
                    res.error = f"timed out in state {job['state']}"
                    return res
                time.sleep(poll_s)
                job = client.get(job["status_url"]).json()
            res.state = job["state"]
            image = job["images"][0]
            res.image_status = image["status"]
            if image["status"] not in ("ok", "failed"):
                res.error = image.get("message") or image["status"]
                return res
            res.authorized_kept = image["authorized"]["kept"]
            out = client.get(image["protected_url"])
            out.raise_for_status()
            original = io.to_uint8(io.load_image(path).rgb).astype(np.int16)  # as the server reads it
            protected = _decode(out.content)
            res.same_size = original.shape == protected.shape
            if res.same_size:
                res.linf_255 = float(np.abs(original - protected).max())
    except (httpx.HTTPError, OSError, ValueError, KeyError) as e:
        res.error = f"{type(e).__name__}: {e}"
    res.total_s = round(time.perf_counter() - t0, 3)
    return res


def run_load(base: str, files: Sequence[Path], n: int, concurrency: int | None = None, timeout_s: float = 600.0,
             preset: str | None = None, eps_255: float | None = None,
             on_result: Callable[[UploadResult], None] | None = None) -> LoadReport:
    """``n`` uploads (cycling through ``files``), ``concurrency`` at a time (default: all at once)."""
    check_loopback(base)
    if n < 1 or not files:
        raise ValueError("need n >= 1 and at least one file")
    concurrency = concurrency or n
    deadline = time.monotonic() + timeout_s
    t0 = time.perf_counter()
    with RssSampler() as rss, ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(one_upload, base, i, Path(files[i % len(files)]), timeout_s, preset, 0.5, deadline)
                   for i in range(n)]
        results = []
        for f in futures:
            r = f.result()
            results.append(r)
            if on_result:
                on_result(r)
    wall = time.perf_counter() - t0
    totals = sorted(r.total_s for r in results if r.total_s is not None)
    linfs = [r.linf_255 for r in results if r.linf_255 is not None]
    return LoadReport(
        n=n, concurrency=concurrency, wall_s=round(wall, 2),
        completed=sum(r.state == "done" for r in results), correct=sum(r.correct for r in results),
        lost=sum(r.job_id is None or r.state is None for r in results),
        distinct_jobs=len({r.job_id for r in results if r.job_id}),
        peak_rss_mb=None if rss.peak is None else round(rss.peak, 1),
        start_rss_mb=None if rss.start is None else round(rss.start, 1),
        max_linf_255=max(linfs) if linfs else None, eps_255=eps_255,
        latency_s=({"p50": totals[len(totals) // 2], "max": totals[-1], "mean": round(sum(totals) / len(totals), 3)}
                   if totals else {}),
        results=results,
    )
