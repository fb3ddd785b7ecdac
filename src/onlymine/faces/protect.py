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

:class:`FaceProtector` is a :class:`~onlymine.protect.Protector`, so :func:`onlymine.protect.protect_paths`
(resume, errors, manifest) works unchanged with ``protector=FaceProtector(...)``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
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
from onlymine.protect import Outcome, Protector, build_attack, load_surrogates, retry_changes
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
        from onlymine.protect import pick_device

        dev = pick_device(device)
        model = as_face_model(model if model is not None else load_model(settings.model, device=dev))
        if model.cfg.extra.get("embedding"):
            raise ValueError(f"{settings.model} gives embeddings: enroll identities first (`onlymine enroll`) "
                             "and protect with --model gallery:PATH")
        if settings.lam is None:  # the face keep weight, for FMD+'s hinge too: with faceapi authorized it
            settings = replace(settings, lam=model.default_lam)  # transfers better than lam 10 (74% vs 89%)
        super().__init__(settings, device=device, model=model)
        self.detector = detector or FaceDetector(device=str(dev))
        self.faces_of: dict[str, list[Face]] = {}  # optional: given face geometry per input path

    def _load_surrogates(self) -> list[tuple[Classifier, list[str]]]:
        """Surrogate face models (embedding models need no gallery: only their features are used)."""
        s = self.settings
        return load_surrogates(s.surrogates, s.model, self.device, wrap=as_face_model)

    def _surrogate_views(self, items: Sequence[FaceItem], images: Sequence[torch.Tensor]) -> list[tuple[
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

    def protect_batch(self, images: Sequence[io.LoadedImage], outputs: Sequence[Path],
                      overwrite: bool = False) -> list[Outcome]:
        s, model = self.settings, self.model
        assert isinstance(model, FaceClassifier)
        t0 = time.perf_counter()
        x0 = [(im.rgb if im.bit_depth == 8 else io.quantize(im.rgb)).to(self.device) for im in images]
        faces = [self.detect(im, x) for im, x in zip(images, x0, strict=True)]
        items = [make_item(i, x0[i], f, model) for i in range(len(images)) for f in faces[i]]
        deltas: list[torch.Tensor | None] = [None] * len(items)
        records: list[dict[str, Any]] = [{} for _ in items]
        attempts = [1] * len(images)
        clean: list[int] = []
        if items:
            wrapped = RegionClassifier(model, items)
            res = build_attack(wrapped, s, self._surrogate_views(items, x0)).run([it.r0 for it in items])
            for k, (adv, rec) in enumerate(zip(res.images, res.records, strict=True)):
                deltas[k], records[k] = items[k].mask * (adv - items[k].r0), rec
            clean = [int(r["clean_top1"]) for r in records]
        verified: dict[int, dict[str, Any]] = {}
        pending = [i for i in range(len(images)) if faces[i]]
        for attempt in range(s.retries + 1):
            for i in pending:
                adv = self._compose(x0[i], [(it, deltas[k]) for k, it in enumerate(items) if it.photo == i])
                io.save_image(outputs[i], adv, images[i].alpha, fmt=s.fmt, quality=s.quality,
                              icc_profile=images[i].icc_profile, overwrite=overwrite or attempt > 0)
                verified[i] = self._verify(images[i], x0[i], outputs[i], faces[i],
                                           [clean[k] for k, it in enumerate(items) if it.photo == i])
            pending = [i for i in pending if not verified[i]["kept"]]
            changes = retry_changes(s, attempt)
            if not pending or attempt == s.retries or changes is None:
                break
            log.info("re-optimising faces of %d photo(s) whose saved file flipped the authorized prediction",
                     len(pending))
            redo = [k for k, it in enumerate(items) if it.photo in pending]
            redo_items = [items[k] for k in redo]
            retry = build_attack(RegionClassifier(model, redo_items), s, self._surrogate_views(redo_items, x0),
                                 **changes)
            res = retry.run([items[k].r0 for k in redo], labels=torch.tensor([clean[k] for k in redo]))
            for j, k in enumerate(redo):
                deltas[k], records[k] = items[k].mask * (res.images[j] - items[k].r0), res.records[j]
            for i in pending:
                attempts[i] += 1
        seconds = (time.perf_counter() - t0) / max(1, len(images))
        return [self._outcome(i, im, outputs[i], faces[i], verified.get(i),
                              [records[k] for k, it in enumerate(items) if it.photo == i], attempts[i], seconds)
                for i, im in enumerate(images)]

    def _compose(self, x0: torch.Tensor, parts: list[tuple[FaceItem, torch.Tensor | None]]) -> torch.Tensor:
        delta = torch.zeros_like(x0)
        for it, d in parts:
            if d is not None:
                t, left, b, r = it.region
                delta[:, t:b, left:r] += d
        eps = self.settings.eps
        return torch.clamp(x0 + delta.clamp(-eps, eps), 0.0, 1.0)

    def _verify(self, im: io.LoadedImage, x0: torch.Tensor, out: Path, faces: list[Face],
                clean: list[int]) -> dict[str, Any]:
        reread = io.load_image(out).rgb.to(self.device)
        top1, conf = face_predictions(self.model, reread, faces)
        kept = [int(a) == int(b) for a, b in zip(top1, clean, strict=True)]
        return {
            "top1": top1, "conf": conf, "clean_top1": clean, "kept_faces": kept, "kept": all(kept),
            "faces": len(faces), "linf": float((reread - x0).abs().max()),
            "linf_vs_original": float((reread - im.rgb.to(self.device)).abs().max()),
            "psnr": _psnr(reread, im.rgb.to(self.device)),
        }

    def _outcome(self, i: int, im: io.LoadedImage, out: Path, faces: list[Face], v: dict[str, Any] | None,
                 records: list[dict[str, Any]], attempts: int, seconds: float) -> Outcome:
        s = self.settings
        if v is None:
            msg = f"{im.path}: no face found (protect the whole image without --faces)"
            return Outcome(im.path, "error", msg, {"input": str(im.path), "status": "error", "error": msg,
                                                   "settings_key": s.key(), "sha256": im.sha256})
        ok = v["kept"] and (s.fmt != "png" or v["linf"] <= s.eps + 1e-6)
        msg = "" if ok else (
            f"{im.path}: authorized prediction of {v['kept_faces'].count(False)} of {len(faces)} face(s) not kept "
            f"on the saved file after {attempts} attempt(s)" if not v["kept"]
            else f"{im.path}: L-inf {v['linf']:.5f} exceeds eps {s.eps:.5f}")
        names = self.model.cfg.class_names
        row = {
            "input": str(im.path), "output": str(out), "sha256": im.sha256, "status": "ok" if ok else "failed",
            "settings_key": s.key(), "settings": s.to_dict(), "size": list(im.size), "mode": im.mode,
            "attempts": attempts, "seconds": round(seconds, 3), "record": records, "verified": v,
            "model_class": [names[t] if names and 0 <= t < len(names) else None for t in v["top1"]],
            "faces": [{**f.to_dict(), "clean_top1": c, "top1": t, "kept": k}
                      for f, c, t, k in zip(faces, v["clean_top1"], v["top1"], v["kept_faces"], strict=True)],
        }
        if msg:
            row["error"] = msg
        return Outcome(im.path, row["status"], msg, row)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(torch.mean((a - b) ** 2))
    return math.inf if mse == 0 else round(10 * math.log10(1 / mse), 4)
