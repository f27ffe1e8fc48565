"""Federated shipping of a multisize buffer: budgets in, byte-exact prefix payloads out.

This module is the logic behind the Flower apps in ``servers/`` and ``clients/`` (which stay thin)
and behind ``benchmarks/federated.py`` (which drives the same functions in-process). It imports
neither torch nor Flower at module level; the few helpers that build Flower records import
``flwr.app`` lazily.

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
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import BudgetError, FederatedError

__all__ = [
    "FederatedConfig",
    "RUN_CONFIG_DEFAULTS",
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
]

log = logging.getLogger(__name__)

#: Record names inside Flower messages / ``context.state``.
QUERY_RECORD = "budget"
TRANSFER_RECORD = "edgecond-transfer"
PAYLOAD_RECORD = "edgecond-payload"
CACHE_RECORD = "edgecond-cache"
CACHE_META_RECORD = "edgecond-cache-meta"

#: A budget reply record larger than this (keys + values, in bytes) is rejected as oversized.
MAX_REPLY_RECORD_BYTES = 1024
_REPLY_KEYS = {"bytes", "have", "digest", "partition", "memory"}
BUFFER_MODES = ("mix", "warmup", "off")


# --------------------------------------------------------------------------------------------
# Run configuration ([tool.flwr.app.config], kebab-case)
# --------------------------------------------------------------------------------------------


@dataclass
class FederatedConfig:
    """Resolved run configuration of the federated apps (``[tool.flwr.app.config]``).

    Every field maps to the kebab-case key of the same name (``num_server_rounds`` ↔
    ``num-server-rounds``). Defaults are the documented ones (``docs/federated.md``).
    """

    num_server_rounds: int = 3
    #: the multisize buffer the server ships; condensed at start-up when the file is missing
    buffer_path: str = "runs/federated/digits-buffer.safetensors"
    dataset: str = "digits"
    #: used only when ``buffer_path`` is missing (see ``servers/condense_job.py``)
    condense_method: str = "random"
    condense_preset: str = "quick"
    condense_ipc: int = 10
    condense_hooks: str = ""
    model: str = "convnet"
    model_width: int = 32
    #: fedavg | fedavgm | fedprox | fedadam | fedyogi | fedadagrad | fedmedian | fedtrimmedavg
    strategy: str = "fedavg"
    proximal_mu: float = 0.01
    #: mix: train on local + condensed; warmup: condensed epochs first, then local; off: never ship
    buffer_mode: str = "mix"
    #: mix mode: loss = (1 - w) * CE(local batch) + w * CE(condensed batch), w = condensed-weight
    condensed_weight: float = 0.5
    warmup_epochs: int = 1
    #: "constant:40kB" | "lognormal:median=40kB,sigma=0.5,seed=0" | "csv:PATH"
    budget_trace: str = "lognormal:median=40kB,sigma=0.5,seed=0"
    #: device memory per (client, round) for the held prefix, same spec as budget-trace;
    #: "" = unlimited. A node's --node-config 'memory-trace=...' overrides it.
    memory_trace: str = ""
    #: budgets above this (bytes, or a size string) are rejected as oversized replies
    max_budget_bytes: str = "1GB"
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_train_nodes: int = 2
    min_evaluate_nodes: int = 2
    min_available_nodes: int = 2
    local_epochs: int = 1
    lr: float = 0.05
    batch_size: int = 32
    #: "dirichlet" (non-IID, ``dirichlet-alpha``) or "iid"
    #: fraction of the training set held by the server only (it condenses from it); the
    #: clients partition the rest. 0 = the server condenses the clients' data (not federated).
    server_fraction: float = 0.2
    partitioner: str = "dirichlet"
    dirichlet_alpha: float = 0.1
    num_partitions: int = 10
    seed: int = 0
    #: seconds the server waits for replies to a query / train / evaluate round
    query_timeout: float = 120.0
    round_timeout: float = 600.0
    output_dir: str = "runs/federated"
    device: str = "cpu"
    #: fault injection for tests/demos: "PARTITION:ROUND,..." clients that raise in that round
    fault_crash: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> "FederatedConfig":
        if self.buffer_mode not in BUFFER_MODES:
            raise FederatedError(
                f"buffer-mode {self.buffer_mode!r} is not supported; expected one of "
                f"{', '.join(BUFFER_MODES)}. Set buffer-mode in [tool.flwr.app.config] "
                "or pass --run-config 'buffer-mode=\"mix\"'."
            )
        if self.partitioner not in ("dirichlet", "iid"):
            raise FederatedError(
                f"partitioner {self.partitioner!r} is not supported; expected 'dirichlet' or "
                "'iid'. Fix partitioner in [tool.flwr.app.config]."
            )
        for name in ("num_server_rounds", "num_partitions", "local_epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise FederatedError(
                    f"{name.replace('_', '-')} = {getattr(self, name)} must be >= 1. "
                    "Fix it in [tool.flwr.app.config] or --run-config."
                )
        for name in ("fraction_train", "fraction_evaluate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise FederatedError(
                    f"{name.replace('_', '-')} = {v} must be within [0, 1]. "
                    "Fix it in [tool.flwr.app.config] or --run-config."
                )
        if self.partitioner == "dirichlet" and self.dirichlet_alpha <= 0:
            raise FederatedError(
                f"dirichlet-alpha = {self.dirichlet_alpha} must be > 0 (e.g. 0.1 for strongly "
                "non-IID, 100 for nearly IID); or set partitioner = \"iid\"."
            )
        if not 0.0 <= self.condensed_weight <= 1.0:
            raise FederatedError(
                f"condensed-weight = {self.condensed_weight} must be within [0, 1] (the condensed "
                "batch's share of the mix-mode loss); fix it in [tool.flwr.app.config]."
            )
        if self.lr <= 0:
            raise FederatedError(f"lr = {self.lr} must be > 0; fix lr in [tool.flwr.app.config].")
        if not 0.0 <= self.server_fraction < 1.0:
            raise FederatedError(
                f"server-fraction = {self.server_fraction} must be within [0, 1) (the share of the "
                "training set only the server holds, default 0.2); fix it in [tool.flwr.app.config]."
            )
        parse_trace(self.budget_trace)  # fails early with a BudgetError naming the spec
        if self.memory_trace:
            parse_trace(self.memory_trace)
        self.max_budget()
        parse_faults(self.fault_crash)
        return self

    def max_budget(self) -> int:
        from .units import parse_bytes

        return int(parse_bytes(str(self.max_budget_bytes)))


RUN_CONFIG_DEFAULTS: dict[str, Any] = {
    f.name.replace("_", "-"): f.default for f in dataclasses.fields(FederatedConfig)
}


def config_from_run_config(run_config: Mapping[str, Any]) -> FederatedConfig:
    """Build a :class:`FederatedConfig` from Flower's ``context.run_config`` (kebab-case keys).

    Unknown keys are ignored with a warning (other apps may share the run config); values are
    converted to the field's type, and a value that cannot be converted raises
    :class:`FederatedError` naming the key.
    """
    known = {f.name: f for f in dataclasses.fields(FederatedConfig)}
    kwargs: dict[str, Any] = {}
    for key, value in run_config.items():
        name = str(key).replace("-", "_")
        if name not in known:
            log.warning("ignoring unknown run-config key %r (not an edgecond federated key)", key)
            continue
        default = known[name].default
        try:
            if isinstance(default, bool):
                v = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
            elif isinstance(default, int):
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError(value)
                v = int(value)
            elif isinstance(default, float):
                if isinstance(value, bool):
                    raise ValueError(value)
                v = float(value)
            else:
                v = str(value)
        except (TypeError, ValueError):
            raise FederatedError(
                f"run-config {key} = {value!r} has the wrong type; expected "
                f"{type(default).__name__} (default {default!r}). Fix it in "
                "[tool.flwr.app.config] or --run-config."
            ) from None
        kwargs[name] = v
    return FederatedConfig(**kwargs).validate()


# --------------------------------------------------------------------------------------------
# Budget traces and fault specs
# --------------------------------------------------------------------------------------------


def parse_trace(spec: str):
    """Parse a budget-trace spec into an :mod:`edgecond.budget` trace.

    ``constant:40kB`` | ``lognormal:median=40kB,sigma=0.5,seed=0`` | ``csv:PATH``. The trace
    answers ``trace.budget(client, round) -> int`` bytes.
    """
    from . import budget as _budget
    from .units import parse_bytes

    text = str(spec).strip()
    kind, _, arg = text.partition(":")
    kind = kind.strip().lower()
    try:
        if kind == "constant":
            return _budget.ConstantTrace(int(parse_bytes(arg.strip())))
        if kind == "lognormal":
            params: dict[str, str] = {}
            for part in filter(None, (p.strip() for p in arg.split(","))):
                k, eq, v = part.partition("=")
                if not eq:
                    raise ValueError(part)
                params[k.strip().lower()] = v.strip()
            unknown = set(params) - {"median", "sigma", "seed", "floor", "ceiling"}
            if unknown or "median" not in params:
                raise ValueError(sorted(unknown))
            return _budget.LogNormalTrace(
                median=int(parse_bytes(params["median"])),
                sigma=float(params.get("sigma", 0.5)),
                seed=int(params.get("seed", 0)),
                floor=int(parse_bytes(params.get("floor", "0"))),
                ceiling=int(parse_bytes(params["ceiling"])) if "ceiling" in params else None,
            )
        if kind == "csv":
            if not arg.strip():
                raise ValueError("empty path")
            return _budget.CsvTrace(arg.strip())
    except BudgetError as err:
        raise BudgetError(f"budget-trace {spec!r}: {err}") from None
    except (TypeError, ValueError):
        pass
    raise BudgetError(
        f"budget-trace {spec!r} is not understood; expected 'constant:SIZE', "
        "'lognormal:median=SIZE,sigma=FLOAT,seed=INT[,floor=SIZE,ceiling=SIZE]' or 'csv:PATH' (SIZE like 40kB or 1.5MB). "
        "Fix budget-trace in [tool.flwr.app.config] or the node's --node-config."
    )


def parse_faults(spec: str) -> dict[int, set[int]]:
    """``"1:2,3:1"`` → ``{1: {2}, 3: {1}}`` (partition → rounds in which that client crashes)."""
    out: dict[int, set[int]] = {}
    for part in filter(None, (p.strip() for p in str(spec or "").split(","))):
        pid, sep, rnd = part.partition(":")
        try:
            if not sep:
                raise ValueError(part)
            out.setdefault(int(pid), set()).add(int(rnd))
        except ValueError:
            raise FederatedError(
                f"fault-crash entry {part!r} is not PARTITION:ROUND (e.g. '1:2'); "
                "fix fault-crash in the run config or leave it empty."
            ) from None
    return out


# --------------------------------------------------------------------------------------------
# Buffer identity
# --------------------------------------------------------------------------------------------


def buffer_identity(buffer) -> str:
    """A stable id of the buffer a server ships: the first entry of its digest chain.

    ``d[0]`` covers all metadata and rank 0 (docs/buffer-format.md §4), so every prefix and every
    slice of one buffer shares it. The client reports the id of the prefix it holds with its
    budget; a mismatch (the server switched buffers, the cache is foreign) makes the server send
    a complete prefix file instead of a delta.
    """
    digests = getattr(buffer.meta, "digests", None)
    if digests:
        return str(digests[0])
    return str(buffer.digest)[:64]


# --------------------------------------------------------------------------------------------
# Budget query / reply
# --------------------------------------------------------------------------------------------


def _config_size(record) -> int:
    """Bytes of a ConfigRecord's keys and values (Flower's ``count_bytes`` fails on "")."""
    total = 0
    for key, value in record.items():
        total += len(str(key))
        for v in value if isinstance(value, list) else [value]:
            total += len(v) if isinstance(v, (str, bytes)) else 8
    return total


@dataclass(frozen=True)
class BudgetReply:
    """A validated budget reply: the budget in bytes and what the client already holds."""

    budget: int
    have: int = 0
    digest: str = ""
    #: device memory for the held prefix in bytes; None = not limited
    memory: int | None = None


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
    record = content[QUERY_RECORD]
    if type(record).__name__ != "ConfigRecord":
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


# --------------------------------------------------------------------------------------------
# Transfer plan and payload
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransferPlan:
    """What one client gets this round.

    ``kind``: ``"full"`` (a complete prefix file of ``target`` ranks, ``bytes_for(target)``
    bytes), ``"delta"`` (ranks ``have..target``, ``len(ranks(have, target))`` bytes) or
    ``"none"``. ``nbytes`` is the exact payload size; ``reason`` says why in words.
    """

    kind: str
    have: int
    target: int
    nbytes: int
    budget: int
    reason: str = ""
    #: the client's memory budget this round (bytes; None = unlimited)
    memory: int | None = None

    @property
    def held_after(self) -> int:
        return self.target if self.kind != "none" else self.have


def plan_transfer(buffer, *, have: int, budget: int, enabled: bool = True,
                  memory: int | None = None) -> TransferPlan:
    """Decide what to send a client holding ``have`` ranks whose budget is ``budget`` bytes.

    The target is the largest prefix whose complete file fits the budget
    (``buffer.largest_fitting(budget)``) **and** the client's device memory (``memory`` bytes
    for the held prefix file; ``None`` = unlimited); only the ranks the client lacks are sent.
    A budget below one rank sends nothing (the client trains on what it has, or locally only).
    A client holding more than its memory allows is expected to have dropped ranks from the end
    before replying (:meth:`PrefixCache.fit_memory`); the plan never grows it past ``memory``.
    """
    plan = _plan(buffer, int(have), int(budget), enabled, memory)
    return dataclasses.replace(plan, memory=None if memory is None else int(memory))


def _plan(buffer, have: int, budget: int, enabled: bool, memory: int | None) -> TransferPlan:
    if not enabled:
        return TransferPlan("none", have, have, 0, budget, "buffer-mode is off")
    target = int(buffer.largest_fitting(budget)) if budget > 0 else 0
    cap = None
    if memory is not None:
        cap = int(buffer.largest_fitting(int(memory))) if memory > 0 else 0
        if cap < target:
            target = cap
            if target <= have:
                return TransferPlan("none", have, have, 0, budget,
                                    f"memory {memory} B holds {cap} ranks (client holds {have})")
    if target <= 0:
        one = buffer.bytes_for(1)
        return TransferPlan(
            "none", have, have, 0, budget,
            f"budget {budget} B is below one rank (bytes_for(1) = {one} B)",
        )
    if have <= 0:
        return TransferPlan("full", 0, target, int(buffer.bytes_for(target)), budget,
                            f"first transfer: prefix of {target} ranks")
    if target <= have:
        return TransferPlan("none", have, have, 0, budget,
                            f"client holds {have} ranks >= {target} that fit {budget} B")
    # a delta is never larger than the prefix file it completes; shrink defensively if it were
    while target > have and buffer.delta_bytes(have, target) > budget:
        target -= 1
    if target <= have:
        return TransferPlan("none", have, have, 0, budget,
                            f"the delta to {have + 1} ranks does not fit {budget} B")
    nbytes = int(buffer.delta_bytes(have, target))
    return TransferPlan("delta", have, target, nbytes, budget,
                        f"ranks {have}..{target - 1} ({target - have} new)")


def build_payload(buffer, plan: TransferPlan) -> bytes:
    """The exact bytes for ``plan``: a prefix file (``full``), ``ranks(have, target)`` or b""."""
    if plan.kind == "none":
        return b""
    if plan.kind == "full":
        data = buffer.to_bytes(plan.target)
    elif plan.kind == "delta":
        data = bytes(buffer.ranks(plan.have, plan.target))
    else:
        raise FederatedError(f"unknown transfer kind {plan.kind!r}; expected full|delta|none.")
    if len(data) != plan.nbytes:
        raise FederatedError(
            f"payload for {plan.kind} {plan.have}->{plan.target} is {len(data)} bytes but the plan "
            f"says {plan.nbytes}; the buffer's bytes_for/ranks disagree (a bug in edgecond.buffer)."
        )
    if plan.nbytes > plan.budget:
        raise FederatedError(
            f"payload of {plan.nbytes} bytes exceeds the client's budget of {plan.budget} bytes; "
            "this is a bug in plan_transfer (it must never send more than the budget)."
        )
    return data


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


_MAX_RANKS = 47_662  # a buffer header (1 MiB) holds at most this many rank digests


def _int_in(transfer: Mapping[str, Any], key: str, lo: int, hi: int | None, default: Any = None) -> int:
    v = transfer.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        raise FederatedError(f"the transfer record's {key!r} is {v!r:.40}; expected an integer in "
                             f"{lo}..{hi if hi is not None else 'inf'}. The message is damaged or not from an "
                             "edgecond server.")
    return int(v)


def validate_transfer(transfer: Mapping[str, Any]) -> dict:
    """The transfer record's schema (kind, have, target, nbytes, digest); raises FederatedError naming the field."""
    out = dict(transfer)
    kind = out.get("kind", "none")
    if kind not in ("full", "delta", "none"):
        raise FederatedError(f"the transfer record's 'kind' is {kind!r:.40}; expected full|delta|none.")
    out["kind"] = kind
    out["nbytes"] = _int_in(out, "nbytes", 0, None, 0)
    if not isinstance(out.get("digest", ""), str):
        raise FederatedError(f"the transfer record's 'digest' is {out.get('digest')!r:.40}; expected a string.")
    if kind != "none":
        out["target"] = _int_in(out, "target", 1, _MAX_RANKS)
        out["have"] = _int_in(out, "have", 0, out["target"] - 1, 0)
        if kind == "full" and out["have"] != 0:
            raise FederatedError(f"a full transfer must have 'have' 0, got {out['have']}; the message is damaged.")
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


# --------------------------------------------------------------------------------------------
# Client-side cache of the received prefix
# --------------------------------------------------------------------------------------------


def _load_buffer_bytes(data: bytes):
    from .buffer import MultisizeBuffer

    return MultisizeBuffer.from_bytes(data)


@dataclass
class PrefixCache:
    """The prefix of the server's buffer a client holds: a valid buffer file's bytes + its id.

    Survives across rounds in Flower's ``context.state`` (:meth:`to_state` / :meth:`from_state`).
    """

    data: bytes = b""
    ipc: int = 0
    digest: str = ""
    _buffer: Any = field(default=None, repr=False, compare=False)

    @property
    def buffer(self):
        """The held prefix as a ``MultisizeBuffer`` (``None`` when nothing is held)."""
        if self.ipc <= 0 or not self.data:
            return None
        if self._buffer is None:
            self._buffer = _load_buffer_bytes(self.data)
        return self._buffer

    def apply(self, transfer: Mapping[str, Any], payload: bytes) -> int:
        """Apply one received transfer; return the number of payload bytes consumed."""
        transfer = validate_transfer(transfer)
        kind = transfer["kind"]
        if kind == "none":
            return 0
        target = transfer["target"]
        if kind == "full":
            buf = _load_buffer_bytes(payload)
            if transfer.get("digest") and buffer_identity(buf) != str(transfer["digest"]):
                raise FederatedError(
                    f"received a prefix file of buffer {buffer_identity(buf)[:16]}... but the transfer "
                    f"announces {str(transfer['digest'])[:16]}...; the payload is damaged."
                )
            if buf.ipc != target:
                raise FederatedError(
                    f"received a prefix file of {buf.ipc} ranks but the transfer announces "
                    f"{target}; the payload is damaged."
                )
            self.data, self.ipc, self._buffer = bytes(payload), target, buf
            self.digest = buffer_identity(buf)
            return len(payload)
        if kind == "delta":
            have = transfer["have"]
            if self.ipc < have or str(transfer.get("digest", "")) != self.digest:
                raise FederatedError(
                    f"received ranks {have}..{target - 1} of buffer {transfer.get('digest')!r:.16} "
                    f"but this client holds {self.ipc} ranks of {self.digest!r:.16}; the server "
                    "must send a full prefix (reply with the true 'have' and 'digest')."
                )
            grown = _append(self.buffer, payload, have, target)
            self.data, self.ipc, self._buffer = grown.to_bytes(), target, grown
            return len(payload)
        raise FederatedError(f"unknown transfer kind {kind!r}; expected full|delta|none.")

    def reset(self) -> None:
        self.data, self.ipc, self.digest, self._buffer = b"", 0, "", None

    @property
    def held_bytes(self) -> int:
        """Bytes of device memory the held prefix file takes."""
        return len(self.data) if self.ipc > 0 else 0

    def fit_memory(self, memory: int | None) -> int:
        """Drop ranks from the end until the held prefix file fits ``memory`` bytes (None =
        unlimited); return the number of ranks dropped. The result is the valid smaller prefix
        file (a prefix of a multisize buffer is a buffer), so a later delta still applies."""
        if memory is None or self.ipc <= 0 or len(self.data) <= int(memory):
            return 0
        buf = self.buffer
        lean = not buf.meta.has_provenance
        n = int(buf.largest_fitting(int(memory), provenance=not lean)) if memory > 0 else 0
        dropped = self.ipc - n
        if n <= 0:
            self.reset()
            return dropped
        small = _load_buffer_bytes(buf.to_bytes(n, provenance=not lean))
        self.data, self.ipc, self._buffer = small.to_bytes(provenance=not lean), n, small
        return dropped

    # -- context.state --------------------------------------------------------------------
    def to_state(self, state) -> None:
        """Store into a Flower ``RecordDict`` (``context.state``)."""
        import numpy as np
        from flwr.app import Array, ArrayRecord, ConfigRecord

        state[CACHE_META_RECORD] = ConfigRecord({"ipc": int(self.ipc), "digest": self.digest})
        state[CACHE_RECORD] = ArrayRecord(
            {"bytes": Array(np.frombuffer(self.data, dtype=np.uint8).copy())}
        )

    @classmethod
    def from_state(cls, state) -> "PrefixCache":
        if CACHE_META_RECORD not in state or CACHE_RECORD not in state:
            return cls()
        meta = state[CACHE_META_RECORD]
        data = state[CACHE_RECORD]["bytes"].numpy().tobytes()
        return cls(data=data, ipc=int(meta["ipc"]), digest=str(meta["digest"]))


def _append(buf, payload: bytes, have: int, target: int):
    """Grow ``buf`` (holding ``have`` ranks) by the ranks ``have..target-1`` in ``payload``."""
    from .buffer import MultisizeBuffer

    grown = MultisizeBuffer.append_ranks(buf, payload)
    if grown.ipc != target:
        raise FederatedError(
            f"after applying ranks {have}..{target - 1} the cache holds {grown.ipc} ranks; "
            f"expected {target}. The payload does not match the held prefix."
        )
    return grown


# --------------------------------------------------------------------------------------------
# Server side: one budget reply in, one client's transfer out
# --------------------------------------------------------------------------------------------


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
        record_bytes = sum(_config_size(r) if type(r).__name__ == "ConfigRecord" else int(r.count_bytes())
                           for r in records.values())
        held = int(self.buffer.bytes_for(plan.held_after, provenance=False)) if plan.held_after > 0 else 0
        self.ledger.record_transfer(rnd, client, plan, record_bytes=record_bytes, rejected=rejected,
                                    held_bytes=held)
        log.info("round %s client %s: budget %d B, memory %s, holds %d, %s -> %d ranks, %d payload bytes",
                 rnd, client, plan.budget, "unlimited" if plan.memory is None else f"{plan.memory} B",
                 plan.have, plan.kind, plan.held_after, plan.nbytes)
        return plan, payload, records


# --------------------------------------------------------------------------------------------
# Byte ledger (per round, per client) → JSON
# --------------------------------------------------------------------------------------------


@dataclass
class ByteLedger:
    """Exact bytes sent per client per round, plus per-round metrics; saved as JSON."""

    config: dict = field(default_factory=dict)
    rounds: list = field(default_factory=list)

    def _round(self, rnd: int) -> dict:
        for r in self.rounds:
            if r["round"] == rnd:
                return r
        r = {"round": rnd, "clients": {}, "failed": {}, "rejected": {}, "bytes": 0, "memory_bytes": 0,
             "metrics": {}}
        self.rounds.append(r)
        return r

    def record_transfer(self, rnd: int, client: str, plan: TransferPlan, *, record_bytes: int = 0,
                        rejected: str = "", held_bytes: int | None = None) -> None:
        """One client's transfer: bandwidth (``payload_bytes`` of ``budget``) and memory
        (``held_bytes`` of the prefix file it holds after the transfer, of ``memory``)."""
        r = self._round(rnd)
        held = int(held_bytes) if held_bytes is not None else 0
        r["clients"][str(client)] = {
            "kind": plan.kind, "have": plan.have, "target": plan.target, "budget": plan.budget,
            "payload_bytes": plan.nbytes, "record_bytes": int(record_bytes), "reason": plan.reason,
            "memory": plan.memory, "held_ranks": plan.held_after, "held_bytes": held,
        }
        r["bytes"] += int(plan.nbytes)
        r["memory_bytes"] = r.get("memory_bytes", 0) + held
        if rejected:
            r["rejected"][str(client)] = rejected

    def record_failure(self, rnd: int, client: str, stage: str, reason: str) -> None:
        self._round(rnd)["failed"][str(client)] = {"stage": stage, "reason": short_reason(reason)}

    def record_metrics(self, rnd: int, metrics: Mapping[str, Any]) -> None:
        self._round(rnd)["metrics"].update({k: _jsonable(v) for k, v in metrics.items()})

    @property
    def total_bytes(self) -> int:
        return sum(r["bytes"] for r in self.rounds)

    @property
    def cumulative_bytes(self) -> list[int]:
        """Bandwidth: payload bytes sent up to and including each round (rounds in order)."""
        out, total = [], 0
        for r in sorted(self.rounds, key=lambda r: r["round"]):
            total += int(r["bytes"])
            out.append(total)
        return out

    def to_dict(self) -> dict:
        return {"config": self.config, "total_bytes": self.total_bytes,
                "cumulative_bytes": self.cumulative_bytes,
                "rounds": sorted(self.rounds, key=lambda r: r["round"])}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON atomically (temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False))
        os.replace(tmp, path)
        return path


def short_reason(text: Any, limit: int = 300) -> str:
    """The informative part of a (possibly huge, Ray-wrapped) error string: its last message line."""
    text = str(text)
    for marker in ("Message: ", "Error: ", "Exception: "):
        i = text.rfind(marker)
        if i >= 0:
            tail = text[i + len(marker):].strip().strip("'>").strip()
            if tail:
                return tail.splitlines()[0][:limit]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if lines else text)[:limit]


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)
