"""``onlymine enroll``: a gallery per recogniser from ``FOLDER/<identity>/*.jpg`` (or labelled samples).

Each photo's largest face (MTCNN) is cut with each recogniser's own alignment and embedded; the gallery
keeps every embedding (L2-normalised) with its identity and file, see :class:`~onlymine.faces.gallery.Gallery`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from onlymine import io
from onlymine.faces import align
from onlymine.faces.align import Face
from onlymine.faces.detect import FaceDetector
from onlymine.faces.gallery import DEFAULT_SCALE, Gallery, gallery_file
from onlymine.models.classifier import Classifier

log = logging.getLogger(__name__)

DEFAULT_RECOGNISERS = ("kit:faceapi_recognition", "kit:facenet_casia_inception_resnet_v1", "kit:human_faceres")


@dataclass
class Sample:
    """One labelled photo: file, label (identity or expression), optional known face and split."""

    path: Path
    label: str
    face: Face | None = None
    split: str = ""


def folder_samples(folder: str | Path) -> list[Sample]:
    """``FOLDER/<identity>/<image>`` -> samples (every image file one level down)."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder (expected FOLDER/<identity>/*.jpg)")
    out = [Sample(p, d.name) for d in sorted(root.iterdir()) if d.is_dir()
           for p in sorted(d.iterdir()) if p.suffix.lower() in io.IMAGE_SUFFIXES]
    if not out:
        raise FileNotFoundError(f"{root}: no images in <identity>/ sub-folders")
    return out


@torch.no_grad()
def embed(model: Classifier, image: torch.Tensor, faces: list[Face]) -> np.ndarray:
    """(F, D) embeddings of faces of one photo with the recogniser's own crop."""
    crop = getattr(model, "crop", "loose")
    x = align.chips(image, faces, crop, model.cfg.input_size).to(model.device)
    return model(x).float().cpu().numpy()


def face_of(sample: Sample, image: torch.Tensor, detector: FaceDetector) -> Face | None:
    if sample.face is not None:
        return sample.face
    faces = detector.detect(image)
    if len(faces) > 1:
        log.warning("%s: %d faces, enrolling the largest", sample.path, len(faces))
    return max(faces, key=lambda f: f.size) if faces else None


def enroll(samples: Iterable[Sample], recognisers: Sequence[str | Classifier] = DEFAULT_RECOGNISERS,
           detector: FaceDetector | None = None, scale: float = DEFAULT_SCALE) -> tuple[dict[str, Gallery], list[str]]:
    """Galleries (by recogniser spec) and the list of one-line problems (unreadable file, no face)."""
    from onlymine.models.registry import load_model

    models = [load_model(r) if isinstance(r, str) else r for r in recognisers]
    det = detector or FaceDetector()
    embs: dict[str, list[np.ndarray]] = {m.name: [] for m in models}
    labels: list[str] = []
    sources: list[str] = []
    problems: list[str] = []
    for s in samples:
        try:
            im = io.load_image(s.path).rgb
        except io.ImageError as e:
            problems.append(str(e))
            continue
        face = face_of(s, im, det)
        if face is None:
            problems.append(f"{s.path}: no face found")
            continue
        for m in models:
            embs[m.name].append(embed(m, im, [face])[0])
        labels.append(s.label)
        sources.append(str(s.path))
    out = {}
    for m in models:
        e = np.stack(embs[m.name]) if embs[m.name] else np.zeros((0, 1), np.float32)
        out[m.name] = Gallery(m.name, np.zeros((0, e.shape[1]), np.float32), [], [], scale).add(e, labels, sources)
    return out, problems


def save_galleries(galleries: dict[str, Gallery], out_dir: str | Path) -> list[Path]:
    return [g.save(gallery_file(out_dir, spec)) for spec, g in galleries.items()]
