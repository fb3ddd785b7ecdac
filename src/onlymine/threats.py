"""The threat suite: how an unauthorized model may read a saved file, written as a scraper's code would be, with PIL
and torchvision transforms on the decoded file (never onlymine's differentiable copy of a pipeline).

A threat is a change to the file (none, a JPEG round trip, a downscale, a photo-sharing upload) and a *read* by the
model: ``crop`` (its published pipeline: resize of the shorter side, centre crop), ``full`` (the whole frame
stretched to its input size) or ``fivecrop`` (the four corners and the centre of the resized image, each judged).

    crop      the model's published pipeline          full      the whole frame stretched to the input size
    fivecrop  torchvision FiveCrop of the resized photo
    jpeg75    PIL JPEG quality 75, then crop          jpeg50    PIL JPEG quality 50, then crop
    half      PIL downscale to half size, then crop   social    longest side 1080 + JPEG 85, then crop

Agreement is always with the model's own clean prediction through the same threat (the clean photo read the same
way), so a model that is simply bad at, say, ``full`` does not count as fooled.
"""

from __future__ import annotations

import io as _io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torchvision import transforms as T

from onlymine.models.classifier import Classifier

READS = ("crop", "full", "fivecrop")
SOCIAL_SIDE, SOCIAL_QUALITY = 1080, 85


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    """A PIL JPEG round trip (Pillow's defaults otherwise: 4:2:0 chroma, as most uploads are)."""
    buf = _io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return im.convert("RGB")


def half(image: Image.Image) -> Image.Image:
    """Downscale to half size with Pillow's default filter for ``resize`` (bicubic)."""
    w, h = image.size
    return image.resize((max(1, w // 2), max(1, h // 2)))


def social(image: Image.Image) -> Image.Image:
    """A photo-sharing upload: the longest side brought down to 1080 (never up), then JPEG 85."""
    w, h = image.size
    scale = SOCIAL_SIDE / max(w, h)
    if scale < 1:
        image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))))
    return jpeg(image, SOCIAL_QUALITY)


@dataclass(frozen=True)
class Threat:
    name: str
    read: str
    change: Callable[[Image.Image], Image.Image] | None = None
    what: str = ""

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if self.change is None else self.change(image)


SUITE: dict[str, Threat] = {t.name: t for t in (
    Threat("crop", "crop", None, "the model's published pipeline (resize the shorter side, centre crop)"),
    Threat("full", "full", None, "the whole frame stretched to the input size"),
    Threat("fivecrop", "fivecrop", None, "the four corner crops and the centre crop of the resized photo"),
    Threat("jpeg75", "crop", lambda im: jpeg(im, 75), "PIL JPEG quality 75, then crop"),
    Threat("jpeg50", "crop", lambda im: jpeg(im, 50), "PIL JPEG quality 50, then crop"),
    Threat("half", "crop", half, "PIL downscale to half size, then crop"),
    Threat("social", "crop", social, "longest side 1080 and JPEG 85 (a photo-sharing upload), then crop"),
)}
NAMES = tuple(SUITE)


def check(names: Sequence[str]) -> list[str]:
    unknown = [n for n in names if n not in SUITE]
    if unknown:
        raise ValueError(f"unknown pipeline(s) {unknown}; the threat suite has {', '.join(SUITE)}")
    return list(names)


def reads_of(model: Classifier) -> dict[str, Callable[[Image.Image], Any]]:
    """How ``model`` reads a PIL image in each of :data:`READS`, with torchvision transforms: ``crop`` is its
    published transform itself; ``full`` and ``fivecrop`` use its interpolation and normalisation."""
    p = model.cfg.pipeline(model.quantize)
    mode = T.InterpolationMode(p.interpolation)
    tail = T.Compose([T.PILToTensor(), T.ConvertImageDtype(torch.float), T.Normalize(list(p.mean), list(p.std))])
    h, w = model.cfg.input_size
    full = T.Compose([T.Resize([h, w], interpolation=mode, antialias=True), tail])
    resize = p.resize if p.resize is not None else [h, w]
    five = T.Compose([T.Resize(resize if isinstance(resize, int) else list(resize), interpolation=mode,
                               antialias=True), T.FiveCrop([h, w]), T.Lambda(lambda crops: [tail(c) for c in crops])])
    return {"crop": model.published, "full": full, "fivecrop": five}


@torch.no_grad()
def read(model: Classifier, images: Sequence[Image.Image], how: str, batch_size: int = 16) -> list[Any]:
    """Top-1 of ``model`` on PIL ``images`` read ``how``: one class per image, or five for ``fivecrop``."""
    transform = reads_of(model)[how]
    tensors = [transform(im) for im in images]
    flat = [t for x in tensors for t in (x if isinstance(x, list) else [x])]
    out: list[int] = []
    for i in range(0, len(flat), batch_size):
        batch = torch.stack(flat[i : i + batch_size]).to(model.device)
        out += model.run_net(batch).float().argmax(-1).tolist()
    if how != "fivecrop":
        return out
    return [out[5 * k : 5 * k + 5] for k in range(len(images))]
