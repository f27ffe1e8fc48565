"""edgecond: condense a dataset once into one multisize buffer; every prefix is a training set.

The names a user needs are importable from the top level::

    from edgecond import load_dataset, condense, condense_preset, MultisizeBuffer, evaluate_buffer, eval_preset

    data = load_dataset("digits")
    result = condense(data, condense_preset("idm", "quick", "digits", ipc=2, iterations=2), progress=False)
    result.buffer.save("digits.safetensors")
    print(MultisizeBuffer.load("digits.safetensors").bytes_for(1))

They are loaded lazily (PEP 562): ``import edgecond`` and ``import edgecond.buffer`` never import
torch, so the buffer, budgets and the edge trainer work on devices with only numpy, safetensors
and ONNX Runtime (``pip install edgecond``; ``edgecond[torch]`` adds condensation, evaluation and
export). A name whose module needs torch imports torch the first time it is used.

Apps live under :mod:`edgecond.apps` (Flower ClientApp/ServerApp, Avalanche replay, edge trainer).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

# public name -> module that defines it (relative to edgecond). torch-free modules are marked in
# docs/architecture.md; everything else imports torch on first use.
_LAZY: dict[str, str] = {
    # data (torch)
    "load_dataset": "data", "list_datasets": "data", "register_dataset": "data", "from_arrays": "data",
    "ImageDataset": "data",
    # condensation (torch)
    "condense": "condense", "condense_preset": "condense", "CondenseConfig": "condense",
    "CondenseResult": "condense", "list_methods": "condense", "register_method": "condense",
    "mdc_settings": "condense.presets", "DataFacts": "facts",
    # the buffer file (numpy + safetensors)
    "MultisizeBuffer": "buffer", "BufferMeta": "buffer", "read_meta": "buffer", "slice_file": "buffer",
    # budgets (numpy)
    "ipc_for_bytes": "budget", "ipc_for_memory": "budget", "memory_for": "budget", "delta_bytes": "budget",
    "BudgetDecision": "budget", "MemoryModel": "budget", "ConstantTrace": "budget", "LogNormalTrace": "budget",
    "CsvTrace": "budget",
    "parse_bytes": "units", "format_bytes": "units",
    # evaluation (torch)
    "EvalConfig": "evaluate", "eval_preset": "evaluate", "evaluate_buffer": "evaluate",
    "evaluate_seeds": "evaluate", "evaluate_random_real": "evaluate", "train_and_test": "evaluate",
    "train_model": "evaluate", "test_accuracy": "evaluate", "EvalResult": "evaluate", "SizeResult": "evaluate",
    # pictures (matplotlib, numpy)
    "image_grid": "show", "save_grid": "show",
    # export / deploy (torch, onnx, onnxruntime)
    "export_model": "export", "ExportConfig": "export", "ExportResult": "export",
    "deploy": "deploy", "DeployConfig": "deploy", "DeployResult": "deploy", "read_manifest": "deploy",
}

# names that are both a submodule and its main function: the package attribute is the submodule
# (so ``edgecond.condense.engine`` and ``import edgecond.condense as m`` keep working), and that
# module is callable with the function's arguments.
_MODULE_FUNCTIONS = frozenset({"condense", "deploy"})

__all__ = sorted(
    [*_LAZY, "BudgetError", "BufferFormatError", "CondenseError", "ConfigError", "DatasetError",
     "EdgecondError", "ExportError", "FederatedError", "__version__"]
)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgecond' has no attribute {name!r}")
    mod = importlib.import_module(f".{module}", __name__)
    if name in _MODULE_FUNCTIONS:  # the submodule itself, made callable (see edgecond._api)
        return mod
    value = getattr(mod, name)
    globals()[name] = value  # cache: the next lookup skips __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # static type checkers and IDEs see the real names
    from .budget import (BudgetDecision, ConstantTrace, CsvTrace, LogNormalTrace, MemoryModel, delta_bytes,
                         ipc_for_bytes, ipc_for_memory, memory_for)
    from .buffer import BufferMeta, MultisizeBuffer, read_meta, slice_file
    from .condense import (CondenseConfig, CondenseResult, condense, condense_preset, list_methods,
                           register_method)
    from .condense.presets import mdc_settings
    from .facts import DataFacts
    from .data import ImageDataset, from_arrays, list_datasets, load_dataset, register_dataset
    from .deploy import DeployConfig, DeployResult, deploy, read_manifest
    from .evaluate import (EvalConfig, EvalResult, SizeResult, eval_preset, evaluate_buffer, evaluate_random_real,
                           evaluate_seeds, test_accuracy, train_and_test, train_model)
    from .export import ExportConfig, ExportResult, export_model
    from .show import image_grid, save_grid
    from .units import format_bytes, parse_bytes
