"""Compatibility: the names ``edgecond.federated`` used to define, re-exported from where they live now.

- :mod:`edgecond.transfer`: what to send whom (plans, payloads, the client's prefix cache, the
  byte ledger); torch-free and Flower-free;
- :mod:`edgecond.budget`: :func:`parse_trace` (budget traces from their text spec);
- :mod:`edgecond.apps.flower_records`: the Flower record plumbing (budget query/reply, transfer
  records, cache state, :class:`Shipper`);
- :mod:`edgecond.apps.flower_config`: the run configuration (:class:`FederatedConfig`, the one
  place its defaults live).

New code imports from those modules; this one keeps ``from edgecond.federated import X`` working.
"""
from __future__ import annotations

from .apps import flower_config as _config
from .apps import flower_records as _records
from . import transfer as _transfer
from .apps.flower_config import *  # noqa: F401,F403
from .apps.flower_records import *  # noqa: F401,F403
from .budget import parse_trace
from .transfer import *  # noqa: F401,F403

__all__ = [*_config.__all__, *_records.__all__, "parse_trace", *_transfer.__all__]
