"""The paper's protocol, for any models, judges, methods and photos: each model in turn authorized.

For every method (clean, FMD, baselines) and every authorized model, the photos are protected through the one
path (:func:`onlymine.protect.protect_paths` with a :class:`~onlymine.protect.Protector`) into
``OUT/<method>/<authorized>/``, then the saved files are scored by every judge (:mod:`onlymine.evaluate`),
before and after the robustness transforms. Both steps resume: protect via its manifest, evaluation via
``evaluation.json`` in the same folder.

An experiment module (``experiments/imagenet.py``, ``faces.py``, ``detection.py``) builds a :class:`Protocol`
(its files, labels, subsets, authorized specs, judges, methods) and calls :func:`run_protocol`, then
:func:`write_outputs` for the shared results files, plots and HTML report, and :func:`markdown_report` for
the Markdown document. The "restricted" set holds the images that every judge gets right when clean.
"""

from __future__ import annotations

import logging
import math
import platform
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from onlymine import report
from onlymine.evaluate import TRANSFORMS, Evaluation, Pair, evaluate_pairs, quality_summary, summarize
from onlymine.judges import Judge
from onlymine.models import Classifier
from onlymine.protect import Protector, protect_paths
from onlymine.settings import DEFAULT_PRESET, KEY_NEUTRAL, ProtectSettings

log = logging.getLogger(__name__)

CLEAN = "clean"


@dataclass(frozen=True)
class Method:
    """A protection method of the comparison. ``attack=None`` is the unprotected (clean) row.

    ``paper`` starts from ProtectSettings' paper mode, else from onlymine's defaults (``preset`` and the
    per-model layer/lam); ``fixed`` are settings this method always uses. ``surrogate``: the next authorized model
    of the protocol (in turn) is a public surrogate of the attack and is held out of that row's scores.
    """

    key: str
    label: str
    attack: str | None
    paper: bool = False
    fixed: tuple[tuple[str, Any], ...] = ()
    preset: str = DEFAULT_PRESET
    surrogate: bool = False

    def settings(self, spec: str, overrides: Mapping[str, Any] | None = None) -> ProtectSettings:
        if self.attack is None:
            raise ValueError(f"method {self.key} protects nothing")
        o = {k: v for k, v in (overrides or {}).items() if v is not None}
        if self.attack not in ("fmd", "fmd+"):
            o.pop("lam", None)
        return ProtectSettings.build(preset=self.preset, paper=self.paper, model=spec, attack=self.attack,
                                     **dict(self.fixed), **o)


OLD_MID = (("steps", 100), ("views", 1), ("shuffle", 0), ("robust_keep", False))  # the mid preset before BSR views (its recorded settings keys)
METHODS: dict[str, Method] = {m.key: m for m in (
    Method(CLEAN, "Clean", None),
    Method("fmd-paper", "FMD (paper setting)", "fmd", paper=True),
    Method("fmd", "FMD (onlymine layer/lam)", "fmd"),
    Method("fmd-plus", "FMD+ (onlymine, eps 16)", "fmd+"),
    Method("fmd-plus-mid", "FMD+ mid preset (eps 8)", "fmd+", preset="mid"),
    # the mid preset before BSR views (one input-diversity view per step, 100 steps): earlier reports' fmd-plus-mid
    Method("fmd-plus-mid-di", "FMD+ mid, one DI view x 100 steps (eps 8)", "fmd+", preset="mid", fixed=OLD_MID),
    Method("fmd-plus-fia", "FMD+ + FIA (importance 8, eps 16)", "fmd+", fixed=(("importance", 8),)),
    Method("fmd-plus-mid-fia", "FMD+ mid + FIA (importance 8, eps 8)", "fmd+", preset="mid",
           fixed=(("importance", 8), *OLD_MID)),
    Method("fmd-plus-mid-bsr", "FMD+ mid + BSR views (5 per step, 50 steps, eps 8)", "fmd+", preset="mid",
           fixed=(("steps", 50), ("views", 5), ("shuffle", 3), ("robust_keep", False))),
    Method("fmd-plus-mid-bsr-rk", "FMD+ mid + BSR views + robust keep (eps 8)", "fmd+", preset="mid",
           fixed=(("steps", 50), ("views", 5), ("shuffle", 3), ("robust_keep", True))),
    Method("fmd-plus-sur", "FMD+ + next model as surrogate (held out)", "fmd+", surrogate=True),
    Method("fmd-plus-mid-sur", "FMD+ mid (one DI view x 100 steps) + next model as surrogate (held out)", "fmd+",
           preset="mid", surrogate=True, fixed=OLD_MID),
    Method("pgd", "PGD", "pgd", paper=True),
    Method("feature-only", "FeatureOnly", "feature-only", paper=True),
    Method("uniform-noise", "UniformNoise", "uniform-noise", paper=True),
)}


@dataclass
class Protocol:
    """Everything one run needs.

    Attributes:
        name: experiment name (``imagenet``).
        files: photos, in order; ``names`` (relative to ``root``) are what labels and subsets see.
        root: folder the names are relative to.
        authorized: model specs, each authorized in turn.
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
    device: str = "cpu"
    batch_size: int = 8
    progress: bool = True

    def name_of(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return path.name


@dataclass
class Job:
    """One (method, authorized model) cell: where its files are and what came out."""

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


def run_protocol(p: Protocol) -> ProtocolResult:
    """Protect (resumable) and evaluate every (method, authorized) cell; see the module docstring."""
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    names = [p.name_of(f) for f in p.files]
    needs_three = [m.key for m in p.methods if m.surrogate]
    if needs_three and len(p.authorized) < 3:  # checked before any protection runs
        raise ValueError(f"method(s) {needs_three} need 3 or more models: one authorized, one surrogate and at "
                         "least one held out to judge")
    if len(set(names)) != len(names):
        raise ValueError("two photos have the same name; give each a distinct relative path")
    clean_cache: dict[tuple[str, str], Any] = {}
    clean_pairs = [Pair(n, f, f) for n, f in zip(names, p.files, strict=True)]
    clean = evaluate_pairs(clean_pairs, p.judges, authorized=None, labels=p.labels, transforms=p.transforms,
                           cache_dir=p.out / CLEAN, clean_cache=clean_cache, batch_size=p.batch_size,
                           progress=p.progress, desc="evaluate clean")
    restricted = restricted_set(clean, names)
    log.info("%d of %d images are classified correctly by every judge when clean", len(restricted), len(names))
    jobs: list[Job] = []
    for m in p.methods:
        for i, spec in enumerate(p.authorized):
            job = Job(m, spec, p.out / m.key / safe_name(spec))
            if m.attack is None:
                job.evaluation = clean
                jobs.append(job)
                continue
            s = m.settings(spec, p.overrides)
            if m.surrogate:
                job.surrogates = [p.authorized[(i + 1) % len(p.authorized)]]
                s = replace(s, surrogates=job.surrogates)
            prot = Protector(s, device=p.device, model=p.load_model(spec))
            job.settings = prot.settings.to_dict()
            log.info("protecting with %s, authorized %s -> %s", m.label, spec, job.folder)
            summary = protect_paths(p.files, job.folder, s, batch_size=p.batch_size, resume=True,
                                    progress=p.progress, protector=prot)
            by_input = {Path(o.row["input"]): Path(o.row["output"]) for o in summary.outcomes
                        if o.status in ("ok", "failed", "skipped") and o.row.get("output")}
            rows = [o.row for o in summary.outcomes if o.row.get("verified")]
            job.protect = {
                "ok": sum(r["status"] == "ok" for r in rows),
                "failed_verification": sum(r["status"] == "failed" for r in rows),
                "errors": summary.count("error"),
                "seconds_per_image": report.mean(r.get("seconds") for r in rows),
                "seconds_total": round(sum(float(r.get("seconds") or 0.0) for r in rows), 1),
                "retried": sum(int(r.get("attempts", 1)) > 1 for r in rows),
            }
            for o in summary.outcomes:
                if o.status == "error":
                    log.warning("%s", o.message)
            pairs = [Pair(n, f, by_input[f]) for n, f in zip(names, p.files, strict=True) if f in by_input]
            job.evaluation = evaluate_pairs(
                pairs, p.judges, authorized=p.judge_of(spec), labels=p.labels, transforms=p.transforms,
                cache_dir=job.folder, clean_cache=clean_cache, batch_size=p.batch_size, progress=p.progress,
                desc=f"evaluate {m.key}/{safe_name(spec)}")
            jobs.append(job)
    return ProtocolResult(p, jobs, clean, restricted, time.perf_counter() - t0, started)


def restricted_set(clean: Evaluation, names: Sequence[str]) -> set[str]:
    """Images every judge classifies correctly when clean (unlabelled images are never in it)."""
    ok = dict.fromkeys(names, True)
    seen: set[str] = set()
    for r in clean.predictions:
        if r["transform"] != "none":
            continue
        seen.add(r["image"])
        if r["clean_correct"] is None or r["clean_correct"] < 1:
            ok[r["image"]] = False
    return {n for n, v in ok.items() if v and n in seen}


# ------------------------------------------------------------------------------------------ aggregation
def selector(res: ProtocolResult, subset: str, restricted: bool) -> Callable[[str], bool]:
    pred = res.protocol.subsets[subset]
    return lambda n: pred(n) and (not restricted or n in res.restricted)


def result_rows(res: ProtocolResult) -> list[dict[str, Any]]:
    """Long rows: method x authorized x subset x restricted x transform x judge, with quality means."""
    out = []
    for job in res.jobs:
        auth_judge = res.protocol.judge_of(job.authorized)
        excluded = surrogate_judges(res, job)
        for subset in res.protocol.subsets:
            for restricted in (True, False):
                keep = selector(res, subset, restricted)
                assert job.evaluation is not None
                q = quality_summary(job.evaluation, keep)
                for r in summarize(job.evaluation, keep):
                    out.append({"method": job.method.key, "authorized": job.authorized, "subset": subset,
                                "restricted": restricted, **r,
                                "role": "authorized" if r["judge"] == auth_judge else
                                "unauthorized" if r["judge"] not in excluded else "surrogate",
                                **{f"q_{k}": v for k, v in q.items() if k != "n"}})
    return out


def matrix(res: ProtocolResult, method: str, subset: str = "all", restricted: bool = True,
           transform: str = "none", metric: str = "accuracy") -> list[report.MatrixRow]:
    """The paper-shaped rows of one method (one row per authorized model)."""
    rows = []
    keep = selector(res, subset, restricted)
    for spec in res.protocol.authorized:
        job = res.job(method, spec)
        assert job.evaluation is not None
        s = [r for r in summarize(job.evaluation, keep) if r["transform"] == transform]
        q = quality_summary(job.evaluation, keep)
        n = max((r["n_labelled"] if metric == "accuracy" else r["n"] for r in s), default=0)
        excluded = surrogate_judges(res, job)  # a surrogate's own score says nothing about transfer
        rows.append(report.MatrixRow(res.protocol.judge_of(spec), {r["judge"]: r[metric] for r in s
                                                                   if r["judge"] not in excluded}, q, n,
                                     job.method.label, tuple(sorted(excluded))))
    return rows


def held_out_mean(res: ProtocolResult, method: str, like: str, subset: str = "all", restricted: bool = True,
                  transform: str = "none", metric: str = "accuracy") -> float | None:
    """``method``'s unauthorized average over only the cells the surrogate method ``like`` scores (its held-out
    judges): the like-for-like comparison for a surrogate row."""
    rows = matrix(res, method, subset, restricted, transform, metric)
    ref = matrix(res, like, subset, restricted, transform, metric)
    return report.mean(report.mean(r.scores.get(j) for j in o.scores if j != o.authorized)
                       for r, o in zip(rows, ref, strict=True))


def surrogate_judges(res: ProtocolResult, job: Job) -> set[str]:
    """Judges not scored in ``job``'s row: the models its attack used as surrogates."""
    return {res.protocol.judge_of(s) for s in job.surrogates}


def overview(res: ProtocolResult, subset: str = "all", restricted: bool = True, transform: str = "none",
             metric: str = "accuracy") -> list[dict[str, Any]]:
    """Per method: mean authorized score, min authorized score, mean unauthorized score, PSNR, SSIM."""
    out = []
    for m in res.protocol.methods:
        rows = matrix(res, m.key, subset, restricted, transform, metric)
        own = [r.own for r in rows if r.own is not None]
        out.append({"method": m.key, "label": m.label, "authorized_mean": report.mean(own),
                    "authorized_min": min(own) if own else None,
                    "unauthorized_mean": report.mean(r.unauthorized_mean() for r in rows),
                    "psnr": _fmean([r.quality.get("psnr") for r in rows]),
                    "ssim": _fmean([r.quality.get("ssim") for r in rows]),
                    "lpips": _fmean([r.quality.get("lpips") for r in rows]),
                    "n": max((r.n for r in rows), default=0)})
    return out


def _fmean(v: list[float | None]) -> float | None:
    vals = [x for x in v if x is not None]
    fin = [x for x in vals if math.isfinite(x)]
    return sum(fin) / len(fin) if fin else (math.inf if vals else None)


def checks(res: ProtocolResult, methods: Sequence[str] = ("fmd-paper", "fmd", "fmd-plus", "fmd-plus-fia", "fmd-plus-mid",
                                                   "fmd-plus-mid-bsr", "fmd-plus-mid-bsr-rk"), subset: str = "all",
           threshold: float = 0.99) -> list[tuple[str, bool, str]]:
    """The issue's "what it must show", evaluated on this run: (claim, holds, evidence) per FMD method."""
    out = []
    ov = {o["method"]: o for o in overview(res, subset, True)}
    baselines = [o for k, o in ov.items() if k != CLEAN and not k.startswith("fmd")]
    base = [o for o in baselines if o["authorized_min"] is not None and o["authorized_min"] >= threshold]
    rest = [o for o in baselines if o not in base]  # named in the evidence, so the claim is never silently vacuous
    for method in [m.key for m in res.protocol.methods if m.key in methods]:
        rows = matrix(res, method, subset, True)
        worst = min((r.own for r in rows if r.own is not None), default=None)
        out.append((f"{method}: authorized accuracy >= {threshold:.0%} on the saved files in every row",
                    worst is not None and worst >= threshold, f"lowest row: {report.percent(worst)}%"))
        mine = ov[method]["unauthorized_mean"]
        ok = mine is not None and all(o["unauthorized_mean"] is not None and mine < o["unauthorized_mean"]
                                      for o in base)
        ev = ", ".join(f"{o['label']} {report.percent(o['unauthorized_mean'])}%" for o in base) or "none qualifies"
        if rest:
            ev += "; not kept: " + ", ".join(f"{o['label']} {report.percent(o['unauthorized_mean'])}% (authorized "
                                            f"min {report.percent(o['authorized_min'])}%)" for o in rest)
        out.append((f"{method}: unauthorized average below every baseline that keeps the authorized model "
                    f">= {threshold:.0%}", ok, f"{method} {report.percent(mine)}%; baselines: {ev}"))
    have = {(j.method.key, t) for j in res.jobs if j.evaluation for t in j.evaluation.meta.get("transforms", [])}
    missing = [(m.key, t) for m in res.protocol.methods for t in ("jpeg75", "resize0.5") if (m.key, t) not in have]
    out.append(("JPEG-75 and resize rows present for every method", not missing,
                f"missing: {missing}" if missing else "present"))
    return out


# ------------------------------------------------------------------------------------------ outputs
def machine() -> str:
    """CPU model, core count and OS, read from /proc/cpuinfo and platform."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} logical CPUs, {gpu}, {platform.system()} {platform.release()}, " \
           f"Python {platform.python_version()}, torch {torch.__version__}"


def write_outputs(res: ProtocolResult, out: Path, title: str, command: str, intro: str = "",
                  metric: str = "accuracy", grid_images: int = 4) -> dict[str, Any]:
    """results.json/.csv, per_image.csv, predictions.csv, figures/*.png and report.html under ``out``."""
    p = res.protocol
    rows = result_rows(res)
    per_image, preds = [], []
    for job in res.jobs:
        if job.evaluation is None or (job.method.attack is None and job.authorized != p.authorized[0]):
            continue
        tag = {"method": job.method.key, "authorized": "-" if job.method.attack is None else job.authorized}
        per_image += [{**tag, **r} for r in job.evaluation.images]
        preds += [{**tag, **r} for r in job.evaluation.predictions]
    meta = run_meta(res, command)
    results = {"meta": meta, "overview": {f"{s}/{'restricted' if r else 'all images'}": overview(res, s, r)
                                          for s in p.subsets for r in (True, False)},
               "checks": [{"claim": c, "holds": h, "evidence": e} for c, h, e in checks(res)],
               "jobs": [{"method": j.method.key, "authorized": j.authorized, "folder": str(j.folder),
                         "settings": j.settings, "protect": j.protect} for j in res.jobs],
               "rows": rows}
    report.write_json(out / "results.json", results)
    report.write_csv(out / "results.csv", rows)
    report.write_csv(out / "per_image.csv", per_image)
    report.write_csv(out / "predictions.csv", preds)
    figs = figures(res, out / "figures", grid_images)
    sections = [report.Section("About this run", intro)] if intro else []
    sections.append(report.Section("Overview (restricted, all subsets)",
                                   tables=[overview_table(res, "all", True), overview_table(res, "all", False)]))
    for m in p.methods:
        sections.append(report.Section(m.label, tables=[report.paper_table(
            matrix(res, m.key, "all", True, metric=metric), [j.name for j in p.judges], metric,
            caption="restricted to images every model gets right when clean")],
            figures=[f for f in figs if f"/bars_{m.key}." in "/" + f]))
    sections.append(report.Section("Robustness", tables=[robustness_table(res)]))
    sections.append(report.Section("Figures", figures=[f for f in figs if "bars_" not in f]))
    report.html_report(out / "report.html", title, sections, meta)
    return results


def run_meta(res: ProtocolResult, command: str) -> dict[str, Any]:
    p = res.protocol
    names = [p.name_of(f) for f in p.files]
    counts = {s: sum(map(pred, names)) for s, pred in p.subsets.items()}
    rcounts = {s: sum(1 for n in names if pred(n) and n in res.restricted) for s, pred in p.subsets.items()}
    models = {}
    for spec in p.authorized:
        cfg = p.load_model(spec).cfg
        models[spec] = {"pretrained": cfg.pretrained, "weights": cfg.weights}
    return {"experiment": p.name, "command": command, "machine": machine(), "date": res.started,
            "wall_time_s": round(res.wall_s, 1), "data": str(p.root), "images": counts,
            "protect_time_s": round(sum(j.protect.get("seconds_total", 0.0) for j in res.jobs), 1),
            "restricted_images": rcounts, "models": models, "judges": [j.name for j in p.judges],
            "transforms": list(p.transforms), "overrides": {k: v for k, v in p.overrides.items() if v is not None},
            "lpips": res.clean.meta.get("lpips_note")}


def overview_table(res: ProtocolResult, subset: str, restricted: bool, transform: str = "none") -> report.Table:
    ov = overview(res, subset, restricted, transform)
    rows = [[o["label"], str(o["n"]), report.percent(o["authorized_mean"]), report.percent(o["authorized_min"]),
             f"**{report.percent(o['unauthorized_mean'])}**", report.number(o["psnr"]), report.number(o["ssim"], 4),
             report.number(o["lpips"], 4)] for o in ov]
    cap = f"subset {subset}, {'restricted to images every model gets right when clean' if restricted else 'all images'}"
    if transform != "none":
        cap += f", after {transform}"
    return report.Table(["Method", "n", "Authorized avg (%)", "Authorized min (%)", "Unauthorized avg (%)",
                         "PSNR (dB)", "SSIM", "LPIPS"], rows, cap)


def robustness_table(res: ProtocolResult, subset: str = "all", restricted: bool = True) -> report.Table:
    """Method x transform: authorized avg / unauthorized avg accuracy on the transformed saved files."""
    rows = []
    for m in res.protocol.methods:
        for t in res.protocol.transforms:
            o = next(x for x in overview(res, subset, restricted, t) if x["method"] == m.key)
            rows.append([m.label, t, report.percent(o["authorized_mean"]), report.percent(o["authorized_min"]),
                         report.percent(o["unauthorized_mean"])])
    return report.Table(["Method", "Transform of the saved file", "Authorized avg (%)", "Authorized min (%)",
                         "Unauthorized avg (%)"], rows,
                        f"subset {subset}, {'restricted' if restricted else 'all images'}; "
                        "quality of the untransformed files is in the tables above")


def figures(res: ProtocolResult, folder: Path, grid_images: int = 4) -> list[str]:
    """Per-method bar plots, protection-vs-PSNR scatter and an image grid; paths relative to the report."""
    from onlymine import io

    p = res.protocol
    out = []
    judges = [j.name for j in p.judges]
    for m in p.methods:
        rows = matrix(res, m.key)
        report.bar_plot(folder / f"bars_{m.key}.png", rows, judges, f"{m.label}: top-1 accuracy per judge")
        out.append(f"figures/bars_{m.key}.png")
    pts = []
    for m in p.methods:
        for r in matrix(res, m.key):
            pts.append((m.label, r.quality.get("psnr"), r.unauthorized_mean()))
    report.scatter_plot(folder / "protection_vs_psnr.png", pts, "Protection against image quality "
                        "(one point per authorized model)")
    out.append("figures/protection_vs_psnr.png")
    grid_job = next((j for j in res.jobs if j.method.key == "fmd-paper"), None) or next(
        (j for j in res.jobs if j.method.attack is not None), None)
    if grid_job and grid_job.evaluation and grid_job.evaluation.images:
        items = []
        for r in grid_job.evaluation.images[:grid_images]:
            items.append((r["image"], io.load_image(r["clean"]).rgb, io.load_image(r["protected"]).rgb))
        eps = grid_job.settings.get("eps")
        report.image_grid(folder / "grid.png", items, eps,
                          f"{grid_job.method.label}, authorized {grid_job.authorized}")
        out.append("figures/grid.png")
    return out


def markdown_report(res: ProtocolResult, results: dict[str, Any], title: str, intro: str = "",
                    comparison: str = "", metric: str = "accuracy") -> str:
    """The Markdown document (docs/results-*.md): run facts, checks, overview, paper tables, robustness."""
    p, meta = res.protocol, results["meta"]
    lines = [f"# {title}", "", f"_Generated by `{meta['command']}`; do not edit by hand._", ""]
    lines += [f"- **Machine:** {meta['machine']}", f"- **Date:** {meta['date']}",
              f"- **Wall time of this invocation:** {meta['wall_time_s'] / 60:.1f} min (protect + evaluate; work "
              "an earlier, interrupted run already did is resumed, not redone, and not counted)",
              f"- **Protection time over every invocation:** {meta.get('protect_time_s', 0) / 60:.1f} min (the sum "
              "of the per-image seconds in the protect manifests, resumed work included; evaluation not included)",
              f"- **Data:** `{meta['data']}`; images per subset: "
              + ", ".join(f"{k} {v}" for k, v in meta["images"].items())
              + "; restricted (every model right when clean): "
              + ", ".join(f"{k} {v}" for k, v in meta["restricted_images"].items()),
              "- **Models:** " + "; ".join(
                  f"`{k}` ({'pretrained: ' + v['weights'] if v['pretrained'] else 'NOT pretrained, random init'})"
                  for k, v in meta["models"].items()),
              f"- **Overrides:** {meta['overrides'] or 'none'}",
              f"- **LPIPS:** {meta['lpips']}", ""]
    if intro:
        lines += [intro, ""]
    if comparison:
        lines += ["## Against the paper", "", comparison, ""]
    if results.get("checks"):
        lines += ["## What the issue asks this run to show", "", "| Claim | Holds | Evidence |", "|---|---|---|"]
        lines += [f"| {c['claim']} | {'yes' if c['holds'] else '**no**'} | {c['evidence']} |" for c in results["checks"]]
        lines.append("")
    lines += ["## Overview", ""]
    for subset in p.subsets:
        lines += [overview_table(res, subset, True).markdown(), overview_table(res, subset, False).markdown()]
    lines += ["## Per authorized model (the paper's table shape)", "",
              "Rows: authorized model; columns: top-1 accuracy of every model on the saved protected files "
              "(— marks the authorized model's own column, shown under *Authorized*). Restricted set, all subsets; "
              "per-subset and unrestricted numbers of every cell are in `results.csv`.", ""]
    for m in p.methods:
        lines += [f"### {m.label}", ""]
        lines += [report.paper_table(matrix(res, m.key, "all", True, metric=metric), [j.name for j in p.judges],
                                     metric).markdown()]
    lines += ["## Robustness of the saved files", "", robustness_table(res).markdown()]
    prot = [j for j in res.jobs if j.protect]
    if prot:
        lines += ["## Protection runs", "", "Verification re-reads each saved file: *kept* = the authorized "
                  "model's clean prediction survived (baselines like PGD are expected to flip it); *retried* = "
                  "FMD re-optimised the image because its saved file flipped. s/image includes retries and "
                  "depends on the machine's load.", "",
                  "| Method | Authorized | kept | flipped | retried | s/image |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {j.method.label} | {j.authorized} | {j.protect['ok']} | {j.protect['failed_verification']} | "
                  f"{j.protect['retried']} | {report.number(j.protect['seconds_per_image'], 1)} |" for j in prot]
        lines.append("")
        lines += ["Settings per method (first authorized model): ", ""]
        seen: set[str] = set()
        for j in prot:
            if j.method.key in seen:
                continue
            seen.add(j.method.key)
            s = j.settings
            lines.append(f"- {j.method.label}: attack {s.get('attack')}, eps {s.get('eps', 0) * 255:.1f}/255, "
                         f"alpha {s.get('alpha', 0) * 255:.1f}/255, steps {s.get('steps')}, "
                         + (f"lam {s.get('lam')}, keep_best {s.get('keep_best')}, " if s.get("attack") == "fmd" else "")
                         + (f"lam {s.get('lam')}, kappa {s.get('kappa')}, momentum {s.get('momentum')}, diversity "
                            f"{s.get('diversity')}, ti_kernel {s.get('ti_kernel')}, jpeg_prob {s.get('jpeg_prob')}, "
                            f"texture {s.get('texture')}, " if s.get("attack") == "fmd+" else "")
                         + "".join(f"{k} {s.get(k)}, " for k, neutral in KEY_NEUTRAL.items()
                                   if k != "surrogates" and s.get(k, neutral) != neutral)
                         + f"layer {s.get('layer')}, preset {s.get('preset')}"
                         + (f", surrogates {s.get('surrogates')} (the next model in turn, not scored in its row)"
                            if s.get("surrogates") else ""))
        lines.append("")
    lines += ["Files: `results.json`, `results.csv` (every subset, restricted or not, every transform), "
              "`per_image.csv`, `predictions.csv`, `report.html` with figures, in the output folder.", ""]
    return "\n".join(lines)
