"""Per-model defaults of the attacks (feature layers, keep weight, keep margin), decided here and nowhere else.

Measured values come first (:data:`MEASURED`, with the commands that measured them in docs/defaults.md and
docs/beyond.md); a model without one falls back to what its :class:`~onlymine.models.Classifier` says
(``spread_layers()`` for FMD+, ``default_layer()`` for the others, a face model's ``default_lam``).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from onlymine.attacks.config import AttackConfig
from onlymine.models.classifier import Classifier

# FMD per built-in model: `onlymine ablate configs/defaults-*.yaml -o runs/defaults --markdown docs/defaults.md`
# (each model authorized, the other three unauthorized, 8 kit photos, eps 16/255, alpha 4/255, 20 steps; the
# feasible setting with the lowest unauthorized accuracy). FMD+: docs/beyond.md.
MEASURED: dict[tuple[str, str], dict[str, Any]] = {
    ("fmd", "torchvision:mobilenet_v2"): {"layers": ("features.12",), "lam": 0.01},
    ("fmd", "efficientnet-lite:lite0"): {"layers": ("_blocks.5",), "lam": 1.0},
    ("fmd", "efficientnet-lite:lite1"): {"layers": ("_blocks.7",), "lam": 1.0},
    ("fmd", "efficientnet-lite:lite2"): {"layers": ("_blocks.7",), "lam": 1.0},
    ("fmd+", "torchvision:mobilenet_v2"): {"layers": ("features.4", "features.7", "features.11", "features.14")},
}
# the keep weight without a measured one: the paper's CE term is small; FMD+'s hinge acts only below its margin,
# so one large weight fits every model (with few steps it undoes the distortion: the fast preset sets 0.01,
# docs/speed-check.md)
LAM = {"fmd": 0.01, "fmd+": 10.0}
# The best-iterate rule's margin by the attack's arithmetic: above the largest gap between the attack's forward
# pass and the published pipeline on the kit photos (docs/pipelines.md, `python benchmarks/pipeline_gap.py`).
KEEP_MARGIN = {"fp32": 0.1, "bf16": 1.0, "fp16": 1.0}


def layers_for(attack: str, model: Classifier) -> tuple[str, ...]:
    """The feature taps of ``attack`` on ``model`` when none are given (the baselines use FMD's)."""
    measured = MEASURED.get((attack if attack == "fmd+" else "fmd", model.name), {}).get("layers")
    if measured:
        return tuple(measured)
    return tuple(model.spread_layers() if attack == "fmd+" else [model.default_layer()])


def lam_for(attack: str, model: Classifier) -> float:
    measured = MEASURED.get((attack, model.name), {}).get("lam")
    if measured is not None:
        return float(measured)
    own = getattr(model, "default_lam", None)  # face models know theirs (onlymine.faces.classifier)
    return float(own) if own is not None else LAM.get(attack, 0.0)


def keep_margin_for(model: Classifier, precision: str | None = None) -> float:
    """The margin for the attack's ``precision`` (default: what ``model`` runs at, its autocast dtype)."""
    if precision is None:
        precision = "fp32" if getattr(model, "amp_dtype", None) is None else "bf16"
    return KEEP_MARGIN[precision]


def resolve(config: AttackConfig, model: Classifier, precision: str | None = None) -> AttackConfig:
    """``config`` with every per-model default (``layers``, ``lam``, ``keep_margin`` left empty) filled in;
    ``precision``: what the attack will compute in (default: what ``model`` runs at)."""
    names = {f.name for f in fields(config)}
    changes: dict[str, Any] = {}
    if "layers" in names and not config.layers:  # type: ignore[attr-defined]
        changes["layers"] = layers_for(config.name, model)
    if "lam" in names and config.lam is None:  # type: ignore[attr-defined]
        changes["lam"] = lam_for(config.name, model)
    if "keep_margin" in names and config.keep_margin is None:  # type: ignore[attr-defined]
        changes["keep_margin"] = keep_margin_for(model, precision)
    return config.replace(**changes) if changes else config
