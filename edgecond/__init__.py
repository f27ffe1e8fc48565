"""edgecond: condense a dataset once into one multisize buffer; every prefix is a training set.

Importing ``edgecond`` is cheap and never imports torch: ``edgecond.buffer`` and
``edgecond.budget`` (numpy + safetensors only) are usable on torch-free devices.
Import the torch-based parts explicitly: ``edgecond.data``, ``edgecond.models``,
``edgecond.augment``, ``edgecond.evaluate``, ``edgecond.condense``, ``edgecond.export``.
"""
from .errors import (  # noqa: F401
    BudgetError,
    BufferFormatError,
    CondenseError,
    ConfigError,
    DatasetError,
    EdgecondError,
    ExportError,
    FederatedError,
)

__version__ = "0.1.0"
