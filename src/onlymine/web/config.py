"""Server configuration: the model allowlist, presets and every limit, from code, CLI flags or environment.

Users choose only *names* from these lists; a model spec (and so any path) comes from the operator, never from
a request.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from onlymine.settings import PRESET_NAMES, ProtectSettings

DEFAULT_AUTHORIZED = ("torchvision:mobilenet_v2",)
DEFAULT_UNAUTHORIZED = ("efficientnet-lite:lite0", "efficientnet-lite:lite1", "efficientnet-lite:lite2")
ENV_PREFIX = "ONLYMINE_SERVE_"


def _default_presets() -> dict[str, dict[str, Any]]:
    return {name: {"preset": name} for name in PRESET_NAMES}


@dataclass(frozen=True)
class ServerConfig:
    """Everything the operator decides; requests can only pick names from ``authorized`` and ``presets``.

    Attributes:
        authorized: model specs a user may pick as the authorized model (first is the default).
        unauthorized: model specs run as judges on every result (never used while protecting).
        presets: name -> keyword arguments of :meth:`ProtectSettings.build` (``preset``, ``steps``, ...).
        default_preset: preset used when a request names none.
        max_upload_bytes: largest single file.
        max_request_bytes: largest request body (all files together).
        max_pixels: largest image (width x height), checked from the header before decoding.
        max_files: most files in one job.
        workers: jobs protected in parallel (each worker thread owns its own models).
        queue_limit: jobs waiting for a worker; more are refused with 429.
        result_ttl_s: seconds a finished job's files are kept before they are deleted.
        request_timeout_s: longest time one HTTP request (e.g. a slow upload) may take.
        job_timeout_s: a job still running after this long stops after its current image.
        cors_origins: origins allowed by CORS; empty (the default) turns CORS off.
        data_dir: where job folders live (a fresh temporary folder when ``None``).
        device: torch device for the models.
        torch_threads: ``torch.set_num_threads`` at start-up; ``None``: :meth:`threads`, which leaves one core to
            the web threads (docs/web.md: with every core busy in the attack, a client polling for progress made a
            two-step job 20x slower).
        preload: load every worker's models at start-up instead of on the first job.
    """

    authorized: tuple[str, ...] = DEFAULT_AUTHORIZED
    unauthorized: tuple[str, ...] = DEFAULT_UNAUTHORIZED
    presets: dict[str, dict[str, Any]] = field(default_factory=_default_presets)
    default_preset: str = "mid"
    max_upload_bytes: int = 20 * 2**20
    max_request_bytes: int = 100 * 2**20
    max_pixels: int = 16_000_000
    max_files: int = 20
    workers: int = 1
    queue_limit: int = 32
    result_ttl_s: float = 3600.0
    request_timeout_s: float = 60.0
    job_timeout_s: float = 3600.0
    cors_origins: tuple[str, ...] = ()
    data_dir: Path | None = None
    device: str = "cpu"
    torch_threads: int | None = None
    preload: bool = False

    def __post_init__(self) -> None:
        if not self.authorized:
            raise ValueError("the server needs at least one authorized model spec")
        if not self.presets:
            raise ValueError("the server needs at least one preset")
        if self.default_preset not in self.presets:
            object.__setattr__(self, "default_preset", next(iter(self.presets)))
        for name, kwargs in self.presets.items():
            try:
                ProtectSettings.build(**{"preset": None, **kwargs})
            except (TypeError, ValueError) as e:
                raise ValueError(f"preset {name!r}: {e}") from e
        for name in ("max_upload_bytes", "max_request_bytes", "max_pixels", "max_files", "workers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.queue_limit < 0:
            raise ValueError("queue_limit must be >= 0")

    def threads(self) -> int:
        """Torch threads per process: ``torch_threads``, else ``(cores - 1) // workers`` and at least 1. PyTorch's
        OpenMP threads spin while they wait for work; when they hold every core, the thread serving requests
        (holding Python's GIL) is starved, and the attack waits on it at every operation."""
        if self.torch_threads:
            return int(self.torch_threads)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, (cores - 1) // max(1, self.workers))

    def settings(self, model: str, preset: str) -> ProtectSettings:
        """The protection settings of an allowlisted model and a configured preset (PNG output)."""
        kwargs = {"preset": None, **self.presets[preset]}
        return ProtectSettings.build(**kwargs, model=model, fmt="png")

    def public(self) -> dict[str, Any]:
        """What the page and API clients may know: names, budgets and limits (no paths)."""
        presets = {}
        for name in self.presets:
            s = self.settings(self.authorized[0], name)
            c = s.config
            presets[name] = {"eps": c.eps, "eps_255": round(c.eps * 255, 2), "alpha": getattr(c, "alpha", None),
                             "steps": getattr(c, "steps", None)}
        return {
            "authorized": list(self.authorized),
            "unauthorized": list(self.unauthorized),
            "presets": presets,
            "default_preset": self.default_preset,
            "limits": {
                "max_upload_bytes": self.max_upload_bytes,
                "max_request_bytes": self.max_request_bytes,
                "max_pixels": self.max_pixels,
                "max_files": self.max_files,
                "queue_limit": self.queue_limit,
                "result_ttl_s": self.result_ttl_s,
            },
        }

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> ServerConfig:
        """Defaults, then ``ONLYMINE_SERVE_<FIELD>`` variables, then ``overrides`` (``None`` values ignored).

        Tuples are comma-separated (``ONLYMINE_SERVE_UNAUTHORIZED=efficientnet-lite:lite0,...``) and
        ``ONLYMINE_SERVE_PRESETS`` is JSON (``{"fast": {"preset": "low", "steps": 10}}``).
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(f.name, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values) if values else cls()


_TUPLES = {"authorized", "unauthorized", "cors_origins"}
_INTS = {"max_upload_bytes", "max_request_bytes", "max_pixels", "max_files", "workers", "queue_limit", "torch_threads"}
_FLOATS = {"result_ttl_s", "request_timeout_s", "job_timeout_s"}


def _parse(name: str, raw: str) -> Any:
    """One environment value -> the field's type."""
    try:
        if name in _TUPLES:
            return tuple(s.strip() for s in raw.split(",") if s.strip())
        if name in _INTS:
            return int(raw)
        if name in _FLOATS:
            return float(raw)
        if name == "presets":
            value = json.loads(raw)
            if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
                raise ValueError("expected a JSON object of objects")
            return value
        if name == "preload":
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if name == "data_dir":
            return Path(raw)
        return raw
    except ValueError as e:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r}: {e}") from e
