"""Command-line flags generated from the settings' own field descriptions (:func:`onlymine.attacks.config.option`).

Every field of every attack config, of the output and of the runtime settings becomes one flag (a name several
attacks share is one flag); ``--help`` shows the everyday ones, ``--help-all`` all of them, and ``--config
FILE.yaml`` sets any of them from a file (flags given on the command line win).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from onlymine.attacks import ATTACKS
from onlymine.attacks.config import ConfigError, flag_of
from onlymine.settings import (
    DEFAULT_MODEL,
    DEFAULT_PRESET,
    FLAG_NAMES,
    PRESET_NAMES,
    SECTIONS,
    ProtectSettings,
    config_class,
    load_config_file,
)

_HIDDEN = "_onlymine_hidden_help"


class HelpAll(argparse.Action):
    """``--help-all``: the help with every flag, the ones ``--help`` leaves out included."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kw: Any) -> None:
        super().__init__(option_strings, dest=dest, nargs=0, help="show every option (--help shows the everyday ones)")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kw: Any) -> None:
        for action in parser._actions:
            hidden = getattr(action, _HIDDEN, None)
            if hidden is not None:
                action.help = hidden
        parser.print_help()
        parser.exit()


def _fields() -> dict[str, tuple[dataclasses.Field, list[str], bool]]:
    """Every settings field by name: the field (the first owner's help wins), the attacks (or section) that have
    it, and whether they all share its default."""
    out: dict[str, tuple[dataclasses.Field, list[str], bool]] = {}
    owners = [(name, config_class(name)) for name in ATTACKS] + list(SECTIONS.items())
    for owner, cls in owners:
        for f in dataclasses.fields(cls):
            first, names, same = out.setdefault(f.name, (f, [], True))
            names.append(owner)
            out[f.name] = (first, names, same and f.default == first.default)
    return out


def _reader(parse: Any) -> Any:
    """A flag's value parser whose failure argparse reports as its own one-line message (not the function name)."""
    def read(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e) if parse not in (int, float) else
                                             f"expected {'a whole number' if parse is int else 'a number'}, "
                                             f"got {text!r}") from e

    return read


def _add(group: argparse._ActionsContainer, f: dataclasses.Field, owners: list[str], same: bool) -> None:
    m = f.metadata
    kw: dict[str, Any] = {"dest": f.name, "default": None, "metavar": m.get("metavar")}
    default = f.default
    if isinstance(default, bool):
        kw.update(action=argparse.BooleanOptionalAction)
        kw.pop("metavar")
    elif isinstance(default, tuple):
        kw.update(action="append")
    elif m.get("choices"):
        kw.update(choices=list(m["choices"]))
        kw.pop("metavar")
    else:
        kw["type"] = _reader(m.get("parse") or (int if isinstance(default, int) else float))
    if not same:
        shown = " (default: by attack and preset)"
    elif default in (None, ()):
        shown = ""
    else:
        shown = f" (default {default * 255:g}/255)" if m.get("unit") == "budget" else f" (default {default})"
    where = "" if set(owners) >= set(ATTACKS) or owners[0] in SECTIONS else f" [{', '.join(owners)}]"
    help_text = f"{m['help']}{shown}{where}"
    action = group.add_argument(flag_of(f), help=help_text if m.get("everyday") else argparse.SUPPRESS, **kw)
    if not m.get("everyday"):
        setattr(action, _HIDDEN, help_text)


def add_settings_options(p: argparse.ArgumentParser) -> None:
    """The protection settings as flags (see the module docstring)."""
    p.add_argument("--help-all", action=HelpAll)
    p.add_argument("--model", help=f"authorized model spec (default {DEFAULT_MODEL}; see `onlymine models`)")
    p.add_argument("--attack", choices=list(ATTACKS),
                   help="protection method (default fmd+, onlymine's; fmd is the paper's, docs/beyond.md)")
    p.add_argument("--preset", choices=list(PRESET_NAMES),
                   help=f"budget/quality preset, overridden by explicit flags (default {DEFAULT_PRESET})")
    p.add_argument("--paper", action="store_true", help="the paper's exact procedure (FMD, eps 16, alpha 4, N 100, "
                                                        "last iterate)")
    p.add_argument("--config", metavar="FILE.yaml", help="settings from a YAML file: any flag's name with _ for -")
    group = p.add_argument_group("protection settings (--help-all lists every one)")
    for f, owners, same in _fields().values():
        _add(group, f, owners, same)


def settings_from_args(a: argparse.Namespace) -> ProtectSettings:
    """The settings the flags (and ``--config FILE``) describe; raises :class:`ConfigError` with the flag named."""
    values: dict[str, Any] = load_config_file(a.config) if getattr(a, "config", None) else {}
    values.update({k: v for k, v in vars(a).items() if k in _fields() and v is not None})
    for k in ("model", "attack"):
        if getattr(a, k, None) is not None:
            values[k] = getattr(a, k)
    preset = getattr(a, "preset", None) or values.pop("preset", None)
    paper = bool(getattr(a, "paper", False) or values.pop("paper", False))
    values = {FLAG_NAMES.get(k, k): v for k, v in values.items()}
    unknown = sorted(set(values) - set(_fields()) - {"model", "attack"})
    if unknown:
        raise ConfigError(f"--config {a.config}: unknown setting(s) {unknown}; `onlymine protect --help-all` "
                          "lists them (with _ for -)")
    return ProtectSettings.build(preset=None if paper and not preset else preset or DEFAULT_PRESET, paper=paper,
                                 **values)
