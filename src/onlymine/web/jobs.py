"""Jobs and the bounded worker pool: a queue limit, per-worker models, result expiry and deletion."""

from __future__ import annotations

import logging
import queue
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from onlymine.attacks.base import Cancelled
from onlymine.web.config import ServerConfig
from onlymine.web.uploads import StoredUpload

log = logging.getLogger(__name__)

JOB_ID_CHARS = 32  # secrets.token_hex(16): unguessable, so a job id works as its own access token


class QueueFull(Exception):
    """The queue limit is reached; the client should retry later (HTTP 429)."""


@dataclass
class Job:
    """One submission: its files, its settings (names from the allowlist), its state and its results."""

    id: str
    folder: Path
    model: str
    preset: str
    uploads: list[StoredUpload] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    state: str = "queued"  # queued | running | done | failed
    message: str = ""
    started: float | None = None
    finished: float | None = None
    expires: float | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def is_cancelled(self) -> bool:
        """Asked between attack steps: a deleted job stops there and frees its worker."""
        return self.cancel.is_set()

    @property
    def out_dir(self) -> Path:
        return self.folder / "out"

    def set_result(self, index: int, result: dict[str, Any]) -> None:
        with self.lock:
            self.results[index] = result

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy of the job's public state."""
        with self.lock:
            done = sum(r["status"] in ("ok", "failed", "error") for r in self.results)
            return {
                "id": self.id, "state": self.state, "message": self.message, "model": self.model,
                "preset": self.preset, "created": self.created, "started": self.started, "finished": self.finished,
                "expires": self.expires, "progress": {"done": done, "total": len(self.uploads)},
                "images": [dict(r) for r in self.results],
            }


class Runner(Protocol):
    """Protects a job's images (one instance per worker thread: models are not shared between threads)."""

    def run(self, job: Job, deadline: float) -> None: ...

    def preload(self) -> None: ...


class JobManager:
    """Accepts jobs up to the queue limit, runs them on ``config.workers`` threads, deletes expired results.

    Args:
        config: the server configuration.
        runner_factory: builds one :class:`Runner` per worker thread.
    """

    def __init__(self, config: ServerConfig, runner_factory: Callable[[ServerConfig], Runner]) -> None:
        self.config = config
        self._runner_factory = runner_factory
        self._own_root = config.data_dir is None
        self.root = Path(tempfile.mkdtemp(prefix="onlymine-serve-")) if config.data_dir is None else config.data_dir
        self.root.mkdir(parents=True, exist_ok=True)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._waiting = 0
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.ready = threading.Event()
        self._preload_errors: list[str] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        preloaded = threading.Barrier(self.config.workers + 1) if self.config.preload else None
        for n in range(self.config.workers):
            t = threading.Thread(target=self._work, args=(preloaded,), name=f"onlymine-worker-{n}", daemon=True)
            t.start()
            self._threads.append(t)
        sweeper = threading.Thread(target=self._sweep_loop, name="onlymine-sweeper", daemon=True)
        sweeper.start()
        self._threads.append(sweeper)
        if preloaded is not None:
            preloaded.wait()
            if self._preload_errors:
                self.stop()
                raise RuntimeError(f"loading the models failed: {self._preload_errors[0]}")
        self.ready.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the workers after their current job and delete every job folder."""
        self._stop.set()
        for _ in range(self.config.workers):
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout)
        with self._lock:
            jobs = list(self._jobs.values())
            self._jobs.clear()
        for job in jobs:
            shutil.rmtree(job.folder, ignore_errors=True)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ jobs
    def has_room(self) -> bool:
        with self._lock:
            return self._waiting < self.config.queue_limit

    def new_job(self, model: str, preset: str) -> Job:
        """A job with a fresh id and an empty private folder (not yet queued)."""
        job_id = secrets.token_hex(JOB_ID_CHARS // 2)
        folder = self.root / job_id
        folder.mkdir(mode=0o700)
        return Job(id=job_id, folder=folder, model=model, preset=preset)

    def submit(self, job: Job) -> None:
        """Queue ``job``; raises :class:`QueueFull` (and deletes its folder) when the queue limit is reached."""
        with self._lock:
            if self._waiting >= self.config.queue_limit:
                shutil.rmtree(job.folder, ignore_errors=True)
                raise QueueFull(f"the queue is full ({self.config.queue_limit} jobs waiting); retry later")
            self._waiting += 1
            job.results = [{"index": i, "name": u.name, "status": "queued", "width": u.width, "height": u.height}
                           for i, u in enumerate(job.uploads)]
            self._jobs[job.id] = job
        self._queue.put(job)
        log.info("job %s queued: %d image(s), model %s, preset %s", job.id, len(job.uploads), job.model, job.preset)

    def discard(self, job: Job) -> None:
        """Forget a job that was never submitted (its upload was refused)."""
        shutil.rmtree(job.folder, ignore_errors=True)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is not None and job.expires is not None and job.expires <= time.time():
            self.delete(job_id)
            return None
        return job

    def delete(self, job_id: str) -> bool:
        """Delete a job and its files now; a queued job never runs, a running one stops between two attack steps
        and its worker deletes it."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return False
            if job.state in ("queued", "running"):
                job.expires = 0.0  # the worker removes it when it stops
                job.cancel.set()
                return True
            del self._jobs[job_id]
        shutil.rmtree(job.folder, ignore_errors=True)
        log.info("job %s deleted", job_id)
        return True

    def sweep(self, now: float | None = None) -> int:
        """Delete every finished job whose results have expired; returns how many."""
        now = time.time() if now is None else now
        with self._lock:
            expired = [j.id for j in self._jobs.values()
                       if j.state in ("done", "failed") and j.expires is not None and j.expires <= now]
        return sum(self.delete(job_id) for job_id in expired)

    def stats(self) -> dict[str, int]:
        with self._lock:
            states = [j.state for j in self._jobs.values()]
            waiting = self._waiting
        return {"jobs": len(states), "waiting": waiting, "running": states.count("running"),
                "workers": self.config.workers, "queue_limit": self.config.queue_limit}

    # ------------------------------------------------------------------ threads
    def _work(self, preloaded: threading.Barrier | None) -> None:
        runner = self._runner_factory(self.config)
        if preloaded is not None:
            try:
                runner.preload()
            except Exception as e:
                log.exception("loading the models failed")
                self._preload_errors.append(f"{type(e).__name__}: {e}")
                return
            finally:
                preloaded.wait()
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                self._waiting -= 1
            if job.expires == 0.0:  # deleted while queued
                self._finish(job, "failed", "deleted before it ran")
                continue
            with job.lock:
                job.state, job.started = "running", time.time()
            try:
                runner.run(job, deadline=job.started + self.config.job_timeout_s)
                state, message = ("failed", "cancelled") if job.is_cancelled() else ("done", "")
            except Cancelled:
                state, message = "failed", "cancelled"
            except Exception as e:  # a broken job must never stop the worker
                log.exception("job %s failed", job.id)
                state, message = "failed", f"internal error: {type(e).__name__}: {e}"
            self._finish(job, state, message)

    def _finish(self, job: Job, state: str, message: str) -> None:
        deleted = job.expires == 0.0
        with job.lock:
            job.state, job.message, job.finished = state, message, time.time()
            job.expires = 0.0 if deleted else job.finished + self.config.result_ttl_s
        log.info("job %s %s in %.1fs", job.id, state, job.finished - (job.started or job.created))
        if deleted:
            self.delete(job.id)

    def _sweep_loop(self) -> None:
        interval = max(0.2, min(30.0, self.config.result_ttl_s / 4))
        while not self._stop.wait(interval):
            try:
                self.sweep()
            except Exception:
                log.exception("sweeping expired jobs failed")
