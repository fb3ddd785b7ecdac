"""Identity as classification: a gallery of enrolled identities turns an embedding model into a classifier.

A :class:`Gallery` keeps every enrolled face's L2-normalised embedding with its identity and source file.
Logits are ``scale * cos(e, c_k)`` for the centroid ``c_k`` (normalised mean) of each identity, so FMD can
protect identity with the recogniser as an ordinary :class:`~onlymine.models.Classifier`. Leave-one-out
centroids (excluding a probe's own source file when the identity has other samples) give real same-person
probes in evaluation.

Stored as ``.npz`` (``embeddings``, ``labels``, ``sources``, ``recogniser``, ``scale``): no pickles.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from onlymine.models.errors import ModelError

DEFAULT_SCALE = 30.0


@dataclass
class Gallery:
    """Enrolled faces of one recogniser.

    Attributes:
        recogniser: the model spec that made the embeddings (``kit:faceapi_recognition``).
        embeddings: (M, D) L2-normalised float32.
        labels: identity name per row; sources: the file each row came from.
        scale: cosine-logit temperature.
    """

    recogniser: str
    embeddings: np.ndarray
    labels: list[str]
    sources: list[str]
    scale: float = DEFAULT_SCALE

    @property
    def identities(self) -> list[str]:
        return sorted(set(self.labels))

    def centroids(self, exclude_source: str | None = None) -> np.ndarray:
        """(K, D) normalised centroid per identity (in :attr:`identities` order). With ``exclude_source``,
        that file's rows are left out of every identity that has other rows (leave-one-out)."""
        e = self.embeddings
        out = []
        for name in self.identities:
            rows = [i for i, lab in enumerate(self.labels) if lab == name]
            kept = [i for i in rows if self.sources[i] != exclude_source] if exclude_source else rows
            c = e[kept or rows].mean(0)
            out.append(c / max(float(np.linalg.norm(c)), 1e-12))
        return np.stack(out).astype(np.float32)

    def logits(self, emb: np.ndarray, exclude_source: str | None = None) -> np.ndarray:
        e = emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)
        return self.scale * e @ self.centroids(exclude_source).T

    def identify(self, emb: np.ndarray, exclude_source: str | None = None) -> list[str]:
        ids = self.identities
        return [ids[int(k)] for k in self.logits(emb, exclude_source).argmax(-1)]

    def add(self, emb: np.ndarray, labels: list[str], sources: list[str]) -> Gallery:
        e = emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)
        return replace(self, embeddings=np.concatenate([self.embeddings, e.astype(np.float32)]),
                       labels=self.labels + list(labels), sources=self.sources + list(sources))

    # -- files -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        from onlymine import io

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part.npz")
        np.savez(tmp, embeddings=self.embeddings.astype(np.float32), labels=np.array(self.labels),
                 sources=np.array(self.sources), recogniser=np.array(self.recogniser),
                 scale=np.array(self.scale, dtype=np.float32))
        os.replace(tmp, path)
        io.write_text_atomic(path.with_suffix(".json"), json.dumps(
            {"recogniser": self.recogniser, "identities": self.identities, "faces": len(self.labels),
             "scale": self.scale}, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Gallery:
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: no such gallery file (make one with `onlymine enroll`)")
        try:
            d = np.load(path, allow_pickle=False)
            return cls(str(d["recogniser"]), d["embeddings"].astype(np.float32), [str(x) for x in d["labels"]],
                       [str(x) for x in d["sources"]], float(d["scale"]))
        except (KeyError, ValueError, OSError) as e:
            raise ModelError(f"{path}: not a gallery file ({e})") from e


def gallery_file(folder: str | os.PathLike[str], recogniser: str) -> Path:
    """Where ``onlymine enroll`` puts the gallery of ``recogniser`` inside ``folder``."""
    return Path(folder) / (recogniser.replace(":", "_").replace("/", "_") + ".npz")


class CosineHead(nn.Module):
    """(N, D) embeddings -> (N, K) scaled cosine similarity to fixed unit centroids."""

    def __init__(self, centroids: np.ndarray, scale: float) -> None:
        super().__init__()
        self.register_buffer("centroids", torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32)))
        self.scale = float(scale)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(emb.float(), dim=-1) @ self.centroids.T


class IdentityNet(nn.Module):
    """Embedding network followed by the gallery head; taps are ``embedder.<name>``."""

    def __init__(self, embedder: nn.Module, head: CosineHead) -> None:
        super().__init__()
        self.embedder = embedder
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedder(x))


def identity_classifier(gallery: Gallery, spec: str | None = None, embedder=None):  # noqa: ANN001, ANN201
    """A :class:`~onlymine.faces.classifier.FaceClassifier` over ``gallery``'s identities."""
    from onlymine.faces.classifier import FaceClassifier
    from onlymine.models.registry import load_model

    base = embedder if embedder is not None else load_model(gallery.recogniser)
    if not base.cfg.extra.get("embedding"):
        raise ModelError(f"{gallery.recogniser} is not an embedding model; a gallery needs a recogniser")
    net = IdentityNet(base.net, CosineHead(gallery.centroids(), gallery.scale))
    layer = base.cfg.extra.get("layer") or (f"embedder.{base.default_layer()}" if hasattr(base, "default_layer")
                                            else None)
    extra = {**base.cfg.extra, "embedding": False, "task": "identity", "gallery": len(gallery.labels)}
    if layer:
        extra["layer"] = layer if layer.startswith("embedder.") else f"embedder.{layer}"
    cfg = replace(base.cfg, name=spec or f"gallery:{gallery.recogniser}", class_names=tuple(gallery.identities),
                  extra=extra)
    return FaceClassifier(net, cfg)


def load_gallery_spec(name: str, variant: str | None, spec: str):  # noqa: ANN201
    """``gallery:PATH`` -> the identity classifier of the recogniser that made the gallery."""
    return identity_classifier(Gallery.load(name), spec)
