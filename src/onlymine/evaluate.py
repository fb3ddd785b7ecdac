"""Score saved protected files against judges: accuracy, agreement, image quality and robustness.

API (shared by ``onlymine evaluate`` and every experiment; the faces and detection experiments plug in their
own :class:`~onlymine.judges.Judge` objects):

* :func:`pair_folders` (clean dir, protected dir) -> list of :class:`Pair` (matched by relative path, any
  suffix: ``a.jpg`` <-> ``a.png``); :func:`read_labels` reads ``file,label`` CSVs.
* :func:`evaluate_pairs` (pairs, judges, authorized=NAME, labels, transforms) -> :class:`Evaluation` with
  ``images`` (one quality row per image: psnr, ssim, linf, l2, lpips) and ``predictions`` (one row per
  image x pipeline x judge: label, clean_pred, pred, kept, correct, clean_correct, role; the field is called
  ``transform``). Every prediction is made on the saved 8-bit file as decoded from disk, through a pipeline of
  the threat suite (:mod:`onlymine.threats`, PIL and torchvision only: ``crop, full, fivecrop, jpeg75, jpeg50,
  half, social``), and compared with the judge's prediction on the clean photo through the same pipeline. A judge
  that reads only its own way (a detector) gets the pipelines that change the file, read its own way. With
  ``cache_dir`` the result is stored in ``cache_dir/evaluation.json`` and reused while the files, judges, labels
  and pipelines are unchanged. ``clean_cache`` (a dict) shares clean predictions between calls.
* :func:`summarize` (evaluation, keep=lambda name: bool) -> rows per (transform, judge): ``n``, ``n_labelled``,
  ``accuracy``, ``clean_accuracy``, ``agreement`` (fractions in [0, 1], ``None`` when undefined), ``role``.
  :func:`quality_summary` gives the mean quality metrics.
* :func:`evaluate_folders` runs all of this and writes ``per_image.csv``, ``predictions.csv`` and
  ``summary.json`` (via :mod:`onlymine.report`).

Predictions of any task go in the rows as they are (ints, strings, lists of boxes); ``kept``/``correct``
come from the judge and may be ``bool`` or a score in [0, 1]; summaries average them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from onlymine import io, threats
from onlymine.judges import Judge
from onlymine.metrics import QUALITY_KEYS, finite_mean, image_quality, lpips_status
from onlymine.models.preprocess import crop_box

log = logging.getLogger(__name__)

CACHE_FILE = "evaluation.json"
CACHE_VERSION = 2  # 2: the threat suite


# ------------------------------------------------------------------------------------------ threats
TRANSFORMS = threats.NAMES  # every report judges the saved files through the threat suite (onlymine.threats)
HEADLINE = "crop"  # the model's published pipeline: the paper's number


# ------------------------------------------------------------------------------------------ inputs
@dataclass(frozen=True)
class Pair:
    """A clean file and its protected copy; ``name`` is the clean file's path relative to its folder."""

    name: str
    clean: Path
    protected: Path


def pair_folders(clean: str | Path, protected: str | Path) -> list[Pair]:
    """Match images of two folders by relative path without suffix (``x/a.jpg`` <-> ``x/a.png``).

    Clean images with no protected copy are logged and left out. Raises ``ValueError`` if nothing matches.
    """
    cdir, pdir = Path(clean), Path(protected)
    cfiles, _ = io.find_images([cdir], exclude=pdir if pdir.resolve() != cdir.resolve() else None)
    pfiles, _ = io.find_images([pdir])
    by_stem = {str(p.relative_to(pdir).with_suffix("")): p for p in pfiles}
    pairs, missing = [], []
    for c in cfiles:
        rel = c.relative_to(cdir)
        p = by_stem.get(str(rel.with_suffix("")))
        if p is None:
            missing.append(str(rel))
        else:
            pairs.append(Pair(str(rel), c, p))
    if missing:
        log.warning("%d clean image(s) have no protected copy in %s (e.g. %s)", len(missing), pdir, missing[0])
    if not pairs:
        raise ValueError(f"{pdir}: no protected file matches an image of {cdir}")
    return pairs


def read_labels(path: str | Path) -> dict[str, Any]:
    """``file,label`` CSV (more columns allowed) -> {file name: label}; integer labels become ``int``."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise ValueError(f"{path}: cannot read labels ({e.strerror or e})") from e
    if not rows or "file" not in rows[0] or "label" not in rows[0]:
        raise ValueError(f"{path}: a labels CSV needs the columns 'file' and 'label'")
    out: dict[str, Any] = {}
    for r in rows:
        lab = r["label"].strip()
        try:
            out[r["file"].strip()] = int(lab)
        except ValueError:
            out[r["file"].strip()] = lab or None
    return out


def label_for(labels: Mapping[str, Any] | None, name: str) -> Any:
    """A pair's label: by relative path, else by file name, else ``None``."""
    if not labels:
        return None
    return labels.get(name, labels.get(Path(name).name))


# ------------------------------------------------------------------------------------------ evaluation
@dataclass
class Evaluation:
    """Per-image quality rows and per (image, transform, judge) prediction rows."""

    images: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "predictions": self.predictions, "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Evaluation:
        return cls(d.get("images", []), d.get("predictions", []), d.get("meta", {}))


def _jsonable(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v


def _cache_key(pairs: Sequence[Pair], judges: Sequence[Judge], authorized: str | None, labels: Mapping | None,
               transforms: Sequence[str], quality: bool) -> str:
    h = hashlib.sha256()
    for p in pairs:
        h.update(f"{p.name}|{io.sha256_file(p.clean)}|{io.sha256_file(p.protected)}\n".encode())
    lab = {p.name: label_for(labels, p.name) for p in pairs}
    h.update(json.dumps([[j.name for j in judges], authorized, lab, list(transforms), quality, CACHE_VERSION],
                        sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


def _predict(judge: Judge, images: list[Any], how: str) -> list[Any]:
    """``judge`` on PIL ``images``, read ``how`` (a judge with its own way of reading gets tensors)."""
    reader = getattr(judge, "read", None)
    preds = reader(images, how) if reader is not None else judge.predict([_tensor(im) for im in images])
    if len(preds) != len(images):
        raise RuntimeError(f"judge {judge.name} returned {len(preds)} predictions for {len(images)} images")
    return [_jsonable(p) for p in preds]


def _tensor(image: Any) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255


def reads_of(judge: Judge) -> tuple[str, ...]:
    """The threat-suite reads a judge supports (``crop`` alone: it reads the file its own way)."""
    return tuple(getattr(judge, "reads", ("crop",)))


def _score(v: Any) -> float | None:
    return None if v is None else float(v)


def evaluate_pairs(pairs: Sequence[Pair], judges: Sequence[Judge], authorized: str | None = None,
                   labels: Mapping[str, Any] | None = None, transforms: Sequence[str] = tuple(TRANSFORMS),
                   quality: bool = True, cache_dir: str | Path | None = None,
                   clean_cache: dict[tuple[str, str], Any] | None = None, batch_size: int = 8,
                   progress: bool = True, desc: str = "evaluate") -> Evaluation:
    """Quality of each pair and every judge's predictions on the saved protected files (see module doc).

    Args:
        pairs: clean/protected files (:func:`pair_folders`).
        judges: the models that score the files; the one named ``authorized`` gets role ``authorized``.
        labels: ground truth by file name (``None``: agreement only).
        transforms: pipelines of the threat suite (:data:`TRANSFORMS`) each file is read through.
        quality: compute the per-image quality metrics.
        cache_dir: folder whose ``evaluation.json`` caches this result.
        clean_cache: shared {(judge name, clean sha256, pipeline): prediction} across calls.
    """
    threats.check(transforms)
    names = [j.name for j in judges]
    if len(set(names)) != len(names):
        raise ValueError(f"judge names must be unique, got {names}")
    cache = Path(cache_dir) / CACHE_FILE if cache_dir else None
    key = _cache_key(pairs, judges, authorized, labels, transforms, quality) if cache else ""
    if cache and cache.is_file():
        try:
            d = json.loads(cache.read_text())
            if d.get("meta", {}).get("key") == key:
                log.info("%s: evaluation reused from cache", cache)
                return Evaluation.from_dict(d)
        except (json.JSONDecodeError, OSError) as e:
            log.warning("%s: unreadable evaluation cache, recomputing (%s)", cache, e)
    clean_cache = {} if clean_cache is None else clean_cache
    lp_ok, lp_why = lpips_status()
    auth_model = next((getattr(j, "model", None) for j in judges if j.name == authorized), None)
    auth_cfg = getattr(auth_model, "cfg", None) if auth_model is not None and auth_model.cfg.crop_pct else None
    ev = Evaluation(meta={"key": key, "judges": names, "authorized": authorized, "transforms": list(transforms),
                          "lpips": lp_ok, "lpips_note": lp_why, "n_pairs": len(pairs)})
    from tqdm.auto import tqdm

    bar = tqdm(total=len(pairs), unit="img", desc=desc, disable=not progress)
    for start in range(0, len(pairs), batch_size):
        chunk = list(pairs[start : start + batch_size])
        clean = [io.load_image(p.clean) for p in chunk]
        prot = [io.load_image(p.protected).rgb for p in chunk]
        for p, c, x in zip(chunk, clean, prot, strict=True):
            if c.rgb.shape != x.shape:
                raise ValueError(f"{p.protected}: size {tuple(x.shape[1:])} differs from {p.clean} "
                                 f"{tuple(c.rgb.shape[1:])}")
            row: dict[str, Any] = {"image": p.name, "clean": str(p.clean), "protected": str(p.protected),
                                   "label": label_for(labels, p.name)}
            if quality:
                box = crop_box(*x.shape[-2:], auth_cfg) if auth_cfg is not None else None
                row.update(image_quality(c.rgb, x, with_lpips=lp_ok, box=box))
            ev.images.append(row)
        clean_pil = [io.to_pil(c.rgb if c.bit_depth == 8 else io.quantize(c.rgb)) for c in clean]
        prot_pil = [io.to_pil(x) for x in prot]
        changed = {t: ([threats.SUITE[t](im) for im in clean_pil], [threats.SUITE[t](im) for im in prot_pil])
                   for t in transforms}
        for judge in judges:
            for t in transforms:
                how = threats.SUITE[t].read
                if how not in reads_of(judge):
                    continue
                clean_in, prot_in = changed[t]
                need = [i for i, c in enumerate(clean) if (judge.name, c.sha256, t) not in clean_cache]
                if need:
                    for i, pred in zip(need, _predict(judge, [clean_in[i] for i in need], how), strict=True):
                        clean_cache[(judge.name, clean[i].sha256, t)] = pred
                cpred = [clean_cache[(judge.name, c.sha256, t)] for c in clean]
                for p, cp, pp in zip(chunk, cpred, _predict(judge, prot_in, how), strict=True):
                    lab = label_for(labels, p.name)
                    ev.predictions.append({
                        "image": p.name, "transform": t, "judge": judge.name,
                        "role": "authorized" if judge.name == authorized else "unauthorized",
                        "label": lab, "clean_pred": cp, "pred": pp,
                        "kept": _score(judge.kept(cp, pp)),
                        "correct": _score(judge.correct(pp, lab)),
                        "clean_correct": _score(judge.correct(cp, lab)),
                    })
        bar.update(len(chunk))
    bar.close()
    if cache:
        io.write_text_atomic(cache, json.dumps(ev.to_dict(), default=str) + "\n")
    return ev


def _mean(vals: list[float | None]) -> float | None:
    v = [x for x in vals if x is not None]
    return sum(v) / len(v) if v else None


def summarize(ev: Evaluation, keep: Callable[[str], bool] | None = None) -> list[dict[str, Any]]:
    """One row per (transform, judge) over the images ``keep`` accepts (all by default).

    ``accuracy`` is over images with a usable label (``n_labelled``); ``agreement`` (prediction kept from the
    clean one) over all ``n`` images; ``clean_accuracy`` is the untouched images' accuracy on the same set.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in ev.predictions:
        if keep is None or keep(r["image"]):
            groups.setdefault((r["transform"], r["judge"]), []).append(r)
    out = []
    for (t, j), rows in groups.items():
        labelled = [r for r in rows if r["correct"] is not None]
        out.append({"transform": t, "judge": j, "role": rows[0]["role"], "n": len(rows),
                    "n_labelled": len(labelled), "accuracy": _mean([r["correct"] for r in labelled]),
                    "clean_accuracy": _mean([r["clean_correct"] for r in labelled]),
                    "agreement": _mean([r["kept"] for r in rows])})
    return out


def threat_summary(ev: Evaluation, keep: Callable[[str], bool] | None = None) -> list[dict[str, Any]]:
    """Per judge, over the threat suite: agreement (and accuracy) through each pipeline, the worst pipeline (the
    highest agreement: where the protection is weakest) and the mean over pipelines."""
    rows = summarize(ev, keep)
    out = []
    for judge in dict.fromkeys(r["judge"] for r in rows):
        mine = {r["transform"]: r for r in rows if r["judge"] == judge}
        agree = {t: r["agreement"] for t, r in mine.items() if r["agreement"] is not None}
        worst = max(agree, key=lambda t: agree[t]) if agree else None
        out.append({"judge": judge, "role": next(iter(mine.values()))["role"], "n": max(r["n"] for r in mine.values()),
                    "agreement": agree, "accuracy": {t: r["accuracy"] for t, r in mine.items()},
                    "worst": worst, "worst_agreement": agree.get(worst) if worst else None,
                    "mean_agreement": _mean(list(agree.values()))})
    return out


def quality_summary(ev: Evaluation, keep: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """Mean of each quality metric over the kept images (``None`` where unavailable, e.g. LPIPS offline)."""
    rows = [r for r in ev.images if keep is None or keep(r["image"])]
    out: dict[str, Any] = {"n": len(rows)}
    for k in QUALITY_KEYS:
        out[k] = finite_mean([r.get(k) for r in rows])
    out["linf_max"] = max((r["linf"] for r in rows if r.get("linf") is not None), default=None)
    return out


def evaluate_folders(clean: str | Path, protected: str | Path, judges: Sequence[Judge], out_dir: str | Path,
                     authorized: str | None = None, labels: Mapping[str, Any] | None = None,
                     transforms: Sequence[str] = tuple(TRANSFORMS), progress: bool = True) -> dict[str, Any]:
    """``onlymine evaluate``: pair the folders, evaluate, write ``per_image.csv``, ``predictions.csv`` and
    ``summary.json`` to ``out_dir``; returns the summary."""
    from onlymine import report

    out = Path(out_dir)
    pairs = pair_folders(clean, protected)
    ev = evaluate_pairs(pairs, judges, authorized=authorized, labels=labels, transforms=transforms,
                        cache_dir=out, progress=progress)
    summary = {"clean": str(clean), "protected": str(protected), "n_pairs": len(pairs), "authorized": authorized,
               "judges": [j.name for j in judges], "lpips": ev.meta.get("lpips_note"),
               "quality": quality_summary(ev), "models": summarize(ev), "threats": threat_summary(ev)}
    report.write_csv(out / "per_image.csv", ev.images)
    report.write_csv(out / "predictions.csv", ev.predictions)
    report.write_json(out / "summary.json", summary)
    return summary
