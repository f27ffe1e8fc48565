"""One exception family for everything edgecond raises on purpose.

Every message says what was given, what was expected, and how to fix it, e.g.::

    raise ConfigError(
        f"unknown model {name!r}; expected one of {', '.join(names)}. "
        "Pass --model with one of these names, or register your own with "
        "@edgecond.models.register_model."
    )

Catch :class:`EdgecondError` to handle all of them. The subclasses also derive from
the matching built-in (``ValueError``, ``FileNotFoundError``...) so generic handlers
keep working.
"""
from __future__ import annotations

__all__ = [
    "EdgecondError",
    "ConfigError",
    "DatasetError",
    "BufferFormatError",
    "BudgetError",
    "CondenseError",
    "ExportError",
    "FederatedError",
]


class EdgecondError(Exception):
    """Base class of every error edgecond raises deliberately."""


class ConfigError(EdgecondError, ValueError):
    """An argument, preset, registry name or config value is not acceptable."""


class DatasetError(EdgecondError, ValueError):
    """A dataset name, file or array layout is unknown, missing or malformed."""


class BufferFormatError(EdgecondError, ValueError):
    """A buffer file is damaged, truncated, foreign, of another version or fails its digest."""


class BudgetError(EdgecondError, ValueError):
    """A byte/memory budget or a budget trace is malformed."""


class CondenseError(EdgecondError, RuntimeError):
    """Condensation cannot start or continue (e.g. a checkpoint that does not match the config)."""


class ExportError(EdgecondError, RuntimeError):
    """A model cannot be exported to ONNX / ONNX Runtime training artifacts."""


class FederatedError(EdgecondError, RuntimeError):
    """A federated run is misconfigured (Flower app config, budget replies...)."""
