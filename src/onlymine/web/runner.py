"""One worker's protect path: the job's files -> :class:`onlymine.protect.Protector` -> verification by judges.

Each worker thread owns a :class:`JobRunner` with its own model instances, because feature taps are forward
hooks on the module and must not be shared between threads running at the same time.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from onlymine import evaluate, io
from onlymine.judges import ClassifierJudge
from onlymine.models import Classifier, load_model
from onlymine.protect import Protector
from onlymine.web.config import ServerConfig
from onlymine.web.jobs import Job

log = logging.getLogger(__name__)

PREVIEW_SIDE = 640  # longest side of the before / difference previews


class JobRunner:
    """Loads models lazily (or all at once with :meth:`preload`) and protects one job at a time."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._models: dict[str, Classifier] = {}
        self._protectors: dict[tuple[str, str], Protector] = {}
        self._judges: dict[str, ClassifierJudge] = {}

    def preload(self) -> None:
        for spec in self.config.authorized:
            self._protector(spec, self.config.default_preset)
        for spec in self.config.unauthorized:
            self._judge(spec)

    def _model(self, spec: str) -> Classifier:
        if spec not in self._models:
            log.info("loading %s", spec)
            self._models[spec] = load_model(spec, device=self.config.device)
        return self._models[spec]

    def _protector(self, model: str, preset: str) -> Protector:
        key = (model, preset)
        if key not in self._protectors:
            self._protectors[key] = Protector(self.config.settings(model, preset), device=self.config.device,
                                              model=self._model(model))
        return self._protectors[key]

    def _judge(self, spec: str) -> ClassifierJudge:
        if spec not in self._judges:
            self._judges[spec] = ClassifierJudge(self._model(spec), device=self.config.device)
        return self._judges[spec]

    def run(self, job: Job, deadline: float) -> None:
        """Protect every image of ``job``, recording each result as soon as it is known."""
        prot = self._protector(job.model, job.preset)
        judges = [self._judge(s) for s in self.config.unauthorized if s != job.model]
        job.out_dir.mkdir(exist_ok=True)
        for i, upload in enumerate(job.uploads):
            if job.is_cancelled():
                return
            base = {"index": i, "name": upload.name, "width": upload.width, "height": upload.height}
            if time.time() > deadline:
                job.set_result(i, {**base, "status": "error",
                                   "message": f"{upload.name}: the job ran past its time limit"})
                continue
            job.set_result(i, {**base, "status": "running"})
            try:
                result = self._protect_one(prot, judges, upload.path, job.out_dir, i, stop=job.is_cancelled)
            except io.ImageError as e:
                result = {"status": "error", "message": f"{upload.name}: {e.problem}"}
            job.set_result(i, {**base, **result})

    def _protect_one(self, prot: Protector, judges: list[ClassifierJudge], path: Path, out_dir: Path,
                     i: int, stop: Any = None) -> dict[str, Any]:
        from onlymine import metrics  # imports torchmetrics (slow): on the first job, not at server start

        t0 = time.perf_counter()
        image = io.load_image(path, max_pixels=self.config.max_pixels)
        target = out_dir / f"{i:03d}.png"
        outcome = prot.protect_batch([image], [target], may_overwrite=[True], stop=stop)[0]  # the job's own folder
        row, verified = outcome.row, outcome.row["verified"]
        names = prot.model.cfg.class_names
        authorized = {
            "model": prot.model.name,
            "before": _prediction(verified["clean_top1"], verified.get("clean_conf"), names),
            "after": _prediction(verified["top1"], verified["conf"], names),
            "kept": bool(verified["kept"]),
        }
        if outcome.status != "ok":  # a failed file leaves no output: nothing to preview or judge
            return {"status": outcome.status, "message": outcome.message, "authorized": authorized,
                    "unauthorized": [], "seconds": round(time.perf_counter() - t0, 2)}
        protected = io.load_image(target, max_pixels=self.config.max_pixels).rgb
        clean = image.rgb if image.bit_depth == 8 else io.quantize(image.rgb)
        _save_preview(out_dir / f"{i:03d}-before.jpg", clean)
        cfg = prot.settings.config
        _save_preview(out_dir / f"{i:03d}-diff.jpg", _amplified_difference(clean, protected, cfg.eps))
        return {
            "status": outcome.status,
            "message": outcome.message,
            "authorized": authorized,
            "unauthorized": _judge_rows(judges, path, target, clean, protected),
            "quality": {"psnr": _finite(metrics.psnr(clean, protected)),
                        "ssim": round(metrics.ssim(clean, protected), 5),
                        "linf_255": round(metrics.linf(clean, protected) * 255, 2)},
            "settings": {"eps_255": round(cfg.eps * 255, 2), "steps": getattr(cfg, "steps", None),
                         "attempts": row["attempts"]},
            "seconds": round(time.perf_counter() - t0, 2),
        }


def _judge_rows(judges: list[ClassifierJudge], clean_path: Path, saved: Path, clean: torch.Tensor,
                protected: torch.Tensor) -> list[dict[str, Any]]:
    """Each unauthorized model's prediction on the original and on the saved file (published pipeline), and its
    agreement with itself through every pipeline of the threat suite (the evaluation's own code, on the files)."""
    if not judges:
        return []
    ev = evaluate.evaluate_pairs([evaluate.Pair(clean_path.name, clean_path, saved)], judges, quality=False,
                                 progress=False)
    suite: dict[str, dict[str, float]] = {j.name: {} for j in judges}
    for p in ev.predictions:
        suite[p["judge"]][p["transform"]] = p["kept"]
    rows = []
    for j in judges:
        cls, conf = j.top1([clean, protected])
        names = j.model.cfg.class_names
        rows.append({"model": j.name, "before": _prediction(int(cls[0]), float(conf[0]), names),
                     "after": _prediction(int(cls[1]), float(conf[1]), names), "kept": j.kept(cls[0], cls[1]),
                     "threats": suite[j.name]})
    return rows


def _prediction(idx: int, conf: float | None, names: tuple[str, ...] | None) -> dict[str, Any]:
    label = names[idx] if names and 0 <= idx < len(names) else None
    return {"class": int(idx), "label": label, "confidence": None if conf is None else round(float(conf), 4)}


def _finite(value: float) -> float | None:
    return round(value, 3) if value != float("inf") else None


def _amplified_difference(clean: torch.Tensor, protected: torch.Tensor, eps: float) -> torch.Tensor:
    """|protected - clean| scaled so that a change of ``eps`` is full brightness."""
    return ((protected - clean).abs() / max(eps, 1 / 255)).clamp(0, 1)


def _save_preview(path: Path, rgb: torch.Tensor) -> None:
    """A downscaled (longest side :data:`PREVIEW_SIDE`) JPEG without metadata (fast to encode, for display only)."""
    h, w = rgb.shape[-2:]
    scale = PREVIEW_SIDE / max(h, w)
    if scale < 1:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        rgb = F.interpolate(rgb[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    io.save_image(path, rgb.clamp(0, 1), fmt="jpeg", quality=90, overwrite=True)
