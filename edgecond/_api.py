"""Helpers of the public API (torch-free).

``edgecond.condense`` and ``edgecond.deploy`` are both a module and the function users call. The
import system binds a submodule to its parent package's attribute, so ``from edgecond import
condense`` may return the module; :func:`make_module_callable` makes that module call its function,
so ``condense(dataset, config)`` works whichever object the name resolves to, and module paths
(``edgecond.condense.engine``, ``import edgecond.condense as m``) keep working.
"""
from __future__ import annotations

import sys
import types


def make_module_callable(module_name: str, function_name: str) -> None:
    """Make ``sys.modules[module_name]`` callable as ``module.function_name``."""
    module = sys.modules[module_name]

    class _CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(self, function_name)(*args, **kwargs)

    _CallableModule.__name__ = f"CallableModule[{module_name}]"
    _CallableModule.__call__.__doc__ = f"Call :func:`{module_name}.{function_name}`."
    module.__class__ = _CallableModule
