"""Shipping a multisize buffer: budgets in, byte-exact prefix payloads out (no torch, no Flower).

What to send whom (:func:`plan_transfer`), the payload bytes (:func:`build_payload`), the
client's prefix cache (:class:`PrefixCache`) and the byte ledger (:class:`ByteLedger`). The
Flower apps in ``servers/`` and ``clients/`` carry these through Flower records with
:mod:`edgecond.apps.flower_records`; budget traces are :func:`edgecond.budget.parse_trace`;
``benchmarks/federated.py`` drives the same functions in-process.

One round is drawn in :mod:`edgecond.apps.flower_records`.

Accounting counts *buffer bytes*: ``bytes_for(target)`` for a first transfer (a complete, valid
prefix file) and ``len(ranks(have, target))`` for a delta. The payload never exceeds the budget.
Flower's own framing of the record (a few hundred bytes of object headers) is reported separately
as ``record_bytes``.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import FederatedError

__all__ = [
    "buffer_identity",
    "BudgetReply",
    "TransferPlan",
    "plan_transfer",
    "build_payload",
    "validate_transfer",
    "PrefixCache",
    "ByteLedger",
    "short_reason",
]


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


@dataclass(frozen=True)
class BudgetReply:
    """A validated budget reply: the budget in bytes and what the client already holds."""

    budget: int
    have: int = 0
    digest: str = ""
    #: device memory for the held prefix in bytes; None = not limited
    memory: int | None = None


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

    # -- context.state (Flower records: edgecond.apps.flower_records) ---------------------------
    def to_state(self, state) -> None:
        """Store into a Flower ``RecordDict`` (``context.state``)."""
        from .apps.flower_records import cache_to_state

        cache_to_state(self, state)

    @classmethod
    def from_state(cls, state) -> "PrefixCache":
        """The cache stored by :meth:`to_state` (empty when ``state`` holds none)."""
        from .apps.flower_records import cache_from_state

        return cache_from_state(state, cls)


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
