"""Per-face scores of the faces experiment and the summaries built from them.

A face judge reads each face of a saved file at the geometry found on the clean photo, and an identity judge
matches it against leave-one-out centroids of its own gallery (``source``), so these scores are made here, one
row per (photo, face, judge), rather than by :func:`onlymine.evaluate.evaluate_pairs` (one prediction per
image). ``results`` below is the experiment's ``results.json`` content: ``runs``, ``predictions``, ``quality``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onlymine import io, report
from onlymine.experiments.methods import FACE_METHODS, FACE_SURROGATE

if TYPE_CHECKING:
    from onlymine.experiments.faces import FacePhoto

CANONICAL = {"surprised": "surprise", "angry": "anger", "disgusted": "disgust", "fearful": "fear"}
WELL_BELOW = 0.5  # "unauthorized recognisers fall well below their clean rate": a drop of 50 points or more


def canonical(label: Any) -> str:
    s = str(label).lower()
    return CANONICAL.get(s, s)


def label_of(method: str) -> str:
    return FACE_METHODS[method].label if method in FACE_METHODS else method


def score_faces(photos: Sequence[FacePhoto], outputs: Mapping[Path, Path], judges: Sequence[Any], task: str,
                clean_cache: dict[tuple[str, str], list[Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per-face prediction rows and per-photo quality rows for one run (``outputs``: photo -> its saved file)."""
    from onlymine.metrics import image_quality

    preds, quality = [], []
    for p in photos:
        out_file = outputs.get(p.path)
        if out_file is None or not out_file.is_file():
            continue
        clean = io.load_image(p.path).rgb
        prot = io.load_image(out_file).rgb
        quality.append({"photo": p.path.name, **image_quality(clean, prot, with_lpips=False)})
        for j in judges:
            key = (j.name, str(p.path))
            if key not in clean_cache:
                clean_cache[key] = j.predict_faces(clean, p.faces, source=str(p.path))
            cp, pp = clean_cache[key], j.predict_faces(prot, p.faces, source=str(p.path))
            for k in range(len(p.faces)):
                label = p.identities[k] if task == "identity" and j.task == "identity" else (
                    p.emotion if task == "emotion" and j.task == "emotion" and len(p.faces) == 1 else "")
                if j.task == "emotion":
                    c, q, lab = canonical(cp[k]), canonical(pp[k]), canonical(label) if label else ""
                else:
                    c, q, lab = cp[k], pp[k], label
                preds.append({
                    "photo": p.path.name, "face": k, "judge": j.name, "judge_task": j.task, "label": lab,
                    "real_probe": task == "identity" and sum(x == p.identities[k] for g in photos
                                                             for x in g.identities) > 1,
                    "clean_pred": c, "pred": q, "kept": float(j.kept(c, q)),
                    "correct": None if not lab else float(j.correct(q, lab)),
                    "clean_correct": None if not lab else float(j.correct(c, lab))})
    return preds, quality


def summarize(rows: Sequence[dict[str, Any]], key: str, only_real: bool = False) -> dict[str, float | None]:
    """Mean of ``key`` per judge (``only_real``: over real same-person probes only)."""
    by: dict[str, list[float | None]] = {}
    for r in rows:
        if only_real and not r["real_probe"]:
            continue
        by.setdefault(r["judge"], []).append(r[key])
    return {j: report.mean(v) for j, v in by.items()}


def authorized_of(results: dict[str, Any], task: str, method: str) -> list[str]:
    """The authorized models of ``task``'s ``method`` runs, once each (the surrogate method has several runs)."""
    return list(dict.fromkeys(r["authorized"] for r in results["runs"] if r["task"] == task and r["method"] == method))


def _cell(results: dict[str, Any], task: str, method: str, auth: str, judge_task: str) -> list[dict[str, Any]]:
    return [r for r in results["predictions"] if r["task"] == task and r["method"] == method
            and r["authorized"] == auth and r["judge_task"] == judge_task]


def matrix_rows(results: dict[str, Any], task: str, method: str, key: str, judge_task: str,
                only_real: bool = False) -> list[report.MatrixRow]:
    """The paper-shaped rows of one task and method: one row per authorized model, one score per judge."""
    rows = []
    for auth in authorized_of(results, task, method):
        sel = _cell(results, task, method, auth, judge_task)
        q = [r for r in results["quality"] if r["task"] == task and r["method"] == method and r["authorized"] == auth]
        n = len({(r["photo"], r["face"]) for r in sel if not only_real or r["real_probe"]})
        rows.append(report.MatrixRow(auth, summarize(sel, key, only_real),
                                     {"psnr": report.mean(x["psnr"] for x in q),
                                      "ssim": report.mean(x["ssim"] for x in q)}, n=n, label=label_of(method)))
    return rows


def clean_vs_protected(results: dict[str, Any], task: str, method: str, judge_task: str, key: str,
                       only_real: bool = False) -> report.Table:
    """Per authorized model and judge: clean score -> protected score (drop in points)."""
    ck = "clean_correct" if key == "correct" else None
    out = []
    for auth in authorized_of(results, task, method):
        sel = _cell(results, task, method, auth, judge_task)
        prot = summarize(sel, key, only_real)
        clean = summarize(sel, ck, only_real) if ck else dict.fromkeys(prot, 1.0)
        for j, v in prot.items():
            if v is None:
                continue
            drop = None if clean[j] is None else clean[j] - v
            out.append([report.short_name(auth), report.short_name(j), "authorized" if j == auth else "unauthorized",
                        report.percent(clean[j]), report.percent(v), report.percent(drop)])
    what = ("identification rate" if judge_task == "identity" else "accuracy on the labels") if key == "correct" \
        else "agreement with clean prediction"
    return report.Table(["Authorized", "Judge", "Role", f"clean {what} (%)", f"protected {what} (%)",
                         "drop (points)"], out)


def attr_names(results: dict[str, Any]) -> list[str]:
    """The cross-task attribute judges (neither identity nor emotion) of the run."""
    return list(dict.fromkeys(r["judge"] for r in results["predictions"]
                              if r["judge_task"] not in ("identity", "emotion")))


def attribute_table(results: dict[str, Any], method: str) -> report.Table:
    """Per (task, authorized model): how often each attribute judge kept its clean prediction."""
    out = []
    names = attr_names(results)
    for task, auth in dict.fromkeys((r["task"], r["authorized"]) for r in results["runs"] if r["method"] == method):
        sel = [r for r in results["predictions"] if r["task"] == task and r["method"] == method
               and r["authorized"] == auth and r["judge_task"] not in ("identity", "emotion")]
        if sel:
            kept = summarize(sel, "kept")
            out.append([task, report.short_name(auth)] + [report.percent(kept.get(j)) for j in names])
    return report.Table(["Task", "Authorized"] + [f"{report.short_name(j)} kept (%)" for j in names], out)


def claims(results: dict[str, Any], profile: Sequence[tuple[str, float]]) -> report.Table:
    """What the run must show, each statement with whether it holds on this run and the numbers behind it."""
    def unauthorized_recognisers(method: str) -> list[dict[str, Any]]:
        return [r for r in results["predictions"] if r["task"] == "identity" and r["method"] == method
                and r["judge_task"] == "identity" and r["judge"] != r["authorized"]]

    rows = []
    protections = [m for m in FACE_METHODS if m != "uniform-noise"]
    for task, key, what in (("identity", "correct", "identifies"), ("emotion", "kept", "keeps the prediction of")):
        for method in protections:
            auth = [r for r in results["predictions"] if r["task"] == task and r["method"] == method
                    and r["judge"] == r["authorized"]]
            if not auth:
                continue
            low = min(v for v in summarize(auth, key).values() if v is not None)  # per authorized model
            rows.append([f"{task}, {method}: the authorized model {what} >= 99% of faces on the saved files",
                         "yes" if low >= 0.99 else "no", f"lowest authorized row {report.percent(low)}%"])
    for method in protections:
        sel = unauthorized_recognisers(method)
        if not sel:
            continue
        clean, prot = report.mean(r["clean_correct"] for r in sel), report.mean(r["correct"] for r in sel)
        noise = report.mean(r["correct"] for r in unauthorized_recognisers("uniform-noise"))
        drop = None if clean is None or prot is None else clean - prot
        rows.append([f"identity, {method}: unauthorized recognisers fall well below their clean rate",
                     "yes" if drop is not None and drop >= WELL_BELOW else "no",
                     f"clean {report.percent(clean)}% -> protected {report.percent(prot)}% ({report.percent(drop)} "
                     f"points; UniformNoise at the same eps: {report.percent(noise)}%)"
                     f"; 'well below' is read as a drop of {WELL_BELOW * 100:.0f} points or more"])
    if profile:
        d = dict(profile)
        border = d.get("region border pixels", 0.0) + d.get("ring 0-8 px outside the region", 0.0)
        rows.append(["a face in a group photo is pasted back with no seam at the crop border",
                     "yes" if border < 0.5 else "no",
                     f"mean |perturbation| at the region border and 8 px outside: {border:.2f}/255 "
                     "(figure below)"])
    return report.Table(["Claim", "Holds", "Evidence"], rows, "What the issue asks this run to show")


def surrogate_runs(results: dict[str, Any]) -> bool:
    return any(r["method"] == FACE_SURROGATE for r in results["runs"])
