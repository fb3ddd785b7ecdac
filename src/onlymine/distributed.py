"""Protection at scale on Ray Data: the inputs as a Ray dataset, batches protected by an actor pool, one manifest.

Each actor loads the authorized model once and runs the one protect loop (:class:`onlymine.protect.Protector`
through :class:`onlymine.protect.paths.Run`), so outputs follow the same rules as a local run: written atomically,
never over a file onlymine did not write, each claimed in ``OUT/.onlymine/claims`` before it is published. The
driver plans the run (what is already done, what belongs to someone else), appends every returned row to the one
``manifest.jsonl``, and resumes like a local run. An actor that dies mid-batch is restarted and its batch retried:
files it had published are its own (their claims say so), so the retry replaces them, and the row of each file
reaches the manifest once. On a cluster of several machines the inputs and the output folder must be paths every
node sees (a shared filesystem).

    import ray, onlymine
    rows = onlymine.protect_dataset(ray.data.from_items([{"input": "a.jpg", "output": "out/a.png"}]), settings,
                                    "out", workers=2)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from onlymine import io
from onlymine.attacks.config import ConfigError
from onlymine.protect.build import build_attack
from onlymine.protect.loop import failed_name
from onlymine.protect.manifest import Claims, Ledger, Outcome, Summary, error_row, source
from onlymine.protect.paths import Run, make_protector
from onlymine.settings import ProtectSettings

log = logging.getLogger(__name__)

RETRIES = 3  # restarts of a lost actor, and tries of its batch: an input that kills every worker ends the run


class ProtectWorker:
    """One actor of the pool: a :class:`~onlymine.protect.Protector` loaded once, protecting batches of rows
    ``{"input": path, "output": target}`` into ``out_dir`` and answering one manifest row (JSON) per input."""

    def __init__(self, settings: dict[str, Any], out_dir: str, device: str = "auto", max_pixels: int | None = None,
                 retry_failed: bool = True) -> None:
        import torch

        threads = _assigned_cpus()
        if threads:  # the actor's share of the node, not the one thread Ray's environment defaults to
            torch.set_num_threads(threads)
        self.settings = ProtectSettings.from_dict(settings)
        self.prot = make_protector(None, self.settings, device)
        self.out, self.max_pixels, self.retry_failed = out_dir, max_pixels, retry_failed

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        # What may be replaced was decided by the driver from the manifest (``mine``: the target, ``failed_mine``:
        # its failed name, are onlymine's); the claims add what a lost try of this very batch published. The
        # manifest itself is not read here: that would cost every batch the whole run's rows.
        out, n = Path(self.out), len(batch["input"])
        claims = Claims(out)
        col = {k: list(batch[k]) if k in batch else [None] * n for k in ("mine", "failed", "failed_mine")}
        done: list[Outcome] = []
        items = []
        known: dict[str, str] = {}
        s = self.prot.settings
        loaded = []
        for k, (inp, target) in enumerate(zip(batch["input"], batch["output"], strict=True)):
            path, target = Path(str(inp)), Path(str(target))
            try:
                im = io.load_image(path, **({"max_pixels": self.max_pixels} if self.max_pixels else {}))
            except io.ImageError as e:
                done.append(Outcome(path, "error", str(e), error_row(path, str(e), s), "unreadable"))
                continue
            failed = Path(str(col["failed"][k])) if col["failed"][k] else failed_name(target)
            if col["mine"][k]:
                known[source(target)] = im.sha256
            if col["failed_mine"][k]:
                known[source(failed)] = im.sha256
            loaded.append((im, target))
        run = Run([], out, s, check=False, ledger=Ledger(outputs=known, claims=claims))
        for im, target in loaded:
            item = run.admit(im, target, s.key(), resume=True, retry_failed=self.retry_failed)
            (done if isinstance(item, Outcome) else items).append(item)
        if items:
            done += run.protect(self.prot, items)
        return {"path": [str(o.path) for o in done], "status": [o.status for o in done],
                "message": [o.message for o in done], "reason": [o.reason for o in done],
                "row": [json.dumps(o.row, default=str) for o in done],
                "stopped": [run.summary.stopped or "" for _ in done]}


def protect_dataset(ds: Any, settings: ProtectSettings, out_dir: str | Path, workers: int = 1, batch_size: int = 8,
                    device: str = "auto", gpus_per_worker: float | None = None, max_pixels: int | None = None,
                    retry_failed: bool = True, cpus_per_worker: float | None = None) -> Any:
    """A Ray dataset of outcomes (``path, status, message, reason, row``: ``row`` the manifest row as JSON) for the
    rows ``{"input", "output"}`` of ``ds``, protected by ``workers`` actors (one GPU each where the cluster has
    GPUs, unless ``gpus_per_worker`` says otherwise; on CPUs each actor takes an equal share of the cluster's CPUs
    unless ``cpus_per_worker`` says otherwise). Lazy, like every Ray dataset: iterate it to run it."""
    import ray
    import ray.data

    res = ray.cluster_resources() if ray.is_initialized() else {}
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if res.get("GPU", 0) >= 1 else 0.0
    if cpus_per_worker is None:
        cpus_per_worker = 1.0 if gpus_per_worker else max(1.0, float(int(res.get("CPU", 1) // workers)))
    return ds.map_batches(
        ProtectWorker, batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=workers),
        num_gpus=gpus_per_worker, num_cpus=cpus_per_worker,
        fn_constructor_kwargs={"settings": settings.to_dict(), "out_dir": str(out_dir),
                               "device": "cuda" if gpus_per_worker else device, "max_pixels": max_pixels,
                               "retry_failed": retry_failed},
        max_restarts=RETRIES, max_task_retries=RETRIES)  # a lost actor comes back and its batch runs again


def connect(address: str, workers: int) -> None:
    """``local``: start a cluster on this machine; ``auto``: join the one ``ray start`` made here; else its address."""
    import ray

    if ray.is_initialized():
        return
    kw: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False}
    try:
        if address == "local":
            ray.init(num_cpus=max(workers, os.cpu_count() or 1), **kw)
        else:
            ray.init(address=address, **kw)
    except (ConnectionError, RuntimeError, ValueError) as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--ray {address}: cannot start or join a Ray cluster ({why})") from e


def protect_ray(inputs: Sequence[str | Path], out_dir: str | Path, settings: ProtectSettings, address: str = "local",
                workers: int = 1, batch_size: int = 8, device: str = "auto", resume: bool = False,
                max_pixels: int | None = None, on_outcome: Callable[[Outcome], None] | None = None,
                on_note: Callable[[str], None] | None = None, retry_failed: bool = True) -> Summary:
    """:func:`onlymine.protect.protect_paths` on a Ray cluster: the same checks, outputs and manifest."""
    if batch_size < 1 or workers < 1:
        raise ConfigError(f"--batch-size and --workers must be at least 1, got {batch_size} and {workers}")
    try:
        import ray.data  # noqa: F401  (before any model loads or file is hashed)
    except ImportError as e:
        raise ConfigError(f"--ray needs the ray package ({e}): pip install 'onlymine[ray]'") from e
    run = Run(inputs, out_dir, settings, on_note)
    prot = make_protector(None, settings, device)  # resolves the settings for config.json, as a local run does
    build_attack(prot.fast_model, prot.settings, prot.surrogates)  # a bad layer is one line here, not per actor
    run.begin(prot)
    s = prot.settings
    for e in run.errors:
        run.emit(Outcome(Path(e.path), "error", str(e), error_row(Path(e.path), str(e), s), "unreadable"), on_outcome)
    todo = []
    for path in run.files:
        target = run.targets[path]
        try:
            sha = io.sha256_file(path)
        except OSError as e:
            run.emit(Outcome(path, "error", f"{path}: cannot read file ({e.strerror or e})", {}, "unreadable"),
                     on_outcome)
            continue
        item = run.admit(_Stub(path, sha), target, s.key(), resume, retry_failed)
        if isinstance(item, Outcome):
            run.emit(item, on_outcome)
        else:  # resolved paths: actors may run in another working folder, or on another machine
            _, _, mine, failed = item
            todo.append({"input": source(path), "output": source(target), "mine": bool(mine),
                         "failed": source(failed) if failed is not None else "",
                         "failed_mine": failed is not None and failed.exists()})
    if not todo:
        return run.summary
    import ray.data

    connect(address, workers)
    ds = ray.data.from_items(todo, override_num_blocks=max(1, min(len(todo), workers * 4)))
    seen: set[str] = set()
    rows = protect_dataset(ds, s, Path(source(run.out)), workers, batch_size, device, max_pixels=max_pixels,
                           retry_failed=retry_failed).iter_rows()
    try:
        for r in rows:
            if r["path"] in seen:  # a retried batch answers once; never two rows for one input
                continue
            seen.add(r["path"])
            run.emit(Outcome(Path(r["path"]), r["status"], r["message"], json.loads(r["row"]), r["reason"]),
                     on_outcome)
            if r.get("stopped") and not run.summary.stopped:  # a full disk on a worker stops the whole run
                run.summary.stopped = r["stopped"]
                break
    except Exception as e:  # a batch that failed after its retries (Ray wraps the cause): one line, not a trace
        why = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        log.debug("Ray run stopped", exc_info=True)
        run.summary.stopped = (f"the Ray run stopped after {len(seen)} of {len(todo)} file(s): {why}; "
                               "what was written stays, --resume continues")
    return run.summary


def _assigned_cpus() -> int:
    """CPUs Ray assigned to this actor (0 outside Ray)."""
    try:
        import ray

        return int(ray.get_runtime_context().get_assigned_resources().get("CPU", 0))
    except Exception:  # not in a Ray worker, or an older Ray: keep torch's default
        return 0


class _Stub:
    """What :meth:`Run.admit` reads of an image, without decoding it (the driver only hashes the file)."""

    def __init__(self, path: Path, sha256: str) -> None:
        self.path, self.sha256 = path, sha256
