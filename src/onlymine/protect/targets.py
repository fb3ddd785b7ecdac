"""What the protect loop protects in a photo: a target prepares the attack's inputs and the labels it defends,
builds the attack, composes the protected photo and reads the saved file back for the verdict.

:class:`WholeImage` protects every pixel; :class:`onlymine.faces.protect.FaceRegions` the faces of a photo.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

from onlymine import io
from onlymine.attacks import Attack
from onlymine.models import Classifier
from onlymine.protect.build import build_attack

if TYPE_CHECKING:
    from onlymine.protect.loop import Protector


@dataclass
class Batch:
    """One batch of photos, prepared: ``x0`` per photo (the 8-bit start the budget applies to), and per attack
    item (a photo, or one face of it) its input, the label it defends and its photo. ``skip``: photo -> why it
    has nothing to protect."""

    images: list[io.LoadedImage]
    x0: list[torch.Tensor]
    inputs: list[torch.Tensor]
    labels: torch.Tensor
    photo_of: list[int]
    skip: dict[int, str] = field(default_factory=dict)
    extra: Any = None


class Target(Protocol):
    def attack_model(self) -> Classifier: ...

    def prepare(self, images: list[io.LoadedImage]) -> Batch: ...

    def attack(self, b: Batch, items: list[int], changes: dict[str, Any]) -> Attack: ...

    def compose(self, b: Batch, photo: int, adv: Sequence[torch.Tensor | None]) -> torch.Tensor: ...

    def verify(self, b: Batch, photo: int, reread: torch.Tensor, pil: Any) -> dict[str, Any]: ...

    def lost(self, b: Batch, photo: int, verified: dict[str, Any]) -> str: ...

    def record(self, records: list[dict[str, Any]]) -> Any: ...

    def class_names(self, verified: dict[str, Any]) -> Any: ...

    def row_extra(self, b: Batch, photo: int, verified: dict[str, Any]) -> dict[str, Any]: ...


def within_bounds(image: io.LoadedImage, x0: torch.Tensor, out: torch.Tensor, eps: float) -> torch.Tensor:
    """The protected photo as it may be saved: pixels under full transparency stay as they were, and every 8-bit
    level the save rounds to lies within ``eps`` of the original (the rounding alone could overshoot by half a level
    when ``eps * 255`` is not a whole number, e.g. ``--eps 0.0343``, or, for a photo with more than 8 bits, because
    the attack ran from its 8-bit rounding)."""
    orig = image.rgb.to(out.device)
    lo = torch.ceil((orig - eps) * 255 - 1e-4).clamp(0, 255) / 255
    hi = torch.floor((orig + eps) * 255 + 1e-4).clamp(0, 255) / 255
    out = torch.minimum(torch.maximum(out, lo), hi)
    if image.alpha is not None:
        out = torch.where(image.alpha.to(out.device) == 0, x0, out)
    return out


def read_through(model: Classifier, name: str, pil: list[Any]) -> list[Any]:
    """``model``'s published top-1 on PIL images through threat-suite pipeline ``name`` (five for ``fivecrop``)."""
    from onlymine import threats

    t = threats.SUITE[name]
    return threats.read(model, [t(im) for im in pil], t.read)


def _flat(preds: list[Any]) -> list[list[int]]:
    return [p if isinstance(p, list) else [p] for p in preds]


def class_name(model: Classifier, idx: int) -> str | None:
    names = model.cfg.class_names
    return names[idx] if names and 0 <= idx < len(names) else None


class WholeImage:
    """Every pixel of the photo. The label the attack defends and the verdict on the saved file come from the
    model's published pipeline on the PIL image (:meth:`Classifier.predict_published`), as the owner's code
    reads it; the attack's own differentiable copy is recorded beside it as a diagnostic."""

    def __init__(self, protector: Protector) -> None:
        self.p = protector

    def attack_model(self) -> Classifier:
        return self.p.model

    def pipelines(self) -> tuple[str, ...]:
        return tuple(getattr(self.p.settings.config, "keep_pipelines", ("crop",)))

    def prepare(self, images: list[io.LoadedImage]) -> Batch:
        x0 = [im.rgb if im.bit_depth == 8 else io.quantize(im.rgb) for im in images]
        pil = [io.to_pil(x) for x in x0]
        clean, conf = self.p.model.predict_published(pil)
        labels = clean.cpu()
        if self.pipelines() != ("crop",):  # one clean label per read of every declared pipeline (crop first)
            columns = [labels[:, None]]
            for name in self.pipelines()[1:]:
                columns.append(torch.tensor(_flat(read_through(self.p.model, name, pil)), dtype=torch.long))
            labels = torch.cat(columns, dim=1)
        return Batch(images, x0, x0, labels, list(range(len(images))), extra={"conf": conf.cpu(), "pil": pil})

    def attack(self, b: Batch, items: list[int], changes: dict[str, Any]) -> Attack:
        return build_attack(self.p.fast_model, self.p.settings, self.p.surrogates, **changes)

    def compose(self, b: Batch, photo: int, adv: Sequence[torch.Tensor | None]) -> torch.Tensor:
        out = adv[photo]
        assert out is not None
        return within_bounds(b.images[photo], b.x0[photo], out, self.p.settings.config.eps)

    def verify(self, b: Batch, photo: int, reread: torch.Tensor, pil: Any) -> dict[str, Any]:
        model = self.p.model
        top1, conf = model.predict_published([pil])
        own = model.predict([reread.to(model.device)])[0]  # the attack's own pipeline, fp32: a diagnostic only
        row = b.labels[photo].view(-1).tolist()
        clean = int(row[0])
        out = {"top1": int(top1[0]), "conf": round(float(conf[0]), 6), "kept": int(top1[0]) == clean,
               "clean_top1": clean, "clean_conf": round(float(b.extra["conf"][photo]), 6), "pipeline": "published",
               "differentiable_top1": int(own[0])}
        if self.pipelines() != ("crop",):
            per, k = {"crop": {"top1": out["top1"], "clean": clean, "kept": out["kept"]}}, 1
            for name in self.pipelines()[1:]:
                got = read_through(model, name, [pil])[0]
                want = row[k : k + (len(got) if isinstance(got, list) else 1)]
                k += len(want)
                want_v = want if isinstance(got, list) else want[0]
                per[name] = {"top1": got, "clean": want_v, "kept": got == want_v}
            out["pipelines"] = per
            out["kept"] = all(v["kept"] for v in per.values())
        return out

    def lost(self, b: Batch, photo: int, verified: dict[str, Any]) -> str:
        lost = [n for n, v in verified.get("pipelines", {}).items() if not v["kept"]]
        return "authorized prediction not kept" + (f" through {', '.join(lost)}" if lost else "")

    def record(self, records: list[dict[str, Any]]) -> Any:
        return records[0]

    def class_names(self, verified: dict[str, Any]) -> Any:
        return class_name(self.p.model, verified["top1"])

    def row_extra(self, b: Batch, photo: int, verified: dict[str, Any]) -> dict[str, Any]:
        return {}
