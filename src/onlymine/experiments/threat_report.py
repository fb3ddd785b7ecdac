"""The threat suite of an experiment (:mod:`onlymine.threats`): per (method, authorized model), the unauthorized
models' agreement with their own clean top-1 through each pipeline, the worst pipeline and the mean over them,
the authorized model's prediction kept through each pipeline, quality and seconds per image; and the claims the
threat-suite issue asks a run to show (:data:`CLAIMS`), checked on the same rows.

Agreement is over every photo of the run (it needs no label), not only the restricted set.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass
from typing import Any

from onlymine import report
from onlymine.evaluate import Evaluation, quality_summary, summarize
from onlymine.experiments.aggregate import surrogate_judges
from onlymine.experiments.run import Job, ProtocolResult


def suite_row(ev: Evaluation, authorized: str, skip: Set[str] = frozenset(),
              pipelines: Sequence[str] | None = None) -> dict[str, Any]:
    """One evaluation through the suite (fractions; ``None`` where a pipeline was not judged): the unauthorized
    agreement per pipeline (mean over the judges other than ``authorized`` and ``skip``), the authorized
    prediction kept per pipeline, the worst pipeline and the mean, and the quality means."""
    rows = summarize(ev)
    pipes = [t for t in (pipelines or dict.fromkeys(r["transform"] for r in rows))
             if any(r["transform"] == t for r in rows)]
    unauth = {t: report.mean(r["agreement"] for r in rows
                             if r["transform"] == t and r["judge"] not in skip and r["judge"] != authorized)
              for t in pipes}
    kept = {t: next((r["agreement"] for r in rows if r["transform"] == t and r["judge"] == authorized), None)
            for t in pipes}
    have = {t: v for t, v in unauth.items() if v is not None}
    q = quality_summary(ev)
    return {"n": q["n"], "unauthorized": unauth, "authorized_kept": kept,
            "worst": max(have.values()) if have else None,
            "worst_pipeline": max(have, key=lambda t: have[t]) if have else None,
            "mean": report.mean(have.values()), "psnr": q.get("psnr"), "ssim": q.get("ssim"),
            "haarpsi": q.get("haarpsi"), "ring_ratio": q.get("ring_ratio")}


def threat_row(res: ProtocolResult, job: Job) -> dict[str, Any]:
    """One (method, authorized) cell through the suite (:func:`suite_row`)."""
    assert job.evaluation is not None
    auth = res.protocol.judge_of(job.authorized)
    row = suite_row(job.evaluation, auth, surrogate_judges(res, job), res.protocol.transforms)
    return {"method": job.method.key, "family": job.method.family, "label": job.method.label,
            "authorized": job.authorized, **row,
            "seconds_per_image": job.protect.get("seconds_per_image") if job.protect else None}


def threat_rows(res: ProtocolResult) -> list[dict[str, Any]]:
    """Every protecting cell through the suite, then per method with more than one authorized model an
    ``authorized == "average"`` row (means over the authorized models; kept: the lowest)."""
    out: list[dict[str, Any]] = []
    for m in res.protocol.methods:
        if m.attack is None:
            continue
        cells = [threat_row(res, j) for j in res.jobs if j.method.key == m.key and j.evaluation is not None]
        out += cells
        if len(cells) > 1:
            avg: dict[str, Any] = {k: cells[0][k] for k in ("method", "family", "label")}
            avg.update(authorized="average", n=cells[0]["n"])
            for key, pick in (("unauthorized", report.mean), ("authorized_kept", _lowest)):
                avg[key] = {t: pick(c[key].get(t) for c in cells) for t in cells[0][key]}
            have = {t: v for t, v in avg["unauthorized"].items() if v is not None}
            avg["worst"] = max(have.values()) if have else None
            avg["worst_pipeline"] = max(have, key=lambda t: have[t]) if have else None
            avg["mean"] = report.mean(have.values())
            for k in ("psnr", "ssim", "haarpsi", "ring_ratio", "seconds_per_image"):
                avg[k] = report.mean(c[k] for c in cells)
            out.append(avg)
    return out


def _lowest(values: Any) -> float | None:
    have = [v for v in values if v is not None]
    return min(have) if have else None


def threat_table(rows: Sequence[dict[str, Any]], pipelines: Sequence[str]) -> report.Table:
    kept = [t for t in ("crop", "full") if t in pipelines]
    hdr = (["Method", "Authorized", "n"] + [f"auth. kept {t} (%)" for t in kept]
           + [f"unauth. {t} (%)" for t in pipelines]
           + ["worst (%)", "mean (%)", "PSNR (dB)", "SSIM", "HaarPSI", "ring", "s/img"])
    body = []
    for r in rows:
        body.append([r["label"], report.short_name(r["authorized"]), str(r["n"])]
                    + [report.percent(r["authorized_kept"].get(t), 1) for t in kept]
                    + [report.percent(r["unauthorized"].get(t), 1) for t in pipelines]
                    + [f"{report.percent(r['worst'], 1)} ({r['worst_pipeline']})" if r["worst"] is not None else "",
                       report.percent(r["mean"], 1), report.number(r["psnr"]), report.number(r["ssim"], 3),
                       report.number(r["haarpsi"], 3), report.number(r["ring_ratio"]),
                       report.number(r["seconds_per_image"], 1)])
    return report.Table(hdr, body, "agreement with each model's own clean top-1 through the same pipeline, every "
                        "photo of the run; lower is better for unauthorized models (auth. kept: the lowest row "
                        "in an average)")


@dataclass(frozen=True)
class Claim:
    """``family``'s rows must have ``value(row)`` ``op`` ``bound`` (``op``: ``<=`` or ``>=``)."""

    family: str
    what: str
    key: str
    pipeline: str | None
    op: str
    bound: float

    def value(self, row: dict[str, Any]) -> float | None:
        v = row.get(self.key)
        return v.get(self.pipeline) if isinstance(v, dict) else v


# The threat-suite issue's must-shows (docs/beyond.md): default preset, --keep-pipelines crop,full, mid preset
RING = (0.8, 1.25)
CLAIMS = (
    Claim("fmd-plus", "authorized kept through crop", "authorized_kept", "crop", ">=", 1.0),
    Claim("fmd-plus", "unauthorized agreement through crop", "unauthorized", "crop", "<=", 0.10),
    Claim("fmd-plus", "unauthorized agreement through full", "unauthorized", "full", "<=", 0.15),
    Claim("fmd-plus", "unauthorized agreement after jpeg75", "unauthorized", "jpeg75", "<=", 0.20),
    Claim("fmd-plus", "unauthorized agreement through the worst pipeline", "worst", None, "<=", 0.25),
    Claim("fmd-plus-keep-full", "authorized kept through crop", "authorized_kept", "crop", ">=", 1.0),
    Claim("fmd-plus-keep-full", "authorized kept through full", "authorized_kept", "full", ">=", 1.0),
    Claim("fmd-plus-mid", "PSNR (dB)", "psnr", None, ">=", 31.0),
    Claim("fmd-plus-mid", "SSIM", "ssim", None, ">=", 0.88),
    Claim("fmd-plus-mid", "unauthorized agreement through crop", "unauthorized", "crop", "<=", 0.20),
    Claim("fmd-plus-mid", "unauthorized agreement through full", "unauthorized", "full", "<=", 0.25),
)


def threat_checks(rows: Sequence[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """(claim, holds, evidence) per claim of :data:`CLAIMS` whose method ran, on every authorized row and seed
    (never on an average alone), and the no-visible-frame ring bounds for every FMD+ method."""
    out = []
    cells = [r for r in rows if r["authorized"] != "average"]
    for c in CLAIMS:
        mine = [r for r in cells if r["family"] == c.family]
        if not mine:
            continue
        vals = [(r, c.value(r)) for r in mine]
        ok = all(v is not None and (v <= c.bound + 1e-9 if c.op == "<=" else v >= c.bound - 1e-9) for _, v in vals)
        pct = c.key != "psnr" and c.key != "ssim"
        show = (lambda v: f"{report.percent(v, 1)}%") if pct else (lambda v: report.number(v, 3))
        bound = f"{report.percent(c.bound, 0)}%" if pct else f"{c.bound:g}"
        ev = ", ".join(f"{r['method']}/{report.short_name(r['authorized'])} {show(v) if v is not None else 'n/a'}"
                       for r, v in vals)
        out.append((f"{c.family}: {c.what} {c.op} {bound} on every row", ok, ev))
    for fam in dict.fromkeys(r["family"] for r in cells if r["family"].startswith("fmd-plus")):
        vals = [(r, r.get("ring_ratio")) for r in cells if r["family"] == fam]
        ok = all(v is not None and RING[0] <= v <= RING[1] for _, v in vals)
        out.append((f"{fam}: no visible frame (ring ratio between {RING[0]} and {RING[1]}) on every row", ok,
                    ", ".join(f"{r['method']}/{report.short_name(r['authorized'])} {report.number(v)}"
                              for r, v in vals)))
    return out
