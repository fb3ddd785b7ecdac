"""The error every model source raises: its own module, so that sources and plugins import it without the registry."""

from __future__ import annotations


class ModelError(RuntimeError):
    """A model spec that cannot be loaded; the message says why and what to do."""
