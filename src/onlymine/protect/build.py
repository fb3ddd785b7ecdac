"""The attack a :class:`~onlymine.settings.ProtectSettings` describes, its surrogates, and what a retry changes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from onlymine.attacks import ATTACKS, Attack
from onlymine.attacks.defaults import layers_for
from onlymine.models import Classifier, load_model
from onlymine.settings import ProtectSettings

Surrogates = Sequence[tuple[Classifier, Sequence[str]]]


def load_surrogates(specs: Sequence[str], authorized: str, device: torch.device | str,
                    wrap: Callable[[Classifier], Classifier] | None = None) -> list[tuple[Classifier, list[str]]]:
    """Load the surrogate models of ``specs`` with their FMD+ taps (``wrap`` adapts each, e.g. to a face model)."""
    if authorized in specs:
        raise ValueError(f"the authorized model {authorized} cannot also be a surrogate")
    out = []
    for spec in specs:
        clf = load_model(spec, device=device)
        clf = wrap(clf) if wrap is not None else clf
        out.append((clf, list(layers_for("fmd+", clf))))
    return out


def build_attack(model: Classifier, s: ProtectSettings, surrogates: Surrogates = (), **changes: Any) -> Attack:
    """The attack that ``s`` describes on ``model`` (``changes`` override config fields, e.g. for a retry);
    ``surrogates``: the loaded models of the config's ``surrogates`` with their taps (FMD+ only)."""
    cfg = s.config.replace(**changes) if changes else s.config
    wanted = getattr(cfg, "surrogates", ())
    if len(surrogates) != len(wanted):
        raise ValueError(f"settings name {len(wanted)} surrogate(s) but {len(surrogates)} were loaded")
    cls = ATTACKS[s.attack]
    if s.attack == "fmd+":
        return cls(model, config=cfg, surrogates=surrogates)  # type: ignore[call-arg]
    if s.attack in ("pgd", "uniform-noise"):  # no taps of their own: record the FMD layers for comparison
        return cls(model, config=cfg, record_layers=list(layers_for("fmd", model)))
    return cls(model, config=cfg)


def retry_changes(s: ProtectSettings, attempt: int) -> dict[str, Any] | None:
    """Config changes for re-optimising photos whose saved file lost the authorized prediction: a 10x stronger
    keep term per attempt and a new random start (FMD and FMD+; ``None`` for attacks without a keep term)."""
    if s.attack not in ("fmd", "fmd+"):
        return None
    lam = float(s.config.lam or 0.0)  # type: ignore[attr-defined]
    changes: dict[str, Any] = {"lam": lam * 10 ** (attempt + 1) or 1.0, "seed": s.config.seed + attempt + 1}
    return changes | ({"keep_best": True} if s.attack == "fmd" else {})


