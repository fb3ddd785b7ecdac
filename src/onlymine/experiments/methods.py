"""The methods an experiment compares: the unprotected row, FMD (the paper's setting and onlymine's), FMD+ and
the baselines, each a recipe for the :class:`~onlymine.settings.ProtectSettings` of one authorized model.

:data:`METHODS` is the catalogue of ``onlymine experiment imagenet|detection``; :data:`FACE_METHODS` holds the
same recipes under the keys and labels of ``onlymine experiment faces``. Historical FMD+ variants (one
input-diversity view x 100 steps, FIA importance, BSR views without the robust keep term, ...) are no methods
any more: the reports that used them reproduce from git commit 67be464.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from onlymine.attacks import ATTACKS
from onlymine.attacks.fmd import PAPER
from onlymine.settings import DEFAULT_PRESET, FLAG_NAMES, ProtectSettings, config_class

CLEAN = "clean"
SHOWN_FIRST = ("eps", "alpha", "steps")  # settings_line names these first, in /255 units

# every field name some attack config has: a shared value that the chosen attack lacks is left out of its settings
ATTACK_FIELDS = {f.name for a in ATTACKS for f in fields(config_class(a))}


def applicable(attack: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that apply to ``attack``: ``None`` values and fields of other attacks only are
    dropped (``lam`` for PGD, ``texture`` for FMD); model, output and runtime settings are kept. Names may be
    flag names (``layer`` for ``layers``)."""
    own = {f.name for f in fields(config_class(attack))}
    return {k: v for k, v in values.items() if v is not None
            and (FLAG_NAMES.get(k, k) in own or FLAG_NAMES.get(k, k) not in ATTACK_FIELDS)}


def settings_line(s: Mapping[str, Any]) -> str:
    """A settings record (``ProtectSettings.to_dict()``) in one line: attack, budget, every non-default field."""
    cfg = s.get("config", {})
    defaults = config_class(s.get("attack") or "fmd+")().to_dict()
    parts = [f"attack {s.get('attack')}"]
    parts += [f"{k} {cfg[k] * 255:.1f}/255" for k in ("eps", "alpha") if cfg.get(k) is not None]
    parts += [f"steps {cfg['steps']}"] if "steps" in cfg else []
    parts += [f"{k} {v}" for k, v in cfg.items() if k not in (*SHOWN_FIRST, "surrogates") and v != defaults.get(k)]
    parts.append(f"preset {s.get('preset')}")
    sur = cfg.get("surrogates")
    return ", ".join(parts) + (f", surrogates {', '.join(sur)} (not scored in their row)" if sur else "")


@dataclass(frozen=True)
class Method:
    """A protection method of the comparison. ``attack=None`` is the unprotected (clean) row.

    ``paper`` starts from the paper's setting (FMD's paper mode; the same budget and steps for a baseline), else
    from onlymine's ``preset`` and per-model defaults; ``fixed`` are settings this method always uses.
    ``surrogate``: the experiment gives the attack public surrogate models (held out of that row's scores).
    """

    key: str
    label: str
    attack: str | None
    paper: bool = False
    fixed: tuple[tuple[str, Any], ...] = ()
    preset: str = DEFAULT_PRESET
    surrogate: bool = False
    base: str = ""  # the catalogue key this method repeats with another seed (:func:`seeded`)

    @property
    def family(self) -> str:
        """The catalogue key: what claims and comparisons call this method, whatever its seed."""
        return self.base or self.key

    def settings(self, spec: str, overrides: Mapping[str, Any] | None = None,
                 surrogates: Iterable[str] = ()) -> ProtectSettings:
        """The settings for authorized model ``spec``: the method's start, ``fixed``, then the ``overrides`` that
        apply to its attack (``None`` values ignored), then ``surrogates``."""
        if self.attack is None:
            raise ValueError(f"method {self.key} protects nothing")
        if self.paper and self.attack != "fmd":
            s = ProtectSettings.build(preset=None, model=spec, attack=self.attack,
                                      **applicable(self.attack, PAPER)).changed(preset="paper")
        else:
            s = ProtectSettings.build(preset=None if self.paper else self.preset, paper=self.paper, model=spec,
                                      attack=self.attack)
        s = s.changed(**dict(self.fixed), **applicable(self.attack, overrides or {}))
        sur = tuple(surrogates)
        return s.changed(surrogates=sur) if sur else s


METHODS: dict[str, Method] = {m.key: m for m in (
    Method(CLEAN, "Clean", None),
    Method("fmd-paper", "FMD (paper setting)", "fmd", paper=True),
    Method("fmd", "FMD (onlymine layer/lam)", "fmd"),
    Method("fmd-plus", "FMD+ (onlymine, eps 16)", "fmd+"),
    Method("fmd-plus-mid", "FMD+ mid preset (SSIM budget)", "fmd+", preset="mid"),
    Method("fmd-plus-keep-full", "FMD+ --keep-pipelines crop,full", "fmd+",
           fixed=(("keep_pipelines", ("crop", "full")),)),
    Method("fmd-plus-fast", "FMD+ fast preset (eps 16)", "fmd+", preset="fast"),
    Method("fmd-plus-fast-keep-full", "FMD+ fast --keep-pipelines crop,full", "fmd+", preset="fast",
           fixed=(("keep_pipelines", ("crop", "full")),)),
    Method("fmd-plus-sur", "FMD+ + next model as surrogate (held out)", "fmd+", surrogate=True),
    Method("fmd-plus-mid-sur", "FMD+ mid (SSIM budget) + next model as surrogate (held out)", "fmd+", preset="mid",
           surrogate=True),
    Method("pgd", "PGD", "pgd", paper=True),
    Method("feature-only", "FeatureOnly", "feature-only", paper=True),
    Method("uniform-noise", "UniformNoise", "uniform-noise", paper=True),
)}



def seeded(methods: Iterable[Method], seeds: Iterable[int]) -> list[Method]:
    """Each protecting method once per seed (key ``KEY-seedN``, its folder too, label ``LABEL, seed N``, the seed
    fixed); the clean row once. Runs with other seeds lists share the cells of the seeds they have in common."""
    seeds = list(dict.fromkeys(seeds))
    out: list[Method] = []
    for m in methods:
        if m.attack is None:
            out.append(m)
        else:
            out += [replace(m, key=f"{m.key}-seed{s}", label=f"{m.label}, seed {s}", fixed=(*m.fixed, ("seed", s)),
                            base=m.key) for s in seeds]
    return out


# The faces experiment: FMD in the paper's setting, FMD+ with onlymine's defaults at the experiment's eps, FMD+ with
# the task's other models as public surrogates (one run per held-out judge), UniformNoise at the same eps.
FACE_SURROGATE = "fmd+sur"
FACE_METHODS: dict[str, Method] = {m.key: m for m in (
    Method("fmd", "FMD (eps 16/255, alpha 4/255, N steps)", "fmd", paper=True),
    Method("fmd+", "FMD+ (onlymine's defaults, same eps)", "fmd+"),
    Method(FACE_SURROGATE, "FMD+ with public surrogates (same eps; each judge held out of the surrogates)", "fmd+",
           surrogate=True),
    Method("uniform-noise", "UniformNoise (same eps)", "uniform-noise", paper=True),
)}
