"""Protection settings: presets, per-model defaults, and parsing of user-facing values like ``16/255``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from fractions import Fraction
from typing import Any

# FMD (`--attack fmd`), per built-in model: the feature layer and lam chosen by measurement. Evidence: docs/defaults.md
# and docs/ablations.md, produced by
# `onlymine ablate configs/defaults-*.yaml -o runs/defaults --markdown docs/defaults.md` (each model authorized,
# the other three unauthorized, 8 kit photos, layer and lam varied one at a time at eps 16/255, alpha 4/255,
# 20 steps; the feasible setting -- authorized kept on every saved file -- with the lowest unauthorized
# accuracy). Models not listed fall back to a mid-depth stage (Classifier.default_layer) and FALLBACK_LAM.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "torchvision:mobilenet_v2": {"layer": "features.12", "lam": 0.01},
    "efficientnet-lite:lite0": {"layer": "_blocks.5", "lam": 1.0},
    "efficientnet-lite:lite1": {"layer": "_blocks.7", "lam": 1.0},
    "efficientnet-lite:lite2": {"layer": "_blocks.7", "lam": 1.0},
}
FALLBACK_LAM = 0.01
# FMD+ (docs/beyond.md): several stages at once; models not listed use Classifier.spread_layers().
PLUS_DEFAULTS: dict[str, dict[str, Any]] = {
    "torchvision:mobilenet_v2": {"layer": ["features.4", "features.7", "features.11", "features.14"]},
}
PLUS_LAM = 10.0  # the hinge keep term only acts below the margin kappa, so one weight fits every model
PLUS_ONLY = ("kappa", "momentum", "diversity", "ti_kernel", "jpeg_prob", "texture", "schedule", "surrogates",
             "linbp", "importance", "views", "shuffle", "robust_keep")
# FMD+ fields added after runs were recorded: at these values they stay out of key(), so old runs still resume
KEY_NEUTRAL: dict[str, Any] = {"schedule": "constant", "surrogates": [], "linbp": None, "importance": 0,
                               "views": 1, "shuffle": 0, "robust_keep": False}

# Presets trade protection for image quality; explicit flags override them.
PRESETS: dict[str, dict[str, Any]] = {
    "low": {"eps": 4 / 255, "alpha": 1 / 255, "steps": 50},
    "mid": {"eps": 8 / 255, "alpha": 2 / 255, "steps": 100},
    "high": {"eps": 16 / 255, "alpha": 4 / 255, "steps": 100},
}
# FMD+ presets, chosen on the tuning photos (docs/beyond.md, `onlymine ablate configs/beyond-tune.yaml`): momentum
# wants a smaller step than the paper's 4/255 and more steps keep helping (20: 38%, 50: 22%, 100: 14% unauthorized
# at eps 16); the texture budget raises PSNR by ~1 dB at equal protection at eps 16 but costs protection at eps 8.
PLUS_PRESETS: dict[str, dict[str, Any]] = {
    "low": {"eps": 4 / 255, "alpha": 0.5 / 255, "steps": 100, "texture": False},
    # FIA (--importance 8) is not in any preset: 46% -> 22% at eps 8 and 12.6% -> 6.9% at eps 16 on the tuning photos,
    # but on the held-out photos -1.6 points at eps 8 and +2.2 points at eps 16, for 1.4x the time (docs/beyond.md).
    # mid: 5 BSR views per step (block shuffle and rotation, 3 x 3 blocks) and 50 steps: 46% -> 18.4% on the tuning
    # photos (configs/beyond-eps8.yaml); on the held-out photos 45% -> 15% but the authorized model then lost its
    # prediction after JPEG-75 on 21-23% of the files, so the keep term also checks a JPEG and a half-size copy
    # (robust_keep; docs/beyond.md). About 5x the passes of the old one view x 100 steps.
    "mid": {"eps": 8 / 255, "alpha": 1 / 255, "steps": 50, "texture": False, "views": 5, "shuffle": 3,
            "robust_keep": True},
    "high": {"eps": 16 / 255, "alpha": 2 / 255, "steps": 100, "texture": True},
    # a quarter of the steps: 8.7x the naive paper loop's images/s at equal unauthorized accuracy (32 photos,
    # docs/performance.md, `python benchmarks/speed.py -o docs/results/speed-fast32 ...`); weaker than "high"
    "fast": {"eps": 16 / 255, "alpha": 2 / 255, "steps": 25, "texture": True},
}
PRESET_NAMES = tuple(dict.fromkeys([*PRESETS, *PLUS_PRESETS]))  # every preset of any attack
DEFAULT_PRESET = "high"
# The paper's exact procedure (Chai et al. 2024): FMD, last iterate, no best-iterate selection.
PAPER = {"attack": "fmd", "eps": 16 / 255, "alpha": 4 / 255, "steps": 100, "keep_best": False,
         "random_start": True, "early_stop": False}


# The best-iterate rule's margin per attack precision: above the largest gap measured between the attack's forward
# pass and the published pipeline on the kit photos (docs/pipelines.md, `python benchmarks/pipeline_gap.py`).
KEEP_MARGIN = {"fp32": 0.1, "bf16": 1.0, "fp16": 1.0}


def keep_margin(s: ProtectSettings, device: Any) -> float:
    """The margin the best-iterate rule of ``s`` asks for on ``device`` (``s.keep_margin``, else by precision)."""
    if s.keep_margin is not None:
        return float(s.keep_margin)
    from onlymine.models.fast import resolve_precision

    return KEEP_MARGIN[resolve_precision(s.precision, device)]


def presets_for(attack: str | None) -> dict[str, dict[str, Any]]:
    """The preset table of an attack: FMD+'s own, or the FMD table (also used by the baselines)."""
    return PLUS_PRESETS if (attack or ProtectSettings.attack) == "fmd+" else PRESETS


def parse_budget(value: str | float) -> float:
    """``'16'`` -> 16/255, ``'16/255'`` -> 16/255, ``'0.0627'`` -> 0.0627 (a value < 1 is taken as is)."""
    if isinstance(value, (int, float)):
        v = float(value)
    else:
        s = value.strip()
        try:
            v = float(Fraction(s)) if "/" in s else float(s)
        except (ValueError, ZeroDivisionError) as e:
            raise ValueError(f"cannot read {value!r} as a budget: use e.g. 16 (= 16/255), 16/255 or 0.0627") from e
        if "/" not in s and v >= 1:
            v = v / 255
    if not 0 <= v <= 1:
        raise ValueError(f"budget {value!r} is outside [0, 1] in pixel units")
    return v


@dataclass
class ProtectSettings:
    """Everything that defines a protected output. Saved in every manifest row."""

    model: str = "torchvision:mobilenet_v2"
    attack: str = "fmd+"  # onlymine's FMD+ (docs/beyond.md); "fmd" with --paper is the paper's procedure
    layer: list[str] = field(default_factory=list)  # empty: the model's default
    eps: float = PLUS_PRESETS[DEFAULT_PRESET]["eps"]
    alpha: float = PLUS_PRESETS[DEFAULT_PRESET]["alpha"]
    steps: int = PLUS_PRESETS[DEFAULT_PRESET]["steps"]
    lam: float | None = None  # None: the model's default
    keep_best: bool = True
    random_start: bool = True
    seed: int = 0
    fmt: str = "png"
    quality: int = 95
    retries: int = 2  # re-optimisations when the saved file flips the authorized prediction
    # Speed (docs/performance.md, `python benchmarks/speed.py`); each is on by default only where the
    # benchmark showed it keeps the protection.
    early_stop: bool = False  # stop an image once margin-safe and its distortion plateaued (FMD only)
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (auto: bf16 only where the hardware has it)
    channels_last: bool = True  # NHWC layout for the authorized network
    fold_bn: bool = True  # BatchNorm folded into convolutions (same function)
    compile: bool = False  # torch.compile the untapped stages (slow start; measured slower on CPU)
    # FMD+ only (attacks/fmd_plus.py): hinge margin, MI-FGSM momentum, DI probability, TI kernel,
    # straight-through JPEG probability, texture-masked budget.
    kappa: float = 2.0
    momentum: float = 1.0
    diversity: float = 0.7
    ti_kernel: int = 0
    jpeg_prob: float = 0.0
    texture: bool = PLUS_PRESETS[DEFAULT_PRESET]["texture"]
    schedule: str = "constant"  # step size over the steps: "constant" or "cosine" (alpha decays to alpha/4)
    # public surrogate model specs whose features FMD+ distorts too (never the models you evaluate against)
    surrogates: list[str] = field(default_factory=list)
    importance: int = 0  # FIA: pixel-dropped copies for the feature-importance weights (0: plain distortion)
    linbp: float | None = None  # LinBP: linear backward through ReLU/ReLU6 from this fraction of depth (None: off)
    views: int = 1  # random views averaged per step, besides the image itself (1: one DI view from a fixed bank)
    shuffle: int = 0  # BSR: the random views shuffle and rotate shuffle x shuffle blocks (0: resize-and-pad views)
    robust_keep: bool = False  # keep term and best iterate also on a JPEG round trip and a half-size copy
    # authorized logit margin the best-iterate rule asks for; None: KEEP_MARGIN for the attack's precision
    keep_margin: float | None = None
    preset: str | None = DEFAULT_PRESET

    def resolved(self) -> ProtectSettings:
        """Fill in the per-model layer and lam (an empty layer list is resolved later from the model)."""
        if self.attack == "fmd+":
            d = PLUS_DEFAULTS.get(self.model, {})
            return replace(self, layer=self.layer or list(d.get("layer", [])),
                           lam=self.lam if self.lam is not None else d.get("lam", PLUS_LAM))
        d = MODEL_DEFAULTS.get(self.model, {})
        return replace(self, layer=self.layer or ([d["layer"]] if "layer" in d else []),
                       lam=self.lam if self.lam is not None else d.get("lam", FALLBACK_LAM))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def key(self) -> str:
        """Stable id of the settings that change the output (used by --resume)."""
        skip = {"preset", *(PLUS_ONLY if self.attack != "fmd+" else ())}
        d = {k: v for k, v in self.to_dict().items() if k not in skip and KEY_NEUTRAL.get(k, ...) != v}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def build(cls, preset: str | None = DEFAULT_PRESET, paper: bool = False, **overrides: Any) -> ProtectSettings:
        """Preset (or paper mode) first, then explicit overrides (``None`` values are ignored)."""
        base: dict[str, Any] = {}
        if preset:
            table = presets_for(overrides.get("attack"))
            if preset not in PRESET_NAMES:
                raise ValueError(f"unknown preset {preset!r}; choose one of {list(PRESET_NAMES)}")
            if preset not in table:
                raise ValueError(f"preset {preset!r} exists only for attack fmd+; for attack "
                                 f"{overrides.get('attack')!r} choose one of {list(table)}")
            base.update(table[preset])
        if paper:
            base.update(PAPER)
            preset = "paper"
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown settings {sorted(unknown)}")
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(preset=preset, **base)
