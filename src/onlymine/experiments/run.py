"""The paper's protocol, for any models, judges, methods and photos: each model in turn authorized.

One *cell* is one (method, authorized model) pair: :func:`run_cell` protects the photos through the one protect
path (:func:`onlymine.protect.protect_paths`, resumable through its manifest) into the cell's folder, then scores
the saved files with every judge (:func:`onlymine.evaluate.evaluate_pairs`, cached as ``evaluation.json`` in the
same folder), before and after the robustness transforms. :func:`run_protocol` runs every cell of a
:class:`Protocol` into ``OUT/<method>/<authorized>/``; the ablations (:mod:`onlymine.ablation.runner`) run their
settings through the same :func:`run_cell`. The "restricted" set holds the images that every judge gets right
when clean.

An experiment module (``experiments/imagenet.py``, ``detection.py``) builds a :class:`Protocol` and calls
:func:`run_protocol`; :mod:`~onlymine.experiments.aggregate` summarises the result and
:mod:`~onlymine.experiments.outputs` writes the results files, plots, HTML and Markdown reports.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from onlymine import report
from onlymine.evaluate import TRANSFORMS, Evaluation, Pair, evaluate_pairs
from onlymine.experiments.methods import CLEAN, Method
from onlymine.judges import Judge
from onlymine.models import Classifier
from onlymine.protect import Protector, protect_paths
from onlymine.settings import ProtectSettings

log = logging.getLogger(__name__)

ProtectorLike = Protector | Callable[[], Protector]


@dataclass
class Protocol:
    """Everything one run needs.

    Attributes:
        name: experiment name (``imagenet``).
        files: photos, in order; ``names`` (relative to ``root``) are what labels and subsets see.
        root: folder the names are relative to.
        authorized: model specs, each authorized in turn (``models``: every model, the judges' specs).
        judges: every model that scores the files (the authorized one is among them, see ``judge_of``).
        load_model: spec -> loaded :class:`Classifier` (reuse the judges' models where possible).
        methods: the rows of the comparison.
        labels: ground truth by name (``None``: agreement only).
        subsets: name -> predicate on an image name (``all`` should accept everything).
        judge_of: authorized spec -> the name of its judge.
        overrides: eps/alpha/steps/lam/... applied to every method's settings (``None`` values ignored).
    """

    name: str
    files: list[Path]
    root: Path
    authorized: list[str]
    judges: list[Judge]
    load_model: Callable[[str], Classifier]
    methods: list[Method]
    out: Path
    labels: Mapping[str, Any] | None = None
    subsets: dict[str, Callable[[str], bool]] = field(default_factory=lambda: {"all": lambda n: True})
    judge_of: Callable[[str], str] = lambda spec: spec
    overrides: dict[str, Any] = field(default_factory=dict)
    transforms: Sequence[str] = tuple(TRANSFORMS)
    models: list[str] = field(default_factory=list)  # every model of the run (default: the authorized ones)
    report_only: bool = False  # protect nothing: report the methods whose every cell an earlier run finished
    device: str = "cpu"
    batch_size: int = 8
    progress: bool = True

    def name_of(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return path.name


@dataclass
class CellRun:
    """What one cell produced: the resolved settings, protect counts, the saved file of each input, the manifest
    rows verified in this invocation, and the evaluation of the saved files (``None`` when not evaluated)."""

    folder: Path
    settings: dict[str, Any]
    protect: dict[str, Any]
    outputs: dict[Path, Path]
    rows: list[dict[str, Any]]
    evaluation: Evaluation | None = None


@dataclass
class Job:
    """One (method, authorized model) cell of a protocol: where its files are and what came out."""

    method: Method
    authorized: str
    folder: Path
    surrogates: list[str] = field(default_factory=list)  # authorized specs used as surrogates: not scored
    settings: dict[str, Any] = field(default_factory=dict)
    protect: dict[str, Any] = field(default_factory=dict)
    evaluation: Evaluation | None = None


@dataclass
class ProtocolResult:
    protocol: Protocol
    jobs: list[Job]
    clean: Evaluation
    restricted: set[str]
    wall_s: float
    started: str

    def job(self, method: str, authorized: str) -> Job:
        for j in self.jobs:
            if j.method.key == method and j.authorized == authorized:
                return j
        raise KeyError((method, authorized))


def safe_name(spec: str) -> str:
    """A folder name for a model spec (``torchvision:mobilenet_v2`` -> ``torchvision_mobilenet_v2``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", spec).strip("_")


def protect_cell(files: Sequence[Path], folder: Path, settings: ProtectSettings, protector: ProtectorLike,
                 batch_size: int = 8, progress: bool = True) -> CellRun:
    """Protect ``files`` into ``folder`` (resumable) with ``protector`` (a :class:`Protector` or a zero-argument
    factory, called once the output folder is checked); the returned cell is not evaluated yet."""
    made: list[Protector] = []

    def make() -> Protector:
        made.append(protector if isinstance(protector, Protector) else protector())
        return made[0]

    # a baseline is expected to lose the authorized prediction: its failed files are scored too, not redone
    summary = protect_paths(list(files), folder, settings, batch_size=batch_size, resume=True, progress=progress,
                            protector=make, retry_failed=False)
    outputs = {Path(o.path): Path(o.row["output"]) for o in summary.outcomes
               if o.status in ("ok", "failed", "skipped") and o.row.get("output")}
    rows = [o.row for o in summary.outcomes if o.row.get("verified")]
    for o in summary.outcomes:
        if o.status == "error":
            log.warning("%s", o.message)
    failed = summary.count("failed")
    if failed:
        log.warning("%s: %d file(s) lost the authorized prediction (kept as NAME.failed.png)", folder, failed)
    stats = {"ok": sum(r["status"] == "ok" for r in rows), "failed_verification": failed,
             "errors": summary.count("error"), "seconds_per_image": report.mean(r.get("seconds") for r in rows),
             "seconds_total": round(sum(float(r.get("seconds") or 0.0) for r in rows), 1),
             "retried": sum(int(r.get("attempts", 1)) > 1 for r in rows)}
    resolved = made[0].settings if made else settings
    return CellRun(folder, resolved.to_dict(), stats, outputs, rows)


def run_cell(files: Sequence[Path], names: Sequence[str], folder: Path, settings: ProtectSettings,
             protector: ProtectorLike, judges: Sequence[Judge], authorized: str | None,
             labels: Mapping[str, Any] | None = None, transforms: Sequence[str] = ("crop",),
             clean_cache: dict[tuple[str, str], Any] | None = None, batch_size: int = 8, progress: bool = True,
             desc: str = "evaluate") -> CellRun:
    """Protect one cell (:func:`protect_cell`), then score its saved files with ``judges`` (the one named
    ``authorized`` in the authorized role); ``names[i]`` is what labels and reports call ``files[i]``."""
    cell = protect_cell(files, folder, settings, protector, batch_size, progress)
    pairs = [Pair(n, f, cell.outputs[f]) for n, f in zip(names, files, strict=True) if f in cell.outputs]
    cell.evaluation = evaluate_pairs(pairs, judges, authorized=authorized, labels=labels, transforms=transforms,
                                     cache_dir=folder, clean_cache=clean_cache, batch_size=batch_size,
                                     progress=progress, desc=desc)
    return cell


def run_protocol(p: Protocol) -> ProtocolResult:
    """Evaluate the clean photos, then run every (method, authorized) cell (see the module docstring)."""
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    names = [p.name_of(f) for f in p.files]
    needs_three = [m.key for m in p.methods if m.surrogate]
    if needs_three and len(p.authorized) < 3:  # checked before any protection runs
        raise ValueError(f"method(s) {needs_three} need 3 or more models: one authorized, one surrogate and at "
                         "least one held out to judge")
    if len(set(names)) != len(names):
        raise ValueError("two photos have the same name; give each a distinct relative path")
    if p.report_only:
        p.methods = [m for m in p.methods if m.attack is None or _finished(p, m)]
    clean_cache: dict[tuple[str, str], Any] = {}
    clean = evaluate_pairs([Pair(n, f, f) for n, f in zip(names, p.files, strict=True)], p.judges, authorized=None,
                           labels=p.labels, transforms=p.transforms, cache_dir=p.out / CLEAN,
                           clean_cache=clean_cache, batch_size=p.batch_size, progress=p.progress,
                           desc="evaluate clean")
    restricted = restricted_set(clean, names)
    log.info("%d of %d images are classified correctly by every judge when clean", len(restricted), len(names))
    jobs: list[Job] = []
    for m in p.methods:
        for i, spec in enumerate(p.authorized):
            job = Job(m, spec, p.out / m.key / safe_name(spec))
            jobs.append(job)
            if m.attack is None:
                job.evaluation = clean
                continue
            if m.surrogate:
                job.surrogates = [p.authorized[(i + 1) % len(p.authorized)]]
            s = m.settings(spec, p.overrides, job.surrogates)
            log.info("protecting with %s, authorized %s -> %s", m.label, spec, job.folder)
            cell = run_cell(p.files, names, job.folder, s, _protector(s, p, spec), p.judges, p.judge_of(spec),
                            labels=p.labels, transforms=p.transforms, clean_cache=clean_cache,
                            batch_size=p.batch_size, progress=p.progress, desc=f"evaluate {m.key}/{safe_name(spec)}")
            job.settings, job.protect, job.evaluation = cell.settings, cell.protect, cell.evaluation
    return ProtocolResult(p, jobs, clean, restricted, time.perf_counter() - t0, started)


def _finished(p: Protocol, m: Method) -> bool:
    """Whether every cell of ``m`` has an evaluation and a manifest row per photo (``report_only``)."""
    for spec in p.authorized:
        folder = p.out / m.key / safe_name(spec)
        manifest = folder / "manifest.jsonl"
        rows = len(manifest.read_text().splitlines()) if manifest.is_file() else 0
        if not (folder / "evaluation.json").is_file() or rows < len(p.files):
            log.warning("--report-only: %s is not finished for %s (%d of %d photos): left out", m.key, spec, rows,
                        len(p.files))
            return False
    return True


def _protector(s: ProtectSettings, p: Protocol, spec: str) -> Callable[[], Protector]:
    return lambda: Protector(s, device=p.device, model=p.load_model(spec))


def restricted_set(clean: Evaluation, names: Sequence[str]) -> set[str]:
    """Images every judge classifies correctly when clean (unlabelled images are never in it)."""
    ok = dict.fromkeys(names, True)
    seen: set[str] = set()
    for r in clean.predictions:
        if r["transform"] != "crop":
            continue
        seen.add(r["image"])
        if r["clean_correct"] is None or r["clean_correct"] < 1:
            ok[r["image"]] = False
    return {n for n, v in ok.items() if v and n in seen}
