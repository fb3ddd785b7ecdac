"""The FastAPI app: the page, the JSON API (``/api``), and its OpenAPI documentation (``/docs``)."""

from __future__ import annotations

import asyncio
import logging
import re
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from onlymine.web.config import ServerConfig
from onlymine.web.jobs import Job, JobManager, QueueFull, Runner
from onlymine.web.limits import BodyTooLarge, LimitsMiddleware
from onlymine.web.schemas import Error, Health, JobStatus
from onlymine.web.uploads import StoredUpload, UploadRejected, download_name, store_upload

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
FORM_FIELDS = ("files", "model", "preset")
JOB_ID = PathParam(pattern=r"^[0-9a-f]{32}$", description="job id returned by POST /api/jobs")
_MODEL_FILE = re.compile(r"(^(onnx|torchscript|file)\s*:)|[/\\]|\.(onnx|pt|pth|ckpt|bin|pkl|safetensors)\s*$", re.I)
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": Error} for code in (400, 404, 408, 409, 413, 415, 422, 429)}

UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": ["files"],
            "properties": {
                "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                          "description": "one or more photos (PNG, JPEG, WebP, TIFF, BMP; type read from content)"},
                "model": {"type": "string", "description": "an authorized model name from GET /api/config"},
                "preset": {"type": "string", "description": "a preset name from GET /api/config"},
            },
        }}},
    }
}


def create_app(config: ServerConfig | None = None,
               runner_factory: Callable[[ServerConfig], Runner] | None = None) -> FastAPI:
    """Build the app. ``runner_factory`` defaults to :class:`onlymine.web.runner.JobRunner`."""
    cfg = config or ServerConfig()
    if runner_factory is None:
        from onlymine.web.runner import JobRunner

        runner_factory = JobRunner
    manager = JobManager(cfg, runner_factory)
    validate_limiter = anyio.CapacityLimiter(2)  # full decodes of uploads at a time (bounds memory)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        import torch

        torch.set_num_threads(cfg.threads())
        await anyio.to_thread.run_sync(manager.start)
        log.info("serving with %d worker(s); job data in %s", cfg.workers, manager.root)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(manager.stop)

    app = FastAPI(title="onlymine", version="1", lifespan=lifespan,
                  description="Protect photos so that only the model you authorize can read them "
                              "(feature map distortion). Submit a job, poll it, download the results.")
    app.state.config = cfg
    app.state.jobs = manager
    if cfg.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cfg.cors_origins),
                           allow_methods=["GET", "POST", "DELETE"])
    app.add_middleware(LimitsMiddleware, max_body_bytes=cfg.max_request_bytes, timeout_s=cfg.request_timeout_s)

    @app.exception_handler(RequestValidationError)
    async def one_line(_request: Request, exc: RequestValidationError) -> JSONResponse:
        """A malformed request answers 422 with one line, like every other error (not FastAPI's list)."""
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("path", "query", "body"))
            parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
        return JSONResponse(status_code=422, content={"detail": "; ".join(parts) or "invalid request"})

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/health", response_model=Health, tags=["service"])
    async def health() -> dict[str, Any]:
        """Whether the server answers, and how busy it is."""
        return {"status": "ok", **manager.stats()}

    @app.get("/api/config", tags=["service"])
    async def public_config() -> dict[str, Any]:
        """The authorized models and presets a job may name, the unauthorized models that verify every result,
        and the upload limits."""
        return cfg.public()

    @app.post("/api/jobs", status_code=202, response_model=JobStatus, responses=_ERRORS, tags=["jobs"],
              openapi_extra=UPLOAD_SCHEMA)
    async def submit(request: Request) -> JSONResponse:
        """Upload photos as ``multipart/form-data`` (``files``, optional ``model`` and ``preset``) and queue a job.

        Answers 202 with the job's status; poll ``status_url`` until ``state`` is ``done``. Refusals: 400 bad
        request (unknown field, model or preset; path in a file name; malformed multipart), 413 too large (file,
        request, pixels, number of files), 415 not a supported image, 422 corrupt image, 429 queue full.
        """
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            raise HTTPException(415, "send the photos as multipart/form-data (field 'files')")
        if not manager.has_room():
            return _queue_full(cfg)
        model, preset, files = await _read_form(request, cfg)
        job = manager.new_job(model, preset)
        try:
            job.uploads = await _store_all(files, job, cfg, validate_limiter)
        except UploadRejected as e:
            manager.discard(job)
            raise HTTPException(e.status, e.message) from None
        finally:
            for f in files:
                await f.close()
        try:
            manager.submit(job)
        except QueueFull:
            return _queue_full(cfg)
        return JSONResponse(_status(job, request), status_code=202, headers={"Location": f"/api/jobs/{job.id}"})

    @app.get("/api/jobs/{job_id}", response_model=JobStatus, responses=_ERRORS, tags=["jobs"])
    async def status(request: Request, job_id: str = JOB_ID) -> dict[str, Any]:
        """A job's state, progress and, per image, the verification and download links."""
        return _status(_job(manager, job_id), request)

    @app.delete("/api/jobs/{job_id}", status_code=204, responses=_ERRORS, tags=["jobs"])
    async def delete(job_id: str = JOB_ID) -> None:
        """Delete a job and all its files now (otherwise they are deleted when they expire)."""
        if not manager.delete(job_id):
            raise HTTPException(404, f"job {job_id} not found (unknown, deleted or expired)")

    @app.get("/api/jobs/{job_id}/images/{index}/{kind}", responses=_ERRORS, tags=["jobs"],
             response_class=FileResponse)
    async def image_file(index: int, kind: str, job_id: str = JOB_ID) -> FileResponse:
        """``kind``: ``protected`` (the PNG to keep, as an attachment), ``before`` (preview of the original) or
        ``diff`` (preview of the amplified difference)."""
        job = _job(manager, job_id)
        suffixes = {"protected": ".png", "before": "-before.jpg", "diff": "-diff.jpg"}
        if kind not in suffixes:
            raise HTTPException(404, f"unknown file kind {kind!r}; use one of {sorted(suffixes)}")
        if not 0 <= index < len(job.uploads):
            raise HTTPException(404, f"job {job_id} has no image {index}")
        path = job.out_dir / f"{index:03d}{suffixes[kind]}"
        if not _finished(job, index) or not path.is_file():
            raise HTTPException(404, f"image {index} of job {job_id} is not ready")
        if kind == "protected":
            return FileResponse(path, media_type="image/png", filename=download_name(job.uploads[index].name))
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.get("/api/jobs/{job_id}/zip", responses=_ERRORS, tags=["jobs"], response_class=FileResponse)
    async def zip_file(job_id: str = JOB_ID) -> FileResponse:
        """Every protected file of a finished job in one zip."""
        job = _job(manager, job_id)
        if job.state != "done":
            raise HTTPException(409, f"job {job_id} is {job.state}; the zip is ready when it is done")
        path = await anyio.to_thread.run_sync(_build_zip, job)
        return FileResponse(path, media_type="application/zip", filename=f"onlymine-{job_id[:8]}.zip")

    return app


async def _read_form(request: Request, cfg: ServerConfig) -> tuple[str, str, list[UploadFile]]:
    """Parse and check the multipart form; every problem is an HTTPException with a one-line message."""
    try:
        form = await request.form(max_files=cfg.max_files, max_fields=len(FORM_FIELDS), max_part_size=4096)
    except BodyTooLarge as e:
        raise HTTPException(413, f"{e}; send fewer or smaller files") from None
    except StarletteHTTPException as e:  # starlette's multipart errors
        detail = str(e.detail)
        if detail.startswith("Too many files"):
            raise HTTPException(413, f"too many files: at most {cfg.max_files} per job") from None
        raise HTTPException(400, f"malformed multipart upload: {detail}") from None
    except (ValueError, KeyError, asyncio.IncompleteReadError) as e:
        raise HTTPException(400, f"malformed multipart upload: {e}") from None
    for key in form:
        if key not in FORM_FIELDS:
            extra = "; model files and paths are never accepted" if "model" in key or "path" in key else ""
            raise HTTPException(400, f"unknown form field {key!r} (accepted: {', '.join(FORM_FIELDS)}){extra}")
    files = form.getlist("files")
    if not files:
        raise HTTPException(400, "no photos: send one or more files in the form field 'files'")
    if not all(isinstance(f, UploadFile) for f in files):
        raise HTTPException(400, "the form field 'files' must hold uploaded files, not text")
    model = _text(form.get("model")) or cfg.authorized[0]
    if model not in cfg.authorized:
        why = ("model files and paths are never accepted; " if _MODEL_FILE.search(model) else
               f"model {model[:80]!r} is not offered by this server; ")
        raise HTTPException(400, f"{why}choose one of: {', '.join(cfg.authorized)}")
    preset = _text(form.get("preset")) or cfg.default_preset
    if preset not in cfg.presets:
        raise HTTPException(400, f"unknown preset {preset[:40]!r}; choose one of: {', '.join(cfg.presets)}")
    return model, preset, [f for f in files if isinstance(f, UploadFile)]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise HTTPException(400, "model and preset must be text fields, not files")
    return value.strip()


async def _store_all(files: list[UploadFile], job: Job, cfg: ServerConfig,
                     limiter: anyio.CapacityLimiter) -> list[StoredUpload]:
    stored = []
    for i, f in enumerate(files):
        if f.size is not None and f.size > cfg.max_upload_bytes:
            raise UploadRejected(413, f"{f.filename}: file is {f.size:,} bytes; this server accepts at most "
                                      f"{cfg.max_upload_bytes:,} bytes per file")
        data = await f.read(cfg.max_upload_bytes + 1)
        stored.append(await anyio.to_thread.run_sync(
            store_upload, data, f.filename, i, job.folder / "in", cfg.max_upload_bytes, cfg.max_pixels,
            limiter=limiter))
    return stored


def _queue_full(cfg: ServerConfig) -> JSONResponse:
    return JSONResponse({"detail": f"the server is busy: {cfg.queue_limit} jobs are already waiting; retry later"},
                        status_code=429, headers={"Retry-After": "10"})


def _job(manager: JobManager, job_id: str) -> Job:
    job = manager.get(job_id)
    if job is None:
        raise HTTPException(404, f"job {job_id} not found (unknown, deleted or expired)")
    return job


def _finished(job: Job, index: int) -> bool:
    with job.lock:
        return job.results[index]["status"] in ("ok", "failed")


def _status(job: Job, request: Request) -> dict[str, Any]:
    """The job's state plus the URLs of its files."""
    snap = job.snapshot()
    base = f"/api/jobs/{job.id}"
    snap["status_url"] = base
    snap["zip_url"] = f"{base}/zip" if snap["state"] == "done" else None
    for r in snap["images"]:
        if r["status"] in ("ok", "failed"):
            i = r["index"]
            r.update(protected_url=f"{base}/images/{i}/protected", before_url=f"{base}/images/{i}/before",
                     diff_url=f"{base}/images/{i}/diff")
    return snap


def _build_zip(job: Job) -> Path:
    """Write (once) the zip of a finished job's protected files, with unique safe names."""
    path = job.folder / "protected.zip"
    if path.is_file():
        return path
    tmp = path.with_suffix(".zip.tmp")
    used: set[str] = set()
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
        for i, upload in enumerate(job.uploads):
            src = job.out_dir / f"{i:03d}.png"
            if not src.is_file():
                continue
            name = download_name(upload.name)
            if name in used:
                name = download_name(upload.name, tag=f"-protected-{i + 1}")
            used.add(name)
            z.write(src, name)
    tmp.replace(path)
    return path
