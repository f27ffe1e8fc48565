"""Condensation: turn a real dataset into ONE multisize buffer.

Methods (``METHODS`` registry): matchers ``idc`` (gradient matching, multi-formation),
``idm`` (improved distribution matching), ``dm`` (plain distribution matching) and selectors
``random``, ``herding``. The multisize (MDC) wrapper plugs in as engine hooks
(``CondenseConfig.hooks = "mdc"``, see :mod:`edgecond.condense.multisize`).

Quick start::

    from edgecond.data import load_dataset
    from edgecond.condense import condense, condense_preset

    ds = load_dataset("digits")
    cfg = condense_preset("idm", "quick", "digits", ipc=10)
    result = condense(ds, cfg, progress=False)
    result.buffer.save("digits-idm-ipc10.safetensors")
"""
from .base import EngineHooks, Matcher, MatchOutput, Method, Selector, SyntheticSet
from .checkpoint import load_checkpoint, save_checkpoint
from .engine import (
    DTYPES,
    METHODS,
    CondenseConfig,
    CondenseResult,
    RealData,
    build_hooks,
    condense,
    condense_preset,
    initial_images,
    list_methods,
    register_method,
)
from . import idc, idm, sdc, selection  # noqa: F401  (register the methods)
from .idc import IDC, IDCConfig
from .idm import DM, IDM, DMConfig, IDMConfig
from .selection import HerdingConfig, HerdingSelection, RandomSelection

__all__ = [
    "METHODS",
    "DTYPES",
    "condense",
    "CondenseConfig",
    "CondenseResult",
    "condense_preset",
    "list_methods",
    "register_method",
    "build_hooks",
    "initial_images",
    "RealData",
    "SyntheticSet",
    "MatchOutput",
    "Method",
    "Matcher",
    "Selector",
    "EngineHooks",
    "IDC",
    "IDCConfig",
    "IDM",
    "IDMConfig",
    "DM",
    "DMConfig",
    "RandomSelection",
    "HerdingSelection",
    "HerdingConfig",
    "save_checkpoint",
    "load_checkpoint",
]

from .._api import make_module_callable  # noqa: E402

make_module_callable(__name__, "condense")  # `from edgecond import condense; condense(data, config)`
