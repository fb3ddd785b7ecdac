"""Face models as :class:`~onlymine.models.Classifier`: default FMD layer and the face crop they expect."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from onlymine.models.cfg import ModelCfg
from onlymine.models.classifier import Classifier

# Keep-term weight for face models (the CE of scaled-cosine / emotion logits is larger than ImageNet's).
FACE_LAM = 0.05


class FaceClassifier(Classifier):
    """A Classifier on face chips. ``cfg.extra`` carries ``crop`` (the alignment rule of
    :mod:`onlymine.faces.align`), ``task``, and optionally a measured ``layer``/``lam``."""

    quantize = False  # chips come from a differentiable warp of the photo, not from an 8-bit file

    def __init__(self, net: nn.Module, cfg: ModelCfg) -> None:
        super().__init__(net, cfg)
        self._layer: str | None = cfg.extra.get("layer")
        self._spread: dict[tuple[float, ...], list[str]] = {}

    @property
    def crop(self) -> str:
        return str(self.cfg.extra.get("crop", "loose"))

    @property
    def task(self) -> str:
        return str(self.cfg.extra.get("task", "classification"))

    @property
    def default_lam(self) -> float:
        return float(self.cfg.extra.get("lam", FACE_LAM))

    def default_layer(self) -> str:
        """A convolution output about 40% deep (onnx2torch graphs have flat node names, so the generic
        stage heuristic does not apply)."""
        if self._layer is None:
            from onlymine.models.layers import pick_layer

            self._layer = pick_layer(self.net, self.cfg.input_size) or super().default_layer()
        return self._layer

    def spread_layers(self, fractions: Sequence[float] = (0.22, 0.39, 0.61, 0.78)) -> list[str]:
        """Convolution outputs at these fractions of the depth (FMD+'s multi-layer default for face models)."""
        from onlymine.models.layers import pick_layers

        key = tuple(fractions)
        if key not in self._spread:
            picked = pick_layers(self.net, self.cfg.input_size, fractions, nearest=True)
            self._spread[key] = picked or super().spread_layers(fractions)
        return self._spread[key]
