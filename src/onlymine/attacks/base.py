"""What every attack shares: input handling, the eps-ball projection, seeding and per-image records."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from onlymine.attacks.config import AttackConfig
from onlymine.metrics import psnr
from onlymine.models.classifier import Classifier

Images = torch.Tensor | Sequence[torch.Tensor]


def as_list(images: Images) -> list[torch.Tensor]:
    """(N,3,H,W) tensor or sequence of (3,H,W) tensors -> list of (3,H,W) tensors."""
    if isinstance(images, torch.Tensor):
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W) RGB images, got shape {tuple(images.shape)}")
        return list(images.unbind(0))
    out = list(images)
    for im in out:
        if im.dim() != 3 or im.shape[0] != 3:
            raise ValueError(f"expected (3, H, W) RGB images, got shape {tuple(im.shape)}")
    return out


def like_input(xs: list[torch.Tensor], images: Images) -> Images:
    """Give results back in the caller's structure: (N,3,H,W) tensor, single (3,H,W) tensor, or list."""
    if isinstance(images, torch.Tensor):
        return torch.stack(xs) if images.dim() == 4 else xs[0]
    return xs


def project(x: torch.Tensor, x0: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """Onto {|x - x0| <= eps} intersected with [0, 1] (``eps`` a number, or a per-pixel budget tensor)."""
    return torch.clamp(torch.minimum(torch.maximum(x, x0 - eps), x0 + eps), 0.0, 1.0)


def uniform_like(x: torch.Tensor, eps: float, gen: torch.Generator) -> torch.Tensor:
    """U(-eps, eps) noise, drawn on the CPU from ``gen`` so a seed gives the same result on any device."""
    noise = torch.rand(x.shape, generator=gen, dtype=torch.float32)
    return ((noise * 2 - 1) * eps).to(device=x.device, dtype=x.dtype)


@torch.no_grad()
def improve_best(best: list[torch.Tensor], best_score: torch.Tensor, best_margin: torch.Tensor,
                 x: Sequence[torch.Tensor], index: Sequence[int], score: torch.Tensor, margin: torch.Tensor,
                 min_margin: float) -> None:
    """The best-iterate rule: per image, the iterate with the highest ``score`` among those whose authorized
    logit margin is at least ``min_margin``; until one is, the iterate with the largest margin.

    ``x``, ``score`` and ``margin`` are for the images ``index`` (positions in ``best``, ``best_score`` and
    ``best_margin``, updated in place). ``min_margin`` covers the gap between the attack's forward pass (its
    precision, its copy of the pipeline) and the published pipeline the saved file is verified with."""
    pos = torch.tensor(list(index), device=best_margin.device, dtype=torch.long)
    had = best_margin[pos] >= min_margin
    better = torch.where(had, (margin >= min_margin) & (score > best_score[pos]), margin > best_margin[pos])
    for k in torch.nonzero(better).flatten().tolist():
        i = index[k]
        best[i] = x[k].detach().clone()
        best_score[i] = score[k]
        best_margin[i] = margin[k]



class Cancelled(Exception):
    """Raised between two steps of an attack when its ``stop`` callback says so (a cancelled web job)."""


@dataclass
class AttackResult:
    """Adversarial images plus one record per image."""

    images: Images
    records: list[dict[str, Any]] = field(default_factory=list)


class Attack:
    """Base class. Subclasses implement :meth:`perturb` on a list of images already on the model's device.

    Every attack owns a frozen config (``Config``, an :class:`~onlymine.attacks.config.AttackConfig`): pass
    one, or its fields as keywords (``FMD(clf, "features.7", eps=8/255)``), or both (keywords win).

    Args:
        model: the authorized :class:`Classifier`.
        config: the attack's settings (its ``eps``: L-inf budget in [0,1] pixel units; its ``seed``: the same
            seed gives the same output).
        record_layers: feature layers whose distortion is recorded (defaults to the attack's own layers).
    """

    name = "attack"
    Config: ClassVar[type[AttackConfig]] = AttackConfig

    def __init__(self, model: Classifier, config: AttackConfig | None = None,
                 record_layers: Sequence[str] | None = None, **options: Any) -> None:
        cfg = config if config is not None else self.Config()
        if not isinstance(cfg, AttackConfig):
            raise TypeError(f"{type(self).__name__} takes a {self.Config.__name__}, not a {type(cfg).__name__}")
        self.cfg = cfg.replace(**options) if options else cfg
        self.model = model
        self.eps = float(self.cfg.eps)
        self.seed = int(self.cfg.seed)
        self.record_layers = list(record_layers or [])
        self.records: list[dict[str, Any]] = []
        self._clean_feats: dict[str, torch.Tensor] | None = None  # run()'s clean pass, reused by perturb
        self._stop: Callable[[], bool] | None = None
        self.label_table: torch.Tensor | None = None

    # -- API -------------------------------------------------------------
    def __call__(self, images: Images, labels: torch.Tensor | None = None) -> Images:
        return self.run(images, labels).images

    def run(self, images: Images, labels: torch.Tensor | None = None,
            stop: Callable[[], bool] | None = None) -> AttackResult:
        """Protect ``images``. ``labels``: the authorized predictions to keep (default: the model's own); an (N, R)
        table gives one per read of each image (its first column is the published crop's; attacks that defend
        several pipelines read the rest). ``stop`` is asked between steps and raises :class:`Cancelled`."""
        xs = as_list(images)
        device = self.model.device
        x0 = [x.detach().to(device=device, dtype=torch.float32) for x in xs]
        if any(float(x.min()) < 0 or float(x.max()) > 1 for x in x0):
            raise ValueError("images must be in [0, 1]")
        with torch.no_grad():
            logits0, feats0 = self.model.forward_features(x0, self.record_layers)
        table = labels.to(device).long() if labels is not None and labels.dim() == 2 else None
        y = logits0.argmax(-1) if labels is None else (table[:, 0] if table is not None else
                                                         labels.to(device).long().view(-1))
        if len(y) != len(x0):
            raise ValueError(f"{len(y)} labels for {len(x0)} images")
        gen = torch.Generator().manual_seed(self.seed)
        self._clean_feats, self._stop, self.label_table = feats0, stop, table
        try:
            adv = self.perturb(x0, y, gen)
        finally:
            self._clean_feats, self._stop, self.label_table = None, None, None
        adv = [project(a.detach(), x, self.eps) for a, x in zip(adv, x0, strict=True)]
        self.records = self.image_records(x0, adv, logits0, feats0, y)
        out = [a.to(device=x.device, dtype=x.dtype) for a, x in zip(adv, xs, strict=True)]
        return AttackResult(like_input(out, images), self.records)

    def perturb(self, x0: list[torch.Tensor], y: torch.Tensor, gen: torch.Generator) -> list[torch.Tensor]:
        raise NotImplementedError

    def checkpoint(self) -> None:
        """Called by iterative attacks between steps: stop here if the caller asked to."""
        if self._stop is not None and self._stop():
            raise Cancelled(f"{self.name}: stopped between two steps")

    def clean_features(self, x0: list[torch.Tensor], layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Clean feature maps of ``layers``, computed once: reused from :meth:`run`'s clean pass when it
        tapped them (``record_layers``), else one extra forward pass."""
        cached = self._clean_feats
        if cached is not None and all(n in cached and len(cached[n]) == len(x0) for n in layers):
            return {n: cached[n] for n in layers}
        with torch.no_grad():
            return self.model.forward_features(x0, layers)[1]

    def config(self) -> dict[str, Any]:
        """The settings that define the output (saved in manifests)."""
        return {"attack": self.name, **self.cfg.to_dict()}

    # -- records -----------------------------------------------------------
    @torch.no_grad()
    def image_records(self, x0: list[torch.Tensor], adv: list[torch.Tensor], logits0: torch.Tensor,
                      feats0: dict[str, torch.Tensor], y: torch.Tensor) -> list[dict[str, Any]]:
        return image_records(self.model, x0, adv, logits0, feats0, y, self.record_layers)


@torch.no_grad()
def image_records(model: Classifier, x0: list[torch.Tensor], adv: list[torch.Tensor], logits0: torch.Tensor,
                  feats0: dict[str, torch.Tensor], y: torch.Tensor, layers: Sequence[str]) -> list[dict[str, Any]]:
    """Per image: feature distortion (MSE and relative to the clean feature energy) per layer, the authorized
    clean/protected top-1 and confidence, the label used, L-inf and PSNR."""
    logits1, feats1 = model.forward_features(adv, layers)
    p0, p1 = logits0.float().softmax(-1), logits1.float().softmax(-1)
    rows = []
    for i, (a, x) in enumerate(zip(adv, x0, strict=True)):
        row: dict[str, Any] = {
            "label": int(y[i]),
            "clean_top1": int(p0[i].argmax()),
            "clean_conf": round(float(p0[i].max()), 6),
            "protected_top1": int(p1[i].argmax()),
            "protected_conf": round(float(p1[i].max()), 6),
            "linf": float((a - x).abs().max()),
            "psnr": round(psnr(a, x), 4),
        }
        row["kept"] = row["protected_top1"] == row["clean_top1"]
        for name in layers:
            f0, f1 = feats0[name][i].float(), feats1[name][i].float()
            mse = float(torch.mean((f1 - f0) ** 2))
            row[f"feat_mse[{name}]"] = mse
            row[f"feat_rel[{name}]"] = mse / max(float(torch.mean(f0**2)), 1e-12)
        rows.append(row)
    return rows
