"""Frozen, self-describing settings: every attack owns one config dataclass whose fields carry their help text,
unit, bounds and default; the CLI flags, the web allowlist, ``--config FILE.yaml`` and the resume key are all
generated from these fields, so adding an option is one field in one file.

    @dataclass(frozen=True)
    class MyConfig(AttackConfig):
        views: int = option(1, "random views averaged per step", minimum=1)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import Any, ClassVar


class ConfigError(ValueError):
    """A setting that makes no sense; the message names the flag (``--eps``) and says what is allowed."""


def parse_budget(value: str | float) -> float:
    """``'16'`` -> 16/255, ``'16/255'`` -> 16/255, ``'0.0627'`` -> 0.0627 (a value < 1 is taken as is)."""
    if isinstance(value, (int, float)):
        return float(value)
    s = value.strip()
    try:
        v = float(Fraction(s)) if "/" in s else float(s)
    except (ValueError, ZeroDivisionError) as e:
        raise ValueError(f"cannot read {value!r} as a budget: use e.g. 16 (= 16/255), 16/255 or 0.0627") from e
    return v / 255 if "/" not in s and v >= 1 else v


def option(default: Any, help: str, *, everyday: bool = False, unit: str | None = None,
           minimum: float | None = None, maximum: float | None = None, above: float | None = None,
           choices: tuple[Any, ...] | None = None, flag: str | None = None, metavar: str | None = None,
           parse: Callable[[str], Any] | None = None) -> Any:
    """A config field with what a user interface needs: ``help``, whether ``--help`` shows it (``everyday``), a
    ``unit`` (``budget``: pixel/255, parsed by :func:`parse_budget`), bounds (``minimum``/``maximum`` inclusive,
    ``above`` exclusive), ``choices``, the flag name (default ``--field-name``) and a string parser."""
    meta = {"help": help, "everyday": everyday, "unit": unit, "minimum": minimum, "maximum": maximum,
            "above": above, "choices": choices, "flag": flag, "metavar": metavar,
            "parse": parse or (parse_budget if unit == "budget" else None)}
    if isinstance(default, (list, dict, set)):
        raise TypeError("config defaults must be immutable (use a tuple)")
    return dataclasses.field(default=default, metadata=meta)


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _check(f: dataclasses.Field, value: Any) -> None:
    m, name = f.metadata, flag_of(f)
    if m.get("choices") and value not in m["choices"]:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(map(str, m['choices']))}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name}: {value} is not a finite number")
    shown = f"{value * 255:g}/255" if m.get("unit") == "budget" else f"{value:g}"
    if m.get("above") is not None and not value > m["above"]:
        raise ConfigError(f"{name} must be greater than {m['above']:g}, got {shown}")
    if m.get("minimum") is not None and value < m["minimum"]:
        raise ConfigError(f"{name} must be at least {m['minimum']:g}, got {shown}")
    if m.get("maximum") is not None and value > m["maximum"]:
        raise ConfigError(f"{name} must be at most {m['maximum']:g}, got {shown}")


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    """A value from a YAML file, a web request or a Python call, as the field's type (tuples stay tuples)."""
    default = f.default
    if isinstance(default, tuple) or (value is not None and isinstance(value, list)):
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        parse = f.metadata.get("parse")
        if parse is not None:  # a flag given several times, or "a,b": each item parsed, then flattened
            items = [v for item in items for v in (parse(item) if isinstance(item, str) else (item,))]
        return tuple(items)
    if isinstance(value, str) and f.metadata.get("parse") is not None:
        return f.metadata["parse"](value)
    if isinstance(default, bool) and not isinstance(value, bool):
        raise ConfigError(f"{flag_of(f)}: expected true or false, got {value!r}")
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
        if not value.is_integer():
            raise ConfigError(f"{flag_of(f)}: expected a whole number, got {value!r}")
        return int(value)
    return value


@dataclass(frozen=True)
class Config:
    """Base of every frozen settings record (attack configs, output and runtime settings)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = _coerce(f, getattr(self, f.name))
            object.__setattr__(self, f.name, value)
            _check(f, value)

    @classmethod
    def options(cls) -> Iterator[dataclasses.Field]:
        yield from fields(cls)

    def changes(self) -> dict[str, Any]:
        """The fields whose value differs from the default (what a resume key hashes)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != f.default}

    def to_dict(self) -> dict[str, Any]:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` (unknown names are refused with the list of known ones)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"{type(self).__name__} has no setting(s) {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class AttackConfig(Config):
    """What every attack has: an L-inf budget and a seed. ``revision`` goes into resume keys: bump it when a default
    (or the arithmetic behind one) changes, so that a resumed run never mixes outputs of two behaviours."""

    name: ClassVar[str] = "attack"
    revision: ClassVar[int] = 1
    eps: float = option(16 / 255, "L-inf budget: 16 (=16/255), 16/255 or 0.0627", everyday=True, unit="budget",
                        above=0.0, maximum=1.0)
    seed: int = option(0, "random seed (same seed and same batches, same output)", everyday=True, minimum=0)
