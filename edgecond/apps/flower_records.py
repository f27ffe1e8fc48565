"""Flower record plumbing of the federated apps: budget query/reply, transfer records, cache state.

The pure logic (plans, payloads, caches, ledgers) is :mod:`edgecond.transfer`; this module
turns it into Flower ``RecordDict``/``ConfigRecord``/``ArrayRecord`` objects and back, and
:class:`Shipper` runs one client's round on the server. ``flwr.app`` is imported inside the
functions that need it, so importing this module needs no Flower.

One round, as the ServerApp runs it::

    server                                            client (node)
    ─ query "budget" ───────────────────────────────► budget = trace.budget(partition, round)
                                                      memory = memory_trace.budget(...) (optional)
                                                      cache.fit_memory(memory): drop ranks from the end
    ◄─ {"bytes", "have", "digest", "memory"} ──────── (n_held, digest from its prefix cache)
    validate_budget_reply(...)   (malformed/oversized → rejected, logged, budget 0)
    plan = plan_transfer(buffer, have, budget, memory=memory)
                                 target = largest prefix fitting the budget AND the memory
    payload = build_payload(buffer, plan)             full prefix file | ranks(have, target) | nothing
    ─ train {model, config, transfer, payload} ─────► cache.apply(transfer, payload); train; reply
    ledger.record(round, node, plan, ...)             exact payload bytes per client per round

Accounting counts *buffer bytes*: ``bytes_for(target)`` for a first transfer (a complete, valid
prefix file) and ``len(ranks(have, target))`` for a delta. The payload never exceeds the budget.
Flower's own framing of the record (a few hundred bytes of object headers) is reported separately
as ``record_bytes``.
"""
from __future__ import annotations

import dataclasses
import logging

from ..errors import FederatedError
from ..transfer import (BudgetReply, ByteLedger, PrefixCache, TransferPlan, build_payload, buffer_identity,
                        plan_transfer, validate_transfer)

__all__ = [
    "QUERY_RECORD",
    "TRANSFER_RECORD",
    "PAYLOAD_RECORD",
    "CACHE_RECORD",
    "CACHE_META_RECORD",
    "MAX_REPLY_RECORD_BYTES",
    "make_budget_reply",
    "reply_partition",
    "validate_budget_reply",
    "transfer_records",
    "read_transfer",
    "cache_to_state",
    "cache_from_state",
    "Shipper",
]

log = logging.getLogger("edgecond.federated")

#: Record names inside Flower messages / ``context.state``.
QUERY_RECORD = "budget"
TRANSFER_RECORD = "edgecond-transfer"
PAYLOAD_RECORD = "edgecond-payload"
CACHE_RECORD = "edgecond-cache"
CACHE_META_RECORD = "edgecond-cache-meta"

#: A budget reply record larger than this (keys + values, in bytes) is rejected as oversized.
MAX_REPLY_RECORD_BYTES = 1024
_REPLY_KEYS = {"bytes", "have", "digest", "partition", "memory"}


def _config_size(record) -> int:
    """Bytes of a ConfigRecord's keys and values (Flower's ``count_bytes`` fails on "")."""
    total = 0
    for key, value in record.items():
        total += len(str(key))
        for v in value if isinstance(value, list) else [value]:
            total += len(v) if isinstance(v, (str, bytes)) else 8
    return total



def make_budget_reply(budget: int, have: int = 0, digest: str = "", partition: int | None = None,
                      memory: int | None = None):
    """The client's reply content to a budget query (a Flower ``RecordDict``). ``partition``: the
    client's partition id, which the server uses to name it in logs and ``metrics.json``;
    ``memory``: bytes of device memory for the held prefix this round (omitted = unlimited)."""
    from flwr.app import ConfigRecord, RecordDict

    record = {"bytes": int(budget), "have": int(have), "digest": str(digest)}
    if partition is not None:
        record["partition"] = int(partition)
    if memory is not None:
        record["memory"] = int(memory)
    return RecordDict({QUERY_RECORD: ConfigRecord(record)})


def reply_partition(content) -> int | None:
    """The partition id a budget reply names (``None`` when absent or malformed; never raises)."""
    try:
        value = content[QUERY_RECORD].get("partition")
    except Exception:  # noqa: BLE001 - a malformed reply is validate_budget_reply's to report
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def validate_budget_reply(content, *, max_budget: int, ipc: int) -> BudgetReply:
    """Check a client's budget reply; raise :class:`FederatedError` saying why it is rejected.

    ``content`` is the reply's ``RecordDict``. Accepted: exactly one ``ConfigRecord`` named
    ``"budget"`` with an int ``bytes`` in ``[0, max_budget]``, optionally an int ``have`` in
    ``[0, ipc]``, a str ``digest`` and an int ``partition`` >= 0; the record's size at most ``MAX_REPLY_RECORD_BYTES``.
    """
    try:
        names = list(content.keys())
    except AttributeError:
        raise FederatedError(
            f"budget reply is a {type(content).__name__}; expected a RecordDict with one "
            f"ConfigRecord {QUERY_RECORD!r}. Reply with edgecond.federated.make_budget_reply()."
        ) from None
    if names != [QUERY_RECORD]:
        raise FederatedError(
            f"budget reply holds records {names}; expected exactly [{QUERY_RECORD!r}]. "
            "Reply with edgecond.federated.make_budget_reply()."
        )
    from flwr.app import ConfigRecord

    record = content[QUERY_RECORD]
    if not isinstance(record, ConfigRecord):
        raise FederatedError(
            f"budget reply record {QUERY_RECORD!r} is a {type(record).__name__}; expected a "
            "ConfigRecord. Reply with edgecond.federated.make_budget_reply()."
        )
    size = _config_size(record)
    if size > MAX_REPLY_RECORD_BYTES:
        raise FederatedError(
            f"budget reply is oversized: {size} bytes; expected at most "
            f"{MAX_REPLY_RECORD_BYTES} bytes (keys {sorted(_REPLY_KEYS)}). Send only the budget."
        )
    extra = set(record.keys()) - _REPLY_KEYS
    if extra:
        raise FederatedError(
            f"budget reply has unexpected keys {sorted(extra)}; expected only "
            f"{sorted(_REPLY_KEYS)}. Send only the budget."
        )
    if "bytes" not in record:
        raise FederatedError(
            "budget reply has no 'bytes' key; expected the client's budget in bytes (int >= 0)."
        )
    budget = record["bytes"]
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise FederatedError(
            f"budget reply 'bytes' = {budget!r} ({type(budget).__name__}); expected an int "
            "number of bytes >= 0."
        )
    if budget < 0:
        raise FederatedError(f"budget reply 'bytes' = {budget} is negative; expected >= 0.")
    if budget > max_budget:
        raise FederatedError(
            f"budget reply 'bytes' = {budget} is oversized; expected at most {max_budget} "
            "(max-budget-bytes). Raise max-budget-bytes if such budgets are real."
        )
    have = record.get("have", 0)
    if isinstance(have, bool) or not isinstance(have, int) or not 0 <= have <= ipc:
        raise FederatedError(
            f"budget reply 'have' = {have!r}; expected an int in [0, {ipc}] (ranks held)."
        )
    digest = record.get("digest", "")
    if not isinstance(digest, str) or len(digest) > 128:
        raise FederatedError(
            f"budget reply 'digest' = {digest!r:.40}; expected the buffer id string the server sent."
        )
    partition = record.get("partition")
    if partition is not None and (isinstance(partition, bool) or not isinstance(partition, int) or partition < 0):
        raise FederatedError(f"budget reply 'partition' = {partition!r}; expected the client's partition id "
                             "(an int >= 0).")
    memory = record.get("memory", None)
    if memory is not None and (isinstance(memory, bool) or not isinstance(memory, int)
                               or not 0 <= memory <= max_budget):
        raise FederatedError(
            f"budget reply 'memory' = {memory!r}; expected an int number of bytes in [0, {max_budget}] "
            "(max-budget-bytes), or no 'memory' key for an unlimited device."
        )
    return BudgetReply(budget=int(budget), have=int(have), digest=digest,
                       memory=None if memory is None else int(memory))



def transfer_records(plan: TransferPlan, payload: bytes, *, digest: str, buffer_mode: str) -> dict:
    """Flower records (``ConfigRecord`` + optional ``ArrayRecord``) carrying ``plan``/``payload``.

    Returned as a dict ``{record name: record}`` to merge into a *per-client* ``RecordDict``.
    """
    import numpy as np
    from flwr.app import Array, ArrayRecord, ConfigRecord

    out: dict = {
        TRANSFER_RECORD: ConfigRecord(
            {
                "kind": plan.kind,
                "have": int(plan.have),
                "target": int(plan.target),
                "nbytes": int(plan.nbytes),
                "budget": int(plan.budget),
                "digest": str(digest),
                "reason": plan.reason,
                "buffer-mode": buffer_mode,
                "memory": -1 if plan.memory is None else int(plan.memory),
            }
        )
    }
    if plan.nbytes:
        arr = np.frombuffer(payload, dtype=np.uint8).copy()
        out[PAYLOAD_RECORD] = ArrayRecord({"bytes": Array(arr)})
    return out


def read_transfer(content) -> tuple[dict, bytes]:
    """Inverse of :func:`transfer_records` on the client: ``(transfer dict, payload bytes)``."""
    if TRANSFER_RECORD not in content:
        return {"kind": "none", "have": 0, "target": 0, "nbytes": 0, "budget": 0, "digest": "",
                "reason": "no transfer record", "buffer-mode": "off"}, b""
    transfer = validate_transfer(dict(content[TRANSFER_RECORD]))
    payload = b""
    if PAYLOAD_RECORD in content:
        payload = content[PAYLOAD_RECORD]["bytes"].numpy().tobytes()
    if len(payload) != transfer["nbytes"]:
        raise FederatedError(
            f"received {len(payload)} payload bytes but the transfer record announces "
            f"{transfer.get('nbytes')}; the message was damaged in transit."
        )
    return transfer, payload



def cache_to_state(cache: PrefixCache, state) -> None:
    """Store ``cache`` into a Flower ``RecordDict`` (``context.state``)."""
    import numpy as np
    from flwr.app import Array, ArrayRecord, ConfigRecord

    state[CACHE_META_RECORD] = ConfigRecord({"ipc": int(cache.ipc), "digest": cache.digest})
    state[CACHE_RECORD] = ArrayRecord(
        {"bytes": Array(np.frombuffer(cache.data, dtype=np.uint8).copy())}
    )


def cache_from_state(state, cls: type = PrefixCache) -> PrefixCache:
    """The cache :func:`cache_to_state` stored (an empty ``cls()`` when ``state`` holds none)."""
    if CACHE_META_RECORD not in state or CACHE_RECORD not in state:
        return cls()
    meta = state[CACHE_META_RECORD]
    data = state[CACHE_RECORD]["bytes"].numpy().tobytes()
    return cls(data=data, ipc=int(meta["ipc"]), digest=str(meta["digest"]))


def _record_bytes(records: dict) -> int:
    """Flower's framing of one client's records: ConfigRecord keys+values, ArrayRecord bytes."""
    from flwr.app import ConfigRecord

    return sum(_config_size(r) if isinstance(r, ConfigRecord) else int(r.count_bytes()) for r in records.values())


class Shipper:
    """Turns each client's budget reply into that client's own transfer records.

    Used by the ServerApp's strategy (``servers/server_app.py``) and by the in-process
    benchmark. Every call builds *new* records for one client; nothing is shared between
    clients. Rejected replies (malformed, oversized) and failed queries are logged with their
    reason and the client gets nothing this round (it still trains on what it holds).
    """

    def __init__(self, buffer, *, buffer_mode: str = "mix", max_budget: int = 1 << 30,
                 ledger: "ByteLedger | None" = None):
        # Clients get lean slices: provenance (method config, accuracy table, MLS history) stays
        # on the server; rank digests are identical, so deltas and caches are unaffected.
        self.buffer = buffer.lean() if buffer.meta.has_provenance else buffer
        self.digest = buffer_identity(buffer)
        self.buffer_mode = buffer_mode
        self.max_budget = int(max_budget)
        self.ledger = ledger if ledger is not None else ByteLedger()

    def handle(self, rnd: int, client: str, reply_content=None, *, error: str | None = None
               ) -> tuple[TransferPlan, bytes, dict]:
        """``(plan, payload, records)`` for one client; ``records`` is a fresh dict of Flower records."""
        rejected = ""
        if error is not None:
            rejected = f"budget query failed: {error}"
            reply = BudgetReply(budget=0)
        else:
            try:
                reply = validate_budget_reply(reply_content, max_budget=self.max_budget,
                                              ipc=self.buffer.ipc)
            except FederatedError as err:
                rejected = f"budget reply rejected: {err}"
                reply = BudgetReply(budget=0)
        if rejected:
            log.warning("round %s client %s: %s; sending nothing, it trains on what it holds",
                        rnd, client, rejected)
        have = reply.have if (reply.digest == self.digest and reply.have > 0) else 0
        plan = plan_transfer(self.buffer, have=have, budget=reply.budget,
                             enabled=self.buffer_mode != "off", memory=reply.memory)
        if rejected:
            plan = dataclasses.replace(plan, kind="none", target=plan.have, nbytes=0, reason=rejected)
        payload = build_payload(self.buffer, plan)
        records = transfer_records(plan, payload, digest=self.digest, buffer_mode=self.buffer_mode)
        record_bytes = _record_bytes(records)
        held = int(self.buffer.bytes_for(plan.held_after, provenance=False)) if plan.held_after > 0 else 0
        self.ledger.record_transfer(rnd, client, plan, record_bytes=record_bytes, rejected=rejected,
                                    held_bytes=held)
        log.info("round %s client %s: budget %d B, memory %s, holds %d, %s -> %d ranks, %d payload bytes",
                 rnd, client, plan.budget, "unlimited" if plan.memory is None else f"{plan.memory} B",
                 plan.have, plan.kind, plan.held_after, plan.nbytes)
        return plan, payload, records
