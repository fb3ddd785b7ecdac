"""Protection settings: the model, the attack's own config, the output and the runtime, plus presets.

``ProtectSettings`` = (model spec, attack name, the attack's frozen config, :class:`OutputConfig`,
:class:`RuntimeConfig`, preset name). Every field of every config describes itself
(:func:`onlymine.attacks.config.option`), so CLI flags, the web allowlist and ``--config FILE.yaml`` are generated
from them, and the resume key hashes only what differs from the defaults.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from onlymine.attacks import ATTACKS
from onlymine.attacks.config import AttackConfig, Config, ConfigError, flag_of, option, parse_budget
from onlymine.attacks.fmd import PAPER
from onlymine.models.fast import PRECISIONS

__all__ = ["DEFAULT_MODEL", "DEFAULT_PRESET", "ConfigError", "OutputConfig", "PRESET_NAMES", "ProtectSettings",
           "RuntimeConfig", "config_class", "load_config_file", "parse_budget", "presets_for"]

DEFAULT_MODEL = "torchvision:mobilenet_v2"
DEFAULT_ATTACK = "fmd+"
DEFAULT_PRESET = "high"


@dataclass(frozen=True)
class OutputConfig(Config):
    fmt: str = option("png", "output format (JPEG weakens the protection)", everyday=True, flag="--format",
                      choices=("png", "jpeg", "webp", "tiff"))
    quality: int = option(95, "JPEG/WebP quality", minimum=1, maximum=100)
    retries: int = option(2, "re-optimisations when a saved file loses the authorized prediction", minimum=0)


@dataclass(frozen=True)
class RuntimeConfig(Config):
    """How the attack computes (docs/performance.md): each is on only where the benchmark showed it keeps the
    protection. They can change the output's last bits, so they are part of the resume key."""

    precision: str = option("auto", "autocast precision of the attack (auto: bf16 on CUDA GPUs with it; fp32 on "
                            "CPUs, where bf16 was measured slower even with AMX)",
                            choices=PRECISIONS)
    channels_last: bool = option(True, "NHWC memory layout for the networks")
    fold_bn: bool = option(True, "fold BatchNorm into convolutions (same function)")
    fuse: bool = option(True, "CPUs: each convolution and the ReLU6/ReLU after it in one oneDNN call, forward and "
                        "backward (same function)")
    compile: bool = option(False, "torch.compile the untapped stages (slow start; measured slower on CPU)")
    keep_memory: bool = option(True, "Linux: glibc keeps freed memory for the next step instead of mapping it "
                               "afresh (fewer page faults; resident memory stays at its peak)")


SECTIONS = {"output": OutputConfig, "runtime": RuntimeConfig}


def config_class(attack: str) -> type[AttackConfig]:
    if attack not in ATTACKS:
        raise ConfigError(f"--attack: unknown attack {attack!r}; choose one of {', '.join(ATTACKS)}")
    return ATTACKS[attack].Config


def presets_for(attack: str | None) -> dict[str, dict[str, Any]]:
    return config_class(attack or DEFAULT_ATTACK).presets  # type: ignore[attr-defined]


PRESET_NAMES = tuple(dict.fromkeys(p for a in ATTACKS for p in presets_for(a)))


def _flag_names() -> dict[str, str]:
    """A setting may be named by its flag too (``layer`` for ``layers``, ``format`` for ``fmt``)."""
    classes = [config_class(a) for a in ATTACKS] + list(SECTIONS.values())
    return {flag_of(f)[2:].replace("-", "_"): f.name for c in classes for f in fields(c)
            if flag_of(f)[2:].replace("-", "_") != f.name}


FLAG_NAMES = _flag_names()
FLAGS = {f.name: flag_of(f) for c in [*(config_class(a) for a in ATTACKS), *SECTIONS.values()] for f in fields(c)}


@dataclass(frozen=True)
class ProtectSettings:
    """Everything that defines a protected output; saved in every manifest row."""

    model: str = DEFAULT_MODEL
    attack: str = DEFAULT_ATTACK
    config: AttackConfig = field(default_factory=lambda: config_class(DEFAULT_ATTACK)())
    output: OutputConfig = field(default_factory=OutputConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    preset: str | None = DEFAULT_PRESET

    def __post_init__(self) -> None:
        if type(self.config) is not config_class(self.attack):
            raise ConfigError(f"attack {self.attack!r} takes a {config_class(self.attack).__name__}")

    # ---------------------------------------------------------------------------------------- building
    @classmethod
    def build(cls, preset: str | None = DEFAULT_PRESET, paper: bool = False, **values: Any) -> ProtectSettings:
        """Preset (or paper mode) first, then explicit values (``None`` ignored), by field name: ``model``,
        ``attack``, any field of the attack's config, of :class:`OutputConfig` or :class:`RuntimeConfig`."""
        values = {k: v for k, v in values.items() if v is not None}
        attack = values.pop("attack", None) or ("fmd" if paper else DEFAULT_ATTACK)
        if paper and attack != "fmd":
            raise ConfigError(f"--paper runs the paper's FMD; it cannot be combined with --attack {attack}")
        base: dict[str, Any] = {}
        if preset:
            table = presets_for(attack)
            if preset not in table:
                where = [a for a in ATTACKS if preset in presets_for(a)]
                raise ConfigError(f"--preset: {preset!r} is not a preset of attack {attack}; choose one of "
                                  f"{', '.join(table)}" + (f" (it is one of {', '.join(where)})" if where else ""))
            base.update(table[preset])
        if paper:
            base.update(PAPER)
            preset = "paper"
        s = cls(model=values.pop("model", DEFAULT_MODEL), attack=attack, config=config_class(attack)(), preset=preset)
        return s.changed(**base).changed(**values)

    def changed(self, **values: Any) -> ProtectSettings:
        """A copy with flat values routed to the config that owns each name (``eps`` -> the attack, ``fmt`` ->
        output, ``precision`` -> runtime); a name no config of this attack owns is refused, naming its flag."""
        if not values:
            return self
        values = {FLAG_NAMES.get(k, k): v for k, v in values.items()}
        own = {f.name for f in fields(self.config)}
        top = {k: values.pop(k) for k in ("model", "preset") if k in values}
        parts: dict[str, dict[str, Any]] = {"config": {}, "output": {}, "runtime": {}}
        for k, v in values.items():
            if k in own:
                parts["config"][k] = v
                continue
            section = next((n for n, c in SECTIONS.items() if k in {f.name for f in fields(c)}), None)
            if section is None:
                owners = [a for a in ATTACKS if k in {f.name for f in fields(config_class(a))}]
                flag = FLAGS.get(k, "--" + k.replace("_", "-"))
                raise ConfigError(f"{flag} does not apply to attack {self.attack} (it is a setting of "
                                  f"{', '.join(owners)})" if owners else
                                  f"unknown setting {k!r}; `onlymine protect --help-all` lists them (_ for -)")
            parts[section][k] = v
        return replace(self, **top, config=self.config.replace(**parts["config"]),
                       output=self.output.replace(**parts["output"]),
                       runtime=self.runtime.replace(**parts["runtime"]))

    # ---------------------------------------------------------------------------------------- records
    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "attack": self.attack, "preset": self.preset,
                "config": self.config.to_dict(), "output": self.output.to_dict(), "runtime": self.runtime.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProtectSettings:
        """The inverse of :meth:`to_dict` (also reads a flat dict of field names, as a config file holds)."""
        d = dict(d)
        flat = {k: v for part in ("config", "output", "runtime") for k, v in (d.pop(part, None) or {}).items()}
        attack = d.pop("attack", DEFAULT_ATTACK)
        s = cls(model=d.pop("model", DEFAULT_MODEL), attack=attack, config=config_class(attack)(),
                preset=d.pop("preset", None))
        return s.changed(**d, **flat)

    def key(self) -> str:
        """Stable id of what changes the output (``--resume`` skips only rows with the same key): the model, the
        attack and its config revision, and every setting that differs from its default."""
        d = {"model": self.model, "attack": self.attack, "revision": type(self.config).revision,
             "config": self.config.changes(), "output": self.output.changes(), "runtime": self.runtime.changes()}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=list).encode()).hexdigest()[:16]


def load_config_file(path: str | Path) -> dict[str, Any]:
    """``--config FILE.yaml``: a mapping of setting names (``attack``, ``preset``, ``eps``, ``views``, ...), as
    the flags are named with ``_`` for ``-``; budgets may be written ``8/255``. Validated when applied."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"--config {p}: cannot read it ({getattr(e, 'strerror', None) or e})") from e
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(f"--config {p}: expected a mapping of setting names to values")
    return {k.replace("-", "_"): v for k, v in data.items()}
