"""Face-aware protection of whole photos: detect, align, protect every face, paste back without a seam.

For each face, the authorized model's own chip (its alignment, :mod:`onlymine.faces.align`) is a
differentiable warp of a *region* of the full-resolution photo: the chip's footprint.
The attack (the same :func:`onlymine.protect.build_attack`, FMD by default) optimises the region through
:class:`RegionClassifier`, which shows the model ``r0 + m * (x - r0)``: the clean region plus the
perturbation under a mask ``m`` that is 1 in the footprint's core and falls smoothly (raised cosine over
:data:`FEATHER` x the face size) to 0 at the footprint's border. So
the perturbation lives at full resolution, fades out instead of ending at a crop edge, and never exceeds eps.
Every face of a photo is protected in the same batch; the deltas are added into the photo, which is saved
atomically and re-read; the manifest row's verification covers every face.

:class:`FaceRegions` is a target of the one protect loop (:mod:`onlymine.protect.loop`); :class:`FaceProtector`
is the :class:`~onlymine.protect.Protector` that uses it, so :func:`onlymine.protect.protect_paths` (resume,
errors, manifest) works unchanged with ``protector=FaceProtector(...)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from onlymine import io
from onlymine.attacks.base import as_list
from onlymine.faces import align
from onlymine.faces.align import Face
from onlymine.faces.classifier import FaceClassifier
from onlymine.faces.detect import FaceDetector
from onlymine.models.classifier import Classifier
from onlymine.models.preprocess import to_model_input
from onlymine.protect import Batch, Protector, build_attack, load_surrogates
from onlymine.protect.targets import class_name, within_bounds
from onlymine.runtime import pick_device
from onlymine.settings import ProtectSettings

log = logging.getLogger(__name__)

FEATHER = 0.25  # feather band width, relative to the face size
MIN_FEATHER = 6  # pixels


@dataclass
class FaceItem:
    """One face to protect: its photo, geometry, region (top, left, bottom, right), clean region and mask."""

    photo: int
    face: Face
    affine: np.ndarray
    region: tuple[int, int, int, int]
    r0: torch.Tensor
    mask: torch.Tensor

    @property
    def offset(self) -> tuple[int, int]:
        return self.region[0], self.region[1]


def feather_mask(region: tuple[int, int, int, int], inner: tuple[float, float, float, float],
                 band: float) -> torch.Tensor:
    """(1, h, w) mask: 1 inside ``inner`` (photo x1, y1, x2, y2), a raised-cosine ramp to 0 over ``band``
    pixels outside it, 0 beyond."""
    t, left, b, r = region
    ys = torch.arange(t, b, dtype=torch.float32) + 0.5
    xs = torch.arange(left, r, dtype=torch.float32) + 0.5
    x1, y1, x2, y2 = inner
    dx = torch.clamp(torch.maximum(x1 - xs, xs - x2), min=0)  # distance outside the inner box
    dy = torch.clamp(torch.maximum(y1 - ys, ys - y2), min=0)
    d = torch.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2)
    ramp = 0.5 * (1 + torch.cos(torch.clamp(d / band, max=1.0) * math.pi))
    return ramp.unsqueeze(0)


def make_item(photo: int, image: torch.Tensor, face: Face, model: FaceClassifier) -> FaceItem:
    size = model.cfg.input_size
    a = align.chip_affine(model.crop, face, size, image)
    x1, y1, x2, y2 = align.footprint(a, size)
    band = max(MIN_FEATHER, FEATHER * face.size)
    H, W = image.shape[-2:]
    x1c, y1c, x2c, y2c = max(0.0, x1), max(0.0, y1), min(float(W), x2), min(float(H), y2)
    # the region is the chip footprint; the mask is 1 in its core and ramps to 0 over ``band`` pixels
    # towards the footprint's edge, so the optimised perturbation itself fades out (no crop edge to see)
    # (4 px beyond the footprint: align.warp's antialiasing window is then the same as on the whole photo, so
    # the model's clean prediction on the region equals its prediction on the photo)
    region = (max(0, int(math.floor(y1c)) - 4), max(0, int(math.floor(x1c)) - 4),
              min(H, int(math.ceil(y2c)) + 4), min(W, int(math.ceil(x2c)) + 4))
    t, left, b, r = region
    inner = (x1c + band, y1c + band, x2c - band, y2c - band)
    mask = feather_mask(region, inner, band).to(image.device)
    return FaceItem(photo, face, a, region, image[:, t:b, left:r].clone(), mask)


class RegionClassifier(FaceClassifier):
    """A face model seen through fixed face regions: input ``k`` is the (full-resolution) region of ``items[k]``;
    the model sees the chip of ``r0 + m * (x - r0)``. Same net, config and feature taps.

    ``affines``: the chip alignment per item; by default the items' own (the authorized model's). A surrogate
    model sees the authorized model's regions through its own alignment (:meth:`FaceProtector._surrogate_views`).
    """

    def __init__(self, base: FaceClassifier, items: Sequence[FaceItem],
                 affines: Sequence[np.ndarray] | None = None) -> None:
        super().__init__(base.net, base.cfg)
        self._layer = base.default_layer()
        self._spread = base._spread  # same net: share the probed multi-layer choice
        self.items = list(items)
        self.affines = list(affines) if affines is not None else [it.affine for it in self.items]

    def blend(self, k: int, x: torch.Tensor) -> torch.Tensor:
        it = self.items[k]
        return it.r0 + it.mask * (x - it.r0)

    def preprocess(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        xs = as_list(images)
        if len(xs) != len(self.items):
            raise ValueError(f"{len(xs)} regions for {len(self.items)} faces")
        size = self.cfg.input_size
        chips = [align.warp(self.blend(k, x), self.affines[k], size, it.offset) for k, (x, it) in
                 enumerate(zip(xs, self.items, strict=True))]
        return to_model_input(torch.stack(chips), self.cfg, quantize=self.quantize)


def as_face_model(model: Classifier) -> FaceClassifier:
    """A loaded model as a face model (a generic classifier sees the loose face crop)."""
    if isinstance(model, FaceClassifier):
        return model
    return FaceClassifier(model.net, replace(model.cfg, extra={**model.cfg.extra, "crop": "loose"}))


def face_predictions(model: Classifier, image: torch.Tensor, faces: list[Face]) -> tuple[list[int], list[float]]:
    """Authorized top-1 and confidence for every face of one photo, with the model's own crops."""
    if not faces:
        return [], []
    crop = getattr(model, "crop", "loose")
    top1, conf = model.predict(align.chips(image, faces, crop, model.cfg.input_size))
    return top1.tolist(), [round(float(c), 6) for c in conf]


class FaceRegions:
    """The faces of a photo (module docstring): each face's region is an attack item, seen by the authorized face
    model through its own alignment; the label it defends is the model's prediction on the clean face, and the
    verdict on the saved file is the model's prediction on every face of the re-read photo."""

    def __init__(self, protector: FaceProtector) -> None:
        self.p = protector

    def attack_model(self) -> Classifier:
        return self.p.model

    def prepare(self, images: list[io.LoadedImage]) -> Batch:
        model = self.p.model
        assert isinstance(model, FaceClassifier)
        x0 = [(im.rgb if im.bit_depth == 8 else io.quantize(im.rgb)).to(self.p.device) for im in images]
        faces = [self.p.detect(im, x) for im, x in zip(images, x0, strict=True)]
        items = [make_item(i, x0[i], f, model) for i in range(len(images)) for f in faces[i]]
        labels = RegionClassifier(model, items).predict([it.r0 for it in items])[0].cpu() if items else \
            torch.zeros(0, dtype=torch.long)
        skip = {i: "no face found (protect the whole image without --faces)" for i in range(len(images))
                if not faces[i]}
        return Batch(images, x0, [it.r0 for it in items], labels, [it.photo for it in items], skip,
                     extra={"faces": faces, "items": items})

    def attack(self, b: Batch, items: list[int], changes: dict[str, Any]) -> Any:
        chosen = [b.extra["items"][k] for k in items]
        return build_attack(RegionClassifier(self.p.model, chosen), self.p.settings,
                            self.p.surrogate_views(chosen, b.x0), **changes)

    def compose(self, b: Batch, photo: int, adv: Sequence[torch.Tensor | None]) -> torch.Tensor:
        x0 = b.x0[photo]
        delta = torch.zeros_like(x0)
        for k, it in enumerate(b.extra["items"]):
            if it.photo == photo and adv[k] is not None:
                t, left, bottom, r = it.region
                delta[:, t:bottom, left:r] += it.mask * (adv[k] - it.r0)
        eps = self.p.settings.config.eps
        return within_bounds(b.images[photo], x0, torch.clamp(x0 + delta.clamp(-eps, eps), 0.0, 1.0), eps)

    def verify(self, b: Batch, photo: int, reread: torch.Tensor, pil: Any) -> dict[str, Any]:
        faces = b.extra["faces"][photo]
        clean = [int(b.labels[k]) for k in range(len(b.inputs)) if b.photo_of[k] == photo]
        top1, conf = face_predictions(self.p.model, reread.to(self.p.device), faces)
        kept = [int(a) == int(c) for a, c in zip(top1, clean, strict=True)]
        return {"top1": top1, "conf": conf, "clean_top1": clean, "kept_faces": kept, "kept": all(kept),
                "faces": len(faces)}

    def lost(self, b: Batch, photo: int, verified: dict[str, Any]) -> str:
        return (f"authorized prediction of {verified['kept_faces'].count(False)} of {verified['faces']} face(s) "
                "not kept")

    def record(self, records: list[dict[str, Any]]) -> Any:
        return records

    def class_names(self, verified: dict[str, Any]) -> Any:
        return [class_name(self.p.model, t) for t in verified["top1"]]

    def row_extra(self, b: Batch, photo: int, v: dict[str, Any]) -> dict[str, Any]:
        faces = b.extra["faces"][photo]
        return {"faces": [{**f.to_dict(), "clean_top1": c, "top1": t, "kept": k}
                          for f, c, t, k in zip(faces, v["clean_top1"], v["top1"], v["kept_faces"], strict=True)]}


class FaceProtector(Protector):
    """Protects the faces of whole photos with an authorized face model (see the module docstring).

    Args:
        settings: protection settings (``settings.model``: a face model spec, e.g. ``gallery:PATH``).
        device: torch device.
        model: an already loaded face Classifier.
        detector: the face detector (MTCNN by default).
    """

    def __init__(self, settings: ProtectSettings, device: str = "auto", model: Classifier | None = None,
                 detector: FaceDetector | None = None) -> None:
        from onlymine.models import load_model

        dev = pick_device(device)
        model = as_face_model(model if model is not None else load_model(settings.model, device=dev))
        if model.cfg.extra.get("embedding"):
            raise ValueError(f"{settings.model} gives embeddings: enroll identities first (`onlymine enroll`) "
                             "and protect with --model gallery:PATH")
        super().__init__(settings, device=device, model=model)
        self.detector = detector or FaceDetector(device=str(dev))
        self.faces_of: dict[str, list[Face]] = {}  # optional: given face geometry per input path

    def make_target(self) -> FaceRegions:
        return FaceRegions(self)

    def load_surrogates(self) -> list[tuple[Classifier, list[str]]]:
        """Surrogate face models (embedding models need no gallery: only their features are used)."""
        s = self.settings
        return load_surrogates(getattr(s.config, "surrogates", ()), s.model, self.device, wrap=as_face_model)

    def surrogate_views(self, items: Sequence[FaceItem], images: Sequence[torch.Tensor]) -> list[tuple[
            Classifier, list[str]]]:
        """Each surrogate seeing ``items``' regions through its own chip alignment."""
        out: list[tuple[Classifier, list[str]]] = []
        for sur, names in self.surrogates:
            assert isinstance(sur, FaceClassifier)
            size = sur.cfg.input_size
            affines = [align.chip_affine(sur.crop, it.face, size, images[it.photo]) for it in items]
            out.append((RegionClassifier(sur, items, affines), names))
        return out

    def detect(self, image: io.LoadedImage, x0: torch.Tensor) -> list[Face]:
        given = self.faces_of.get(str(image.path))
        return [replace(f) for f in given] if given is not None else self.detector.detect(x0)
