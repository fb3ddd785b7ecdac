"""``onlymine experiment detection``: cross-task transfer to detectors (Chai et al. 2024, Figure 2).

The kit's detection and face photos are protected through the one path (the shared protocol, each ImageNet
classifier authorized in turn; face photos also with face recognisers given by ``--face-models``) with FMD
and with UniformNoise at the same eps, then every detector scores the saved files: survival of the clean
detections, new false detections and mAP against the clean detections (:mod:`onlymine.detection.metrics`).
The authorized classifier's agreement on the same saved files is reported beside them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from onlymine import report
from onlymine.experiments.methods import CLEAN, METHODS
from onlymine.experiments.outputs import machine, publish
from onlymine.experiments.run import Protocol, ProtocolResult, run_protocol, safe_name
from onlymine.threats import READS

log = logging.getLogger(__name__)

DEFAULT_MODELS = ("torchvision:mobilenet_v2", "efficientnet-lite:lite0", "efficientnet-lite:lite1",
                  "efficientnet-lite:lite2")
DEFAULT_METHODS = (CLEAN, "fmd", "uniform-noise")
KIT = Path(__file__).resolve().parents[3] / ".." / "shared" / "kit"
GROUPS = ("detection", "faces")
# the threat suite here: a detector reads the whole frame its own way (``crop`` = its native input); the pipelines
# that change the file (JPEG, half size) are read that way too; ``full`` is the authorized classifier's whole frame
SUITE = ("crop", "full", "jpeg75", "half")


@dataclass
class DetectionOptions:
    """What ``onlymine experiment detection`` runs besides its detectors (:func:`build_detector_judges`);
    ``eps``/``alpha``/``steps``/``lam``: ``None`` = each method's own."""

    out: Path
    data: Path = (KIT / "photos").resolve()
    models: Sequence[str] = DEFAULT_MODELS
    face_models: Sequence[str] = ()
    methods: Sequence[str] = DEFAULT_METHODS
    limit: int | None = None
    eps: float | None = None
    alpha: float | None = None
    steps: int | None = None
    lam: float | None = None
    iou: float = 0.5
    transforms: Sequence[str] = SUITE
    markdown: Path | None = None
    figure_dir: Path | None = None
    device: str = "auto"
    batch_size: int = 4
    progress: bool = True


@dataclass
class DetectionResult:
    """What a run wrote: the rows, the tables of the report and the files."""

    rows: list[dict[str, Any]]
    tables: list[Any]
    written: list[Path] = field(default_factory=list)


def select_files(data: Path, group: str, limit: int | None) -> list[Path]:
    from onlymine import io

    files, errors = io.find_images([data / group])
    for e in errors:
        log.warning("%s", e)
    return files[:limit] if limit else files


def build_detector_judges(names: Sequence[str], models_dir: str | Path, iou: float) -> tuple[list[Any], list[str]]:
    """Judges for the detectors that can run here, and one line per detector that cannot (with why)."""
    from onlymine.detection import DetectorError, DetectorJudge, build_detector
    from onlymine.detection.registry import THRESHOLDS

    judges, skipped = [], []
    for n in names:
        try:
            judges.append(DetectorJudge(build_detector(n, str(models_dir)), threshold=THRESHOLDS[n], iou=iou))
        except DetectorError as e:
            skipped.append(f"{n}: {e}")
            log.warning("detector %s skipped: %s", n, e)
    return judges, skipped


def build_protocols(a: DetectionOptions, detector_judges: list[Any]) -> list[Protocol]:
    """One protocol with the ImageNet classifiers authorized (every photo), one with the face models (faces/)."""
    from onlymine.judges import ClassifierJudge
    from onlymine.models import load_model
    from onlymine.runtime import pick_device

    data = Path(a.data)
    unknown = [m for m in a.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {list(METHODS)}")
    groups = {g: select_files(data, g, a.limit) for g in GROUPS if (data / g).is_dir()}
    if not any(groups.values()):
        raise ValueError(f"{data}: no photos in {'/ or '.join(GROUPS)}/ (pass --data DIR)")
    device = pick_device(a.device)
    models: dict[str, Any] = {}

    def model(spec: str) -> Any:
        if spec not in models:
            models[spec] = load_model(spec, device=device)
        return models[spec]

    overrides = {"eps": a.eps, "alpha": a.alpha, "steps": a.steps, "lam": a.lam}
    common = {"root": data, "load_model": model, "methods": [METHODS[m] for m in dict.fromkeys(a.methods)],
              "labels": None, "overrides": overrides, "transforms": list(a.transforms), "device": str(device),
              "batch_size": a.batch_size, "progress": a.progress}
    out = []
    specs = list(dict.fromkeys(a.models))
    if specs:
        files = [f for g in GROUPS for f in groups.get(g, [])]
        out.append(Protocol(name="detection", files=files, authorized=specs, out=Path(a.out) / "imagenet",
                            judges=[ClassifierJudge(model(s), batch_size=a.batch_size) for s in specs]
                            + detector_judges, judge_of=lambda s: model(s).name,
                            subsets={"all": lambda n: True, **{g: _in_group(g) for g in groups}}, **common))
    fspecs = list(dict.fromkeys(a.face_models or []))
    if fspecs and groups.get("faces"):
        faces = [j for j in detector_judges if j.task == "face"]
        out.append(Protocol(name="detection-faces", files=groups["faces"], authorized=fspecs,
                            out=Path(a.out) / "faces", judges=[ClassifierJudge(model(s), batch_size=a.batch_size)
                                                               for s in fspecs] + faces,
                            judge_of=lambda s: model(s).name, subsets={"all": lambda n: True}, **common))
    return out


def _in_group(group: str) -> Any:
    return lambda name: Path(name).parts[0] == group


# ------------------------------------------------------------------------------------------ scoring
def detection_rows(res: ProtocolResult, judges: Sequence[Any], transform: str = "crop",
                   per_image: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per (method, authorized, detector): pooled survival, new false detections, mAP, plus the
    authorized model's agreement and PSNR on the same saved files. Per-image scores go to ``per_image``."""
    from onlymine.detection.metrics import score_detections
    from onlymine.evaluate import quality_summary, summarize

    rows = []
    for job in res.jobs:
        if job.method.attack is None or job.evaluation is None:
            continue
        auth = res.protocol.judge_of(job.authorized)
        summary = summarize(job.evaluation)
        agree = {r["judge"]: r["agreement"] for r in summary if r["transform"] == transform}
        whole = {r["judge"]: r["agreement"] for r in summary if r["transform"] == "full"}
        q = quality_summary(job.evaluation)
        for j in judges:
            preds = sorted((r for r in job.evaluation.predictions
                            if r["judge"] == j.name and r["transform"] == transform), key=lambda r: r["image"])
            if not preds:
                continue
            total, per = score_detections([j.detections(r["clean_pred"]) for r in preds],
                                          [j.detections(r["pred"]) for r in preds], j.threshold, j.iou)
            if per_image is not None:
                per_image += [{"protocol": res.protocol.name, "method": job.method.key, "authorized": job.authorized,
                               "detector": j.name, "image": r["image"], **asdict(x), "survival": x.survival}
                              for r, x in zip(preds, per, strict=True)]
            rows.append({"protocol": res.protocol.name, "method": job.method.key, "method_label": job.method.label,
                         "authorized": job.authorized, "authorized_kept": agree.get(auth),
                         "authorized_kept_full": whole.get(auth),
                         "eps": job.settings.get("config", {}).get("eps"), "detector": j.name, "task": j.task,
                         "threshold": j.threshold, "transform": transform, **total.to_dict(),
                         "psnr": q.get("psnr"), "ssim": q.get("ssim"), "linf_max": q.get("linf_max")})
    return rows


def _avg(rows: Sequence[dict[str, Any]], key: str) -> float | None:
    return report.mean(r[key] for r in rows)


def summary_rows(rows: Sequence[dict[str, Any]], detectors: Sequence[str], methods: Sequence[str],
                 transform: str = "crop") -> list[dict[str, Any]]:
    """Per (detector, method), through ``transform``: means over the authorized models; then per method the mean
    over detectors."""
    out = []
    rows = [r for r in rows if r.get("transform", "crop") == transform]
    for d in [*detectors, "average"]:
        for m in methods:
            sel = [r for r in rows if r["method"] == m and (d == "average" or r["detector"] == d)]
            if sel:
                out.append({"detector": d, "method": m, "n_authorized": len({r["authorized"] for r in sel}),
                            "survival": _avg(sel, "survival"), "new_false_per_image": _avg(sel, "new_false_per_image"),
                            "map": _avg(sel, "map"), "map_50": _avg(sel, "map_50"),
                            "n_clean": None if d == "average" else sel[0]["n_clean"], "transform": transform,
                            "authorized_kept": _avg(sel, "authorized_kept")})
    return out


# ------------------------------------------------------------------------------------------ report
def transfer_table(summary: Sequence[dict[str, Any]], methods: Sequence[str], caption: str) -> Any:
    labels = {m: METHODS[m].label for m in methods}
    headers = ["Detector", "clean dets"]
    for m in methods:
        headers += [f"{labels[m]}: survival (%)", f"{labels[m]}: mAP@.5 (%)", f"{labels[m]}: mAP (%)",
                    f"{labels[m]}: new false / img"]
    lines = []
    for d in dict.fromkeys(r["detector"] for r in summary):
        by = {r["method"]: r for r in summary if r["detector"] == d}
        first = next(iter(by.values()))
        cells = [f"**{d}**" if d == "average" else d, "" if first["n_clean"] is None else str(first["n_clean"])]
        for m in methods:
            r = by.get(m, {})
            cells += [report.percent(r.get("survival"), 1), report.percent(r.get("map_50"), 1),
                      report.percent(r.get("map"), 1), report.number(r.get("new_false_per_image"), 2)]
        lines.append(cells)
    return report.Table(headers, lines, caption)


def authorized_table(rows: Sequence[dict[str, Any]], detectors: Sequence[str]) -> Any:
    headers = ["Method", "Authorized", "authorized kept (%)", "authorized kept, whole frame (%)", "PSNR (dB)",
               "SSIM", "L-inf max (/255)"]
    headers += [f"{d} survival (%)" for d in detectors]
    lines = []
    rows = [r for r in rows if r.get("transform", "crop") == "crop"]
    keys = list(dict.fromkeys((r["method"], r["authorized"]) for r in rows))
    for m, a in keys:
        sel = {r["detector"]: r for r in rows if r["method"] == m and r["authorized"] == a}
        first = next(iter(sel.values()))
        lines.append([METHODS[m].label, _short(a), report.percent(first["authorized_kept"], 1),
                      report.percent(first.get("authorized_kept_full"), 1),
                      report.number(first["psnr"]), report.number(first["ssim"], 4),
                      report.number(None if first["linf_max"] is None else first["linf_max"] * 255, 1)]
                     + [report.percent(sel[d]["survival"], 1) if d in sel else "n/a" for d in detectors])
    return report.Table(headers, lines, "per authorized model: the authorized classifier's top-1 agreement "
                        "(clean vs saved protected file) beside each detector's survival")


def figure(res: ProtocolResult, judges: Sequence[Any], folder: Path, methods: Sequence[str]) -> list[Path]:
    """Figure-2-like PNGs: per photo group, the best-covered photo with boxes on clean / each method's file."""
    from onlymine import io
    from onlymine.detection.draw import comparison_figure

    spec = res.protocol.authorized[0]
    ev = {j.method.key: j.evaluation for j in res.jobs if j.authorized == spec or j.method.attack is None}
    folders = {j.method.key: j.folder for j in res.jobs if j.authorized == spec and j.method.attack}
    outs = []
    for group, task in (("detection", "object"), ("faces", "face")):
        dets = [j for j in judges if j.task == task]
        clean_ev = ev.get(CLEAN) or next(iter(ev.values()), None)
        if not dets or clean_ev is None:
            continue
        counts: dict[str, int] = {}
        for r in clean_ev.predictions:
            if r["transform"] == "crop" and Path(r["image"]).parts[0] == group and r["judge"] in {d.name for d in dets}:
                j = next(d for d in dets if d.name == r["judge"])
                counts[r["image"]] = counts.get(r["image"], 0) + len(j.detections(r["clean_pred"]).above(j.threshold))
        if not counts:
            continue
        image = max(sorted(counts), key=counts.__getitem__)
        clean_path = res.protocol.root / image
        rows = []
        for d in dets:
            cols = []
            for m in [CLEAN, *[x for x in methods if x != CLEAN and x in folders]]:
                e = ev.get(m)
                if e is None:
                    continue
                r = next((r for r in e.predictions if r["image"] == image and r["judge"] == d.name
                          and r["transform"] == "crop"), None)
                if r is None:
                    continue
                pred = r["clean_pred"] if m == CLEAN else r["pred"]
                path = clean_path if m == CLEAN else Path(r.get("protected") or _protected(e, image))
                cols.append((METHODS[m].label, io.load_image(path).rgb, d.detections(pred)))
            if cols:
                rows.append((d.name, d.threshold, cols))
        if rows:
            stem = f"detection-{'objects' if group == 'detection' else 'faces'}"
            stem += "" if res.protocol.name == "detection" else f"-{safe_name(_short(spec))}"
            outs.append(comparison_figure(folder / f"{stem}.png", rows,
                                          f"{image}: authorized {spec}; boxes >= each detector's threshold"))
    return outs


def _short(spec: str) -> str:
    """Display name of a spec: ``gallery:/x/kit_facenet.npz`` -> ``gallery:kit_facenet``, else as report does."""
    return f"gallery:{Path(spec[8:]).stem}" if spec.startswith("gallery:") else report.short_name(spec)


def _protected(ev: Any, image: str) -> str:
    return next(r["protected"] for r in ev.images if r["image"] == image)


def markdown(meta: dict[str, Any], tables: Sequence[Any], figures: Sequence[str], notes: Sequence[str]) -> str:
    lines = ["# Cross-task transfer: detectors as unauthorized models", "",
             f"Generated by `{meta['command']}` on {meta['machine']}, {meta['date']} "
             f"(wall time {meta['wall_time_s'] / 60:.1f} min). Data: {meta['data']}. Do not edit by hand.", ""]
    lines += [f"- {n}" for n in notes] + [""]
    for t in tables:
        lines += [t.markdown(), ""]
    lines += [f"![{Path(f).stem}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def run_detection(a: DetectionOptions, judges: Sequence[Any], skipped: Sequence[str], command: str
                  ) -> DetectionResult:
    """Run the protocols with the detector ``judges`` (``skipped``: one line per detector that cannot run here),
    then write results.json/.csv, per_image.csv, figures, report.html, report.md and the Markdown document."""
    t0 = time.perf_counter()
    results = [run_protocol(p) for p in build_protocols(a, list(judges))]
    out = Path(a.out)
    methods = [m for m in dict.fromkeys(a.methods) if m != CLEAN]
    rows: list[dict[str, Any]] = []
    per_image: list[dict[str, Any]] = []
    tables, figs = [], []
    for res in results:
        dets = [j for j in judges if j.name in {x.name for x in res.protocol.judges}]
        # the detectors' own read (crop) first, then each pipeline that changes the file before they read it
        reads = [t for t in res.protocol.transforms if t == "crop" or t not in READS]
        r = [row for t in reads for row in detection_rows(res, dets, t, per_image if t == "crop" else None)]
        rows += r
        what = "ImageNet classifiers authorized" if res.protocol.name == "detection" else "face recognisers authorized"
        names = ", ".join(_short(s) for s in res.protocol.authorized)
        for t in reads:
            summ = summary_rows(r, [j.name for j in dets], methods, t)
            how = "each detector's own whole-frame input" if t == "crop" else f"the file after {t}, then read so"
            tables.append(transfer_table(summ, methods, f"{what} ({names}; mean over them), "
                                         f"{len(res.protocol.files)} photos, {how}: survival of "
                                         "the clean detections, mAP against them, new false detections per image"))
        tables.append(authorized_table(r, [j.name for j in dets]))
        figs += figure(res, dets, out / "figures" / safe_name(res.protocol.name), list(a.methods))
    meta = {"command": command, "machine": machine(), "date": results[0].started if results else "",
            "wall_time_s": round(time.perf_counter() - t0, 1), "data": str(Path(a.data)),
            "detectors": {j.name: {"task": j.task, "threshold": j.threshold} for j in judges},
            "skipped_detectors": list(skipped), "eps": sorted({r["eps"] for r in rows if r["eps"] is not None}),
            "iou": a.iou}
    report.write_json(out / "results.json", {"meta": meta, "rows": rows, "summary": [
        s for t in dict.fromkeys(r["transform"] for r in rows)
        for s in summary_rows(rows, [j.name for j in judges], methods, t)]})
    report.write_csv(out / "results.csv", rows)
    report.write_csv(out / "per_image.csv", per_image)
    notes = notes_for(meta, bool(a.face_models), skipped)
    links = [str(f.relative_to(out)) for f in figs]
    report.html_report(out / "report.html", "Cross-task transfer: detectors as unauthorized models",
                       [report.Section("Notes", "\n\n".join(notes), tables=tables, figures=links)], meta)
    written = [out / n for n in ("report.html", "results.json", "results.csv", "per_image.csv")]
    written += publish(out, markdown(meta, tables, links, notes), a.markdown, links, a.figure_dir)
    return DetectionResult(rows, tables, written)


def notes_for(meta: dict[str, Any], face_models: bool, skipped: Sequence[str]) -> list[str]:
    """The notes above the tables: budget, what each score means, thresholds, photos."""
    eps = ", ".join(f"{e * 255:.0f}/255" for e in meta["eps"]) or "n/a"
    notes = [
        f"FMD and UniformNoise use the same L-inf budget ({eps}); FMD only ever sees the authorized classifier, "
        "never a detector (the detectors are black-box judges of the saved PNG files).",
        "Survival: fraction of the clean image's detections (score >= the detector's threshold) found again on "
        f"the protected file with IoU >= {meta['iou']} and the same class. New false detections: protected "
        "detections >= threshold matching no clean one. mAP: torchmetrics MeanAveragePrecision (pycocotools), "
        "protected detections against the clean ones as pseudo ground truth. Per detector, then averaged "
        "(the `average` row).",
        "Thresholds: " + ", ".join(f"{k} {v['threshold']}" for k, v in meta["detectors"].items()) + ".",
        "'authorized kept' is the authorized classifier's top-1 agreement between the clean photo and the saved "
        "protected file (the same files the detectors judge).",
        "Photos: the offline kit's detection/ (8) and faces/ (15) folders; every detector runs on every photo, "
        "and the clean detections are the reference (no box ground truth exists for these photos).",
    ]
    if not face_models:
        notes.append("Face photos were protected with the ImageNet classifiers as authorized models; no face "
                     "recogniser was given (--face-models).")
    notes += [f"Detector not run: {s}" for s in skipped]
    return notes
