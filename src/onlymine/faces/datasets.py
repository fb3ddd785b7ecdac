"""Loaders for the face datasets users have (not available offline): CelebA-HQ identities and AffectNet.

* CelebA-HQ identity split: either a folder tree ``ROOT/[train|test/]<identity>/<image>`` (the common
  307-identity split is distributed this way), or a mapping file of ``<image> <identity>`` lines (CelebA's
  ``identity_CelebA.txt`` format; commas or whitespace; optional header) with the images in one folder.
  ``min_images`` keeps identities with at least that many images (the 307-identity split keeps those with
  enough photos), ``max_identities`` the most frequent ones.
* AffectNet: its CSV (``subDirectory_filePath, face_x, face_y, face_width, face_height, ..., expression``)
  or any CSV with an image path column and an expression column (index or name). AffectNet's 8 expressions
  (0 Neutral ... 7 Contempt) are kept; 8-10 (None, Uncertain, No-Face) are skipped. The face box, when
  given, is used instead of detection.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path

from onlymine import io
from onlymine.faces.align import Face
from onlymine.faces.enroll import Sample

log = logging.getLogger(__name__)

AFFECTNET_EXPRESSIONS = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
PATH_COLUMNS = ("subdirectory_filepath", "path", "image", "file", "filename", "image_path")
LABEL_COLUMNS = ("expression", "label", "emotion")


class DatasetError(ValueError):
    """A dataset file that cannot be read; the message names the file and the problem."""


def _filter(samples: list[Sample], min_images: int, max_identities: int | None) -> list[Sample]:
    counts = Counter(s.label for s in samples)
    keep = [k for k, n in counts.most_common() if n >= min_images][: max_identities or None]
    keep_set = set(keep)
    return [s for s in samples if s.label in keep_set]


def celebahq_identity(root: str | Path, mapping: str | Path | None = None, split: str | None = None,
                      min_images: int = 1, max_identities: int | None = None) -> list[Sample]:
    """CelebA-HQ identity samples from a folder tree or a mapping file (see the module docstring)."""
    root = Path(root)
    if mapping is not None:
        samples = _mapping_samples(root, Path(mapping))
    else:
        base = root / split if split and (root / split).is_dir() else root
        if not base.is_dir():
            raise DatasetError(f"{base}: no such folder")
        samples = [Sample(p, d.name, split=split or "") for d in sorted(base.iterdir()) if d.is_dir()
                   for p in sorted(d.iterdir()) if p.suffix.lower() in io.IMAGE_SUFFIXES]
        if not samples:
            raise DatasetError(f"{base}: no images in <identity>/ sub-folders")
    return _filter(samples, min_images, max_identities)


def _mapping_samples(root: Path, mapping: Path) -> list[Sample]:
    if not mapping.is_file():
        raise DatasetError(f"{mapping}: no such mapping file")
    samples = []
    for n, line in enumerate(mapping.read_text().splitlines(), 1):
        parts = line.replace(",", " ").split()
        if not parts or line.startswith("#"):
            continue
        if len(parts) < 2:
            raise DatasetError(f"{mapping}:{n}: expected '<image> <identity>', got {line!r}")
        if Path(parts[0]).suffix.lower() not in io.IMAGE_SUFFIXES:
            if n == 1:  # a header line
                continue
            raise DatasetError(f"{mapping}:{n}: {parts[0]!r} is not an image file name")
        samples.append(Sample(root / parts[0], parts[1]))
    if not samples:
        raise DatasetError(f"{mapping}: no '<image> <identity>' lines")
    return samples


def affectnet(csv_path: str | Path, image_root: str | Path | None = None,
              classes: tuple[str, ...] = AFFECTNET_EXPRESSIONS) -> list[Sample]:
    """AffectNet samples (label = expression name) from its CSV; images relative to ``image_root``."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"{csv_path}: no such CSV file")
    root = Path(image_root) if image_root else csv_path.parent
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        cols = {c.strip().lower(): c for c in reader.fieldnames or []}
        pcol = next((cols[c] for c in PATH_COLUMNS if c in cols), None)
        lcol = next((cols[c] for c in LABEL_COLUMNS if c in cols), None)
        if pcol is None or lcol is None:
            raise DatasetError(f"{csv_path}: needs an image path column ({', '.join(PATH_COLUMNS)}) and an "
                               f"expression column ({', '.join(LABEL_COLUMNS)}); found {reader.fieldnames}")
        out = []
        for n, row in enumerate(reader, 2):
            raw = (row.get(lcol) or "").strip()
            if raw.lstrip("-").isdigit():
                k = int(raw)
                if not 0 <= k < len(classes):
                    continue  # AffectNet 8-10: none / uncertain / no face
                label = classes[k]
            elif raw.lower() in classes:
                label = raw.lower()
            else:
                raise DatasetError(f"{csv_path}:{n}: unknown expression {raw!r}")
            out.append(Sample(root / row[pcol].strip(), label, _box(row, cols)))
    return out


def _box(row: dict[str, str], cols: dict[str, str]) -> Face | None:
    keys = ("face_x", "face_y", "face_width", "face_height")
    if not all(k in cols for k in keys):
        return None
    try:
        x, y, w, h = (float(row[cols[k]]) for k in keys)
    except (TypeError, ValueError):
        return None
    return Face((x, y, x + w, y + h)) if w > 0 and h > 0 else None
