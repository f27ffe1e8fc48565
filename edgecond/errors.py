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

from enum import Enum

__all__ = [
    "EdgecondError",
    "ConfigError",
    "DatasetError",
    "BufferFormatError",
    "BufferFormatReason",
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


class BufferFormatReason(str, Enum):
    """What kind of failure a :class:`BufferFormatError` reports (``exc.reason``); one per reader check."""

    CONTAINER = "container"  # empty/truncated prefix, header length, not JSON, unreadable file
    FOREIGN = "foreign"  # not an edgecond buffer (plain safetensors, another format)
    VERSION = "version"  # an edgecond format or formation version this reader does not know
    METADATA = "metadata"  # metadata keys or essential values (classes, labels, mean/std, factor, soft, recipe)
    TENSORS = "tensors"  # tensor names, dtypes, shapes
    CAPS = "caps"  # a declared size above the spec's caps
    LAYOUT = "layout"  # data offsets, truncated data, trailing bytes
    DIGEST = "digest"  # the digest list is malformed or a rank fails its chain entry
    PROVENANCE = "provenance"  # provenance keys / 'prov' digest
    DELTA = "delta"  # a delta's start/anchor, or a delta that does not fit the held buffer
    VALUES = "values"  # stored values that decode to NaN/inf/out-of-range numbers
    DECODE_BUDGET = "decode-budget"  # decoding would allocate more than the decode budget
    OTHER = "other"  # raised outside the buffer reader's checks


class BufferFormatError(EdgecondError, ValueError):
    """A buffer file is damaged, truncated, foreign, of another version or fails its digest.

    ``reason`` (a :class:`BufferFormatReason`) says which check failed, for code that reacts
    differently to, say, a foreign file and a damaged one.
    """

    def __init__(self, *args: object, reason: BufferFormatReason = BufferFormatReason.OTHER) -> None:
        super().__init__(*args)
        self.reason = BufferFormatReason(reason)


class BudgetError(EdgecondError, ValueError):
    """A byte/memory budget or a budget trace is malformed."""


class CondenseError(EdgecondError, RuntimeError):
    """Condensation cannot start or continue (e.g. a checkpoint that does not match the config)."""


class ExportError(EdgecondError, RuntimeError):
    """A model cannot be exported to ONNX / ONNX Runtime training artifacts."""


class FederatedError(EdgecondError, RuntimeError):
    """A federated run is misconfigured (Flower app config, budget replies...)."""
