"""Authorized models: the :class:`Classifier` wrapper, its config, and the spec registry."""

from onlymine.models.cfg import ModelCfg
from onlymine.models.classifier import Classifier
from onlymine.models.errors import ModelError
from onlymine.models.registry import (
    KNOWN_SPECS,
    known_specs,
    list_specs,
    load_model,
    parse_spec,
    register_source,
    spec_available,
)
from onlymine.models.taps import LayerError

__all__ = [
    "KNOWN_SPECS",
    "Classifier",
    "LayerError",
    "ModelCfg",
    "ModelError",
    "known_specs",
    "list_specs",
    "load_model",
    "parse_spec",
    "register_source",
    "spec_available",
]
