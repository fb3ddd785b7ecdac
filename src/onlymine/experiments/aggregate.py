"""Summaries of a :class:`~onlymine.experiments.run.ProtocolResult`: long result rows, the paper-shaped matrix of
one method, the per-method overview, the like-for-like mean of a surrogate row and the run's checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from onlymine import report
from onlymine.evaluate import quality_summary, summarize
from onlymine.experiments.methods import CLEAN
from onlymine.experiments.run import Job, ProtocolResult
from onlymine.metrics import finite_mean

CHECKED = ("fmd-paper", "fmd", "fmd-plus", "fmd-plus-mid")  # the methods whose claims :func:`checks` states


def selector(res: ProtocolResult, subset: str, restricted: bool) -> Callable[[str], bool]:
    pred = res.protocol.subsets[subset]
    return lambda n: pred(n) and (not restricted or n in res.restricted)


def surrogate_judges(res: ProtocolResult, job: Job) -> set[str]:
    """Judges not scored in ``job``'s row: the models its attack used as surrogates."""
    return {res.protocol.judge_of(s) for s in job.surrogates}


def result_rows(res: ProtocolResult) -> list[dict[str, Any]]:
    """Long rows: method x authorized x subset x restricted x transform x judge, with quality means."""
    out = []
    for job in res.jobs:
        auth_judge = res.protocol.judge_of(job.authorized)
        excluded = surrogate_judges(res, job)
        assert job.evaluation is not None
        for subset in res.protocol.subsets:
            for restricted in (True, False):
                keep = selector(res, subset, restricted)
                q = quality_summary(job.evaluation, keep)
                for r in summarize(job.evaluation, keep):
                    out.append({"method": job.method.key, "authorized": job.authorized, "subset": subset,
                                "restricted": restricted, **r,
                                "role": "authorized" if r["judge"] == auth_judge else
                                "unauthorized" if r["judge"] not in excluded else "surrogate",
                                **{f"q_{k}": v for k, v in q.items() if k != "n"}})
    return out


def matrix(res: ProtocolResult, method: str, subset: str = "all", restricted: bool = True,
           transform: str = "crop", metric: str = "accuracy") -> list[report.MatrixRow]:
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
                  transform: str = "crop", metric: str = "accuracy") -> float | None:
    """``method``'s unauthorized average over only the cells the surrogate method ``like`` scores (its held-out
    judges): the like-for-like comparison for a surrogate row."""
    rows = matrix(res, method, subset, restricted, transform, metric)
    ref = matrix(res, like, subset, restricted, transform, metric)
    return report.mean(report.mean(r.scores.get(j) for j in o.scores if j != o.authorized)
                       for r, o in zip(rows, ref, strict=True))


def overview(res: ProtocolResult, subset: str = "all", restricted: bool = True, transform: str = "crop",
             metric: str = "accuracy") -> list[dict[str, Any]]:
    """Per method: mean authorized score, min authorized score, mean unauthorized score, PSNR, SSIM, LPIPS."""
    out = []
    for m in res.protocol.methods:
        rows = matrix(res, m.key, subset, restricted, transform, metric)
        own = [r.own for r in rows if r.own is not None]
        out.append({"method": m.key, "label": m.label, "authorized_mean": report.mean(own),
                    "authorized_min": min(own) if own else None,
                    "unauthorized_mean": report.mean(r.unauthorized_mean() for r in rows),
                    "psnr": finite_mean([r.quality.get("psnr") for r in rows]),
                    "ssim": finite_mean([r.quality.get("ssim") for r in rows]),
                    "lpips": finite_mean([r.quality.get("lpips") for r in rows]),
                    "n": max((r.n for r in rows), default=0)})
    return out


def checks(res: ProtocolResult, methods: Sequence[str] = CHECKED, subset: str = "all",
           threshold: float = 0.99) -> list[tuple[str, bool, str]]:
    """What the run must show, evaluated on it: (claim, holds, evidence) per FMD method, and the robustness rows."""
    out = []
    ov = {o["method"]: o for o in overview(res, subset, True)}
    baselines = [o for k, o in ov.items() if k != CLEAN and not k.startswith("fmd")]
    base = [o for o in baselines if o["authorized_min"] is not None and o["authorized_min"] >= threshold]
    rest = [o for o in baselines if o not in base]  # named in the evidence, so the claim is never silently vacuous
    for method in [m.key for m in res.protocol.methods if m.family in methods]:
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
    missing = [(m.key, t) for m in res.protocol.methods for t in ("full", "jpeg75") if (m.key, t) not in have]
    out.append(("JPEG-75 and resize rows present for every method", not missing,
                f"missing: {missing}" if missing else "present"))
    return out
