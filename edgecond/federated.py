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

from .apps.flower_config import (BUFFER_MODES, RUN_CONFIG_DEFAULTS, FederatedConfig, config_from_run_config,
                                 parse_faults)
from .apps.flower_records import (CACHE_META_RECORD, CACHE_RECORD, MAX_REPLY_RECORD_BYTES, PAYLOAD_RECORD,
                                  QUERY_RECORD, TRANSFER_RECORD, Shipper, make_budget_reply, read_transfer,
                                  reply_partition, transfer_records, validate_budget_reply)
from .budget import parse_trace
from .transfer import (BudgetReply, ByteLedger, PrefixCache, TransferPlan, build_payload, buffer_identity,
                       plan_transfer, short_reason, validate_transfer)

__all__ = [
    "FederatedConfig",
    "RUN_CONFIG_DEFAULTS",
    "BUFFER_MODES",
    "config_from_run_config",
    "parse_trace",
    "buffer_identity",
    "BudgetReply",
    "make_budget_reply",
    "reply_partition",
    "validate_budget_reply",
    "TransferPlan",
    "plan_transfer",
    "build_payload",
    "validate_transfer",
    "PrefixCache",
    "ByteLedger",
    "short_reason",
    "Shipper",
    "transfer_records",
    "read_transfer",
    "parse_faults",
    "QUERY_RECORD",
    "TRANSFER_RECORD",
    "PAYLOAD_RECORD",
    "CACHE_RECORD",
    "CACHE_META_RECORD",
    "MAX_REPLY_RECORD_BYTES",
]
