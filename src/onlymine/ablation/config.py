"""Ablation configs (YAML): which models, which photos, and which settings to try.

A config names the authorized model, the unauthorized models that score the saved files, the photos and a
*design* over the FMD parameters ``layer, eps, alpha, steps, lam``:

* ``design: grid`` tries every combination of the listed values (costly: 5 x 4 x 4 x ... settings);
* ``design: ofat`` (one factor at a time) starts from ``base`` and varies one axis at a time over its list,
  holding the others at the base value; the base point itself is run once.

Example (``configs/ablation-mobilenet_v2.yaml``)::

    name: mobilenet_v2
    authorized: torchvision:mobilenet_v2
    unauthorized: [efficientnet-lite:lite0, efficientnet-lite:lite1, efficientnet-lite:lite2]
    data: null            # default: the offline kit's photos/imagenet (if present)
    labels: null          # default: DATA/labels.csv when it exists
    limit: 8              # photos (taken in turn from foolbox_* and aib_*)
    design: ofat
    base: {layer: features.7, eps: 16/255, alpha: 4/255, steps: 100, lam: 0.01}
    axes:
      layer: stages       # every tappable stage of the authorized model (Classifier.stages())
      eps: [4/255, 8/255, 12/255, 16/255]
      lam: [0, 0.01, 0.1, 1]
    alpha_follows_eps: true   # alpha = base alpha * eps / base eps when eps varies
    settings: {attack: fmd}   # anything else ProtectSettings.build accepts (attack, preset, precision, ...)
    recommend: {min_authorized: 1.0, eps: base}
    explain: {images: 4}  # Grad-CAM grid and confidence figure for the base setting (0: off)

* ``design: variants`` runs ``base`` changed by each entry of ``variants`` (name -> any ProtectSettings
  fields, e.g. ``{attack: fmd+, momentum: 0}``): an ablation of techniques rather than of one parameter.

A point's attack is its variant's ``attack``, else ``settings: {attack: ...}``, else ProtectSettings' default
(FMD+). ``settings`` and the point's ``layer, alpha, steps, lam`` are left out where the attack has no such
setting (``texture`` for a variant with ``attack: fmd``, ``lam`` for PGD); a variant's other values must apply.

Budgets (``eps``, ``alpha``) accept ``16``, ``16/255`` or ``0.0627`` like the CLI. ``layer`` may be a list
(FMD+ distorts several) or ``default`` (the attack's per-model default). Optional keys: ``split`` (``tune`` or
``test`` part of the kit photos, see ``onlymine.experiments.imagenet.split_of``), ``seeds`` (every setting is
run once per seed), ``transforms`` (robustness transforms scored besides the saved files, e.g. ``[jpeg75]``).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from onlymine.attacks.defaults import LAM, MEASURED
from onlymine.settings import DEFAULT_ATTACK, parse_budget

AXES = ("layer", "eps", "alpha", "steps", "lam")
KIT_IMAGENET = Path(__file__).resolve().parents[3] / ".." / "shared" / "kit" / "photos" / "imagenet"
KNOWN_KEYS = {"name", "authorized", "unauthorized", "data", "labels", "limit", "subset", "design", "base", "axes",
              "alpha_follows_eps", "settings", "recommend", "explain", "batch_size", "variants", "split", "seeds",
              "transforms"}
DESIGNS = ("ofat", "grid", "variants")


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Point:
    """One setting of the design: the FMD parameters that vary (the rest comes from ``settings``)."""

    layer: str
    eps: float
    alpha: float
    steps: int
    lam: float
    axis: str = "base"  # which axis this point varies (ofat), "grid" for a full grid, "base" for the base
    variant: str = ""  # design "variants": the variant's name
    extra: tuple[tuple[str, Any], ...] = ()  # further ProtectSettings fields (variants, seeds)

    @property
    def id(self) -> str:
        """Folder-safe, human-readable id (``features.7_eps16_a4_n100_lam0.01``, or the variant's name);
        budgets in /255 units; ``_s<seed>`` when the config lists seeds."""
        extra = dict(self.extra)
        seed = f"_s{extra['seed']}" if "seed" in extra else ""
        if self.variant:
            return re.sub(r"[^A-Za-z0-9.]+", "-", self.variant.replace("+", " plus ")).strip("-") + seed
        lay = re.sub(r"[^A-Za-z0-9._-]+", "_", self.layer)
        return f"{lay}_eps{_u(self.eps)}_a{_u(self.alpha)}_n{self.steps}_lam{self.lam:g}{seed}"

    def params(self) -> dict[str, Any]:
        layer = [] if self.layer == "default" else self.layer.split("+")
        d = {"layer": layer, "eps": self.eps, "alpha": self.alpha, "steps": self.steps, "lam": self.lam}
        d.update((k, list(v) if isinstance(v, tuple) else v) for k, v in self.extra)
        return d


def _u(v: float) -> str:
    return f"{v * 255:.4g}"


@dataclass
class AblationConfig:
    """A parsed config (see the module docstring)."""

    name: str
    authorized: str
    unauthorized: list[str]
    base: dict[str, Any]
    axes: dict[str, Any]
    design: str = "ofat"
    data: Path | None = None
    labels: Path | None = None
    limit: int | None = None
    subset: str = "all"
    alpha_follows_eps: bool = True
    settings: dict[str, Any] = field(default_factory=dict)
    recommend: dict[str, Any] = field(default_factory=dict)
    explain: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 8
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    split: str = "all"
    seeds: list[int] = field(default_factory=list)
    transforms: list[str] = field(default_factory=list)
    source: Path | None = None

    def data_dir(self) -> Path:
        """The photo folder (the kit's ImageNet photos when the config names none)."""
        d = self.data if self.data is not None else KIT_IMAGENET.resolve()
        if not d.is_dir():
            raise ConfigError(f"{self.source or 'config'}: photo folder {d} does not exist (set 'data:')")
        return d

    @property
    def attack(self) -> str:
        """The attack of the base point (``settings: {attack: ...}``; default: ProtectSettings' own)."""
        return str(self.settings.get("attack") or DEFAULT_ATTACK)

    def labels_file(self) -> Path | None:
        p = self.labels if self.labels is not None else self.data_dir() / "labels.csv"
        return p if p.is_file() else None

    def points(self, stages: Callable[[], Sequence[str]]) -> list[Point]:
        """The design's settings, base first, without duplicates. ``stages`` gives the authorized model's
        tappable stages (used when ``layer`` is ``stages`` or the base layer is missing)."""
        values = {a: self._values(a, stages) for a in AXES}
        base = self._base(stages)
        pts: list[Point] = [base]
        if self.design == "variants":
            pts = [self._variant(base, name, ov) for name, ov in self.variants.items()]
        elif self.design == "grid":
            for combo in itertools.product(*(values[a] or [getattr(base, a)] for a in AXES)):
                kw = dict(zip(AXES, combo, strict=True))
                if "alpha" not in self.axes:
                    kw["alpha"] = self._alpha(base, kw["eps"])
                pts.append(Point(**kw, axis="grid"))
        else:
            for a in AXES:
                for v in values[a]:
                    kw = {k: getattr(base, k) for k in AXES}
                    kw[a] = v
                    if a == "eps":
                        kw["alpha"] = self._alpha(base, v)
                    pts.append(Point(**kw, axis=a))
        if self.seeds:
            pts = [replace(p, extra=(*p.extra, ("seed", int(s)))) for p in pts for s in self.seeds]
        if self.design == "variants" and len({p.id for p in pts}) < len(pts):
            raise ConfigError(f"{self.source or 'config'}: two variant names give the same folder name")
        seen: dict[str, Point] = {}
        for p in pts:
            seen.setdefault(p.id, p)
        return list(seen.values())

    def _variant(self, base: Point, name: str, ov: dict[str, Any]) -> Point:
        """The base point changed by one variant's settings (axes become the point's fields)."""
        kw: dict[str, Any] = {k: getattr(base, k) for k in AXES}
        extra = dict(ov)
        if "layer" in extra:
            lay = extra.pop("layer")
            kw["layer"] = "+".join(lay) if isinstance(lay, list) else str(lay)
        for k, conv in (("eps", budget), ("alpha", budget), ("steps", int), ("lam", float)):
            if k in extra:
                kw[k] = conv(extra.pop(k))
        return Point(**kw, axis="variant", variant=str(name),
                     extra=tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(extra.items())))

    def _alpha(self, base: Point, eps: float) -> float:
        return base.alpha * eps / base.eps if self.alpha_follows_eps and base.eps > 0 else base.alpha

    def _base(self, stages: Callable[[], Sequence[str]]) -> Point:
        b = self.base
        layer = b.get("layer")
        if isinstance(layer, list):
            layer = "+".join(str(x) for x in layer)
        if not layer:
            layer = code_default(self.attack, self.authorized).get("layer")
        if not layer:
            st = list(stages())
            layer = st[int(0.4 * (len(st) - 1))]
        return Point(layer=str(layer), eps=budget(b.get("eps", 16 / 255)),
                     alpha=budget(b.get("alpha", 4 / 255)), steps=int(b.get("steps", 100)),
                     lam=float(b.get("lam", 0.01)), axis="base")

    def _values(self, axis: str, stages: Callable[[], Sequence[str]]) -> list[Any]:
        v = self.axes.get(axis)
        if v is None:
            return []
        if axis == "layer":
            if v in ("stages", "all"):
                return list(stages())
            if isinstance(v, dict) and "every" in v:  # {every: 3}: every n-th stage, plus the last
                st = list(stages())
                picked = st[:: int(v["every"])]
                return picked + ([st[-1]] if st and st[-1] not in picked else [])
            return [str(x) for x in _as_list(v, axis, self.source)]
        conv = {"eps": budget, "alpha": budget, "steps": int, "lam": float}[axis]
        try:
            return [conv(x) for x in _as_list(v, axis, self.source)]
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{self.source or 'config'}: axis {axis!r}: {e}") from e


def code_default(attack: str, spec: str) -> dict[str, Any]:
    """The measured per-model default of ``attack`` on ``spec`` as a point writes it (``layer``: stages joined
    by ``+``, ``lam``), or ``{}`` when none is measured (attacks/defaults.py)."""
    m = MEASURED.get((attack, spec))
    if not m:
        return {}
    return {"layer": "+".join(m["layers"]) if m.get("layers") else None, "lam": m.get("lam", LAM.get(attack))}


def budget(v: Any) -> float:
    """A budget as the CLI reads it: ``16`` and ``"16"`` mean 16/255, ``"16/255"`` and ``0.0627`` as given."""
    return parse_budget(str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)


def _as_list(v: Any, axis: str, source: Path | None) -> list[Any]:
    if not isinstance(v, list) or not v:
        raise ConfigError(f"{source or 'config'}: axis {axis!r} must be a non-empty list")
    return v


def parse_config(d: dict[str, Any], source: Path | None = None) -> AblationConfig:
    """Validate a config mapping (as read from YAML) into an :class:`AblationConfig`."""
    where = str(source or "config")
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    unknown = set(d) - KNOWN_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(KNOWN_KEYS)}")
    if not d.get("authorized"):
        raise ConfigError(f"{where}: 'authorized' (a model spec) is required")
    axes = d.get("axes") or {}
    bad = set(axes) - set(AXES)
    if bad:
        raise ConfigError(f"{where}: unknown axis {sorted(bad)}; axes are {list(AXES)}")
    design = d.get("design", "ofat")
    if design not in DESIGNS:
        raise ConfigError(f"{where}: design must be one of {list(DESIGNS)}, got {design!r}")
    variants = d.get("variants") or {}
    if design == "variants" and (not isinstance(variants, dict) or not variants
                                 or not all(isinstance(v, dict) for v in variants.values())):
        raise ConfigError(f"{where}: design 'variants' needs 'variants:' mapping names to settings")
    if d.get("split", "all") not in ("all", "tune", "test", "fresh"):
        raise ConfigError(f"{where}: split must be all, tune, test or fresh, got {d.get('split')!r}")
    base_dir = source.parent if source else Path.cwd()

    def path(key: str) -> Path | None:
        v = d.get(key)
        return None if v in (None, "") else (base_dir / str(v)).resolve()

    unauth = d.get("unauthorized") or []
    if isinstance(unauth, str):
        unauth = [unauth]
    return AblationConfig(
        name=str(d.get("name") or (source.stem if source else "ablation")), authorized=str(d["authorized"]),
        unauthorized=[str(u) for u in unauth if str(u) != str(d["authorized"])], base=dict(d.get("base") or {}),
        axes=dict(axes), design=design, data=path("data"), labels=path("labels"),
        limit=None if d.get("limit") is None else int(d["limit"]), subset=str(d.get("subset", "all")),
        alpha_follows_eps=bool(d.get("alpha_follows_eps", True)), settings=dict(d.get("settings") or {}),
        recommend=dict(d.get("recommend") or {}), explain=dict(d.get("explain") or {}),
        batch_size=int(d.get("batch_size", 8)), variants={str(k): dict(v) for k, v in variants.items()},
        split=str(d.get("split", "all")), seeds=[int(x) for x in d.get("seeds") or []],
        transforms=[str(t) for t in d.get("transforms") or []], source=source)


def load_config(path: str | Path) -> AblationConfig:
    """Read and validate a YAML config file; raises :class:`ConfigError` naming the file."""
    import yaml

    p = Path(path)
    try:
        d = yaml.safe_load(p.read_text())
    except OSError as e:
        raise ConfigError(f"{p}: cannot read ({e.strerror or e})") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from e
    return parse_config(d, p)
