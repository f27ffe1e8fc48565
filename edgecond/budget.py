"""Budgets: how many ranks of a multisize buffer a client gets (numpy + stdlib only).

- **Byte budgets** (bytes on the wire per round): :func:`ipc_for_bytes` is a pure function of
  the buffer's metadata (:class:`edgecond.buffer.BufferMeta`): the largest ``n`` whose slice
  file (or, for a client that already holds ``held`` ranks, whose delta) fits.
- **Memory budgets** (bytes of device memory for training): :func:`ipc_for_memory` counts the
  decoded float32 training set plus a documented model/batch working set (:func:`memory_for`).
- **Traces** give each client a budget per round (or per experience):
  :class:`ConstantTrace`, :class:`LogNormalTrace` (seeded, deterministic per (client, round))
  and :class:`CsvTrace` (``client,round,bytes`` rows). All have ``.budget(client, round) -> int``;
  :func:`parse_trace` reads one from its text spec (``constant:40kB``, ``lognormal:...``, ``csv:PATH``).

A budget below one rank gives ``n = 0`` with a reason; ``n`` is never negative or above the
buffer's IPC.
"""
from __future__ import annotations

import csv
import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from .errors import BudgetError, ConfigError
from .units import format_bytes, parse_bytes

__all__ = [
    "BudgetDecision",
    "ipc_for_bytes",
    "ipc_for_memory",
    "memory_for",
    "delta_bytes",
    "MemoryModel",
    "ConstantTrace",
    "LogNormalTrace",
    "CsvTrace",
    "parse_trace",
]

Bytes = Union[int, str]


@dataclass(frozen=True)
class BudgetDecision:
    """``n`` ranks (images per class) chosen for a budget; ``bytes`` they cost; ``reason`` in words."""

    n: int
    bytes: int
    reason: str


def _meta(buffer_or_meta: Any):
    """Accept a MultisizeBuffer, a BufferMeta or a path to a buffer file."""
    from .buffer import BufferMeta, read_meta

    if isinstance(buffer_or_meta, BufferMeta):
        return buffer_or_meta
    meta = getattr(buffer_or_meta, "meta", None)
    if isinstance(meta, BufferMeta):
        return meta
    if isinstance(buffer_or_meta, (str, os.PathLike)):
        return read_meta(buffer_or_meta)
    raise ConfigError(
        f"expected a MultisizeBuffer, a BufferMeta or a buffer path, got {type(buffer_or_meta).__name__}."
    )


def _budget(value: Bytes, what: str = "budget") -> int:
    try:
        return parse_bytes(value)
    except BudgetError as exc:
        raise BudgetError(f"{what}: {exc}") from None


def delta_bytes(buffer_or_meta: Any, held_n: int, target_n: int, *, provenance: bool = True) -> int:
    """Exact bytes of the delta that takes a client from ``held_n`` to ``target_n`` ranks.

    ``0`` when ``target_n <= held_n``; the slice size when ``held_n == 0`` (a delta from
    rank 0 is sent as a plain slice file: ``bytes_for(target_n, provenance=provenance)``;
    ``provenance=False`` for lean slices). Deltas never carry provenance.
    """
    meta = _meta(buffer_or_meta)
    for name, v in (("held_n", held_n), ("target_n", target_n)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v <= meta.ipc:
            raise BudgetError(f"{name} must be an integer in 0..{meta.ipc}, got {v!r}.")
    held_n, target_n = int(held_n), int(target_n)
    if target_n <= held_n:
        return 0
    if held_n == 0:
        return meta.bytes_for(target_n, provenance=provenance)
    return meta.delta_bytes(held_n, target_n)


def ipc_for_bytes(buffer_or_meta: Any, max_bytes: Bytes, *, held: int = 0, provenance: bool = True) -> BudgetDecision:
    """Largest ``n`` whose transfer fits ``max_bytes`` (int or ``"40kB"``-style string).

    ``held = 0``: the cost of ``n`` is the ``n``-rank slice file (``bytes_for(n, provenance=...)``;
    ``provenance=False`` when lean slices are shipped, e.g. Flower payloads and deploy bundles).
    ``held > 0``: the client keeps its ``held`` ranks and the cost is the delta
    ``ranks(held, n)``; the decision is never below ``held`` (nothing is taken away).
    Pure function of the metadata.
    """
    meta = _meta(buffer_or_meta)
    budget = _budget(max_bytes)
    if isinstance(held, bool) or not isinstance(held, (int, np.integer)) or not 0 <= held <= meta.ipc:
        raise BudgetError(f"held must be an integer in 0..{meta.ipc} (ranks the client already has), got {held!r}.")
    held = int(held)
    form = "" if provenance else "lean "
    if held == 0:
        n = meta.largest_fitting(budget, provenance=provenance)
        if n == 0:
            need = meta.bytes_for(1, provenance=provenance)
            return BudgetDecision(0, 0, f"budget {format_bytes(budget)} is below one rank "
                                        f"({format_bytes(need)} = {need} bytes for the {form}n=1 slice); nothing is sent")
        cost = meta.bytes_for(n, provenance=provenance)
    else:
        lo, hi = held, meta.ipc  # delta_bytes is increasing in the target
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if delta_bytes(meta, held, mid) <= budget:
                lo = mid
            else:
                hi = mid - 1
        n = lo
        cost = delta_bytes(meta, held, n)
        if n == held:
            if held == meta.ipc:
                return BudgetDecision(n, 0, f"client already holds all {held} ranks; nothing is sent")
            need = delta_bytes(meta, held, held + 1)
            return BudgetDecision(n, 0, f"budget {format_bytes(budget)} is below one more rank "
                                        f"({need} bytes for ranks {held}..{held}); client keeps n={held}")
    if n == meta.ipc:
        why = f"all {n} ranks fit"
    else:
        why = (f"n={n + 1} would need "
               f"{(meta.bytes_for(n + 1, provenance=provenance) if held == 0 else delta_bytes(meta, held, n + 1))} bytes")
    what = f"{form}slice" if held == 0 else f"delta {held}..{n - 1}"
    return BudgetDecision(n, cost, f"{what} of {cost} bytes fits budget {budget} bytes; {why}")


# ----------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class MemoryModel:
    """Documented working-set estimate of training one model on the device.

    ``model_bytes = 4 * num_params * param_copies``: weights, gradients and SGD momentum, plus
    one spare copy (``param_copies = 4``). ``batch_bytes = min(batch_size, M) * 4 * C*H*W *
    activation_factor``: float32 activations kept for backward, as a multiple of the input
    size. The default ``activation_factor = 240`` fits ConvNet-128 (depth 3, instance norm) on
    32x32 inputs: ~2.9 MiB of saved activations per 3x32x32 sample. ``num_params = 320_010`` is
    that ConvNet for 10 classes. Pass your model's numbers for anything else.
    """

    num_params: int = 320_010
    batch_size: int = 256
    activation_factor: float = 240.0
    param_copies: int = 4

    def model_bytes(self) -> int:
        return int(4 * self.num_params * self.param_copies)

    def batch_bytes(self, image_shape: tuple[int, int, int], num_samples: int) -> int:
        per_sample = 4 * int(np.prod(image_shape)) * self.activation_factor
        return int(math.ceil(min(self.batch_size, max(num_samples, 0)) * per_sample))


def memory_for(buffer_or_meta: Any, n: int, *, model: MemoryModel | None = None) -> int:
    """Device memory to train on ``n`` ranks: decoded float32 images + int64 labels (+ float32
    soft labels) + :class:`MemoryModel` working set. 0 for ``n = 0``."""
    meta = _meta(buffer_or_meta)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= meta.ipc:
        raise BudgetError(f"n must be an integer in 0..{meta.ipc}, got {n!r}.")
    if n == 0:
        return 0
    model = model or MemoryModel()
    samples = int(n) * meta.num_classes * meta.factor ** 2
    data = samples * (4 * int(np.prod(meta.image_shape)) + 8)
    if meta.soft_label_dim:
        data += samples * 4 * meta.soft_label_dim
    return data + model.model_bytes() + model.batch_bytes(meta.image_shape, samples)


def ipc_for_memory(buffer_or_meta: Any, max_bytes: Bytes, *, model: MemoryModel | None = None) -> BudgetDecision:
    """Largest ``n`` whose training memory (:func:`memory_for`) fits ``max_bytes``."""
    meta = _meta(buffer_or_meta)
    budget = _budget(max_bytes, "memory budget")
    lo, hi = 0, meta.ipc
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if memory_for(meta, mid, model=model) <= budget:
            lo = mid
        else:
            hi = mid - 1
    if lo == 0:
        need = memory_for(meta, 1, model=model)
        return BudgetDecision(0, 0, f"memory budget {format_bytes(budget)} is below one rank "
                                    f"({format_bytes(need)} to train on n=1); train nothing")
    used = memory_for(meta, lo, model=model)
    why = f"all {lo} ranks fit" if lo == meta.ipc else f"n={lo + 1} would need {memory_for(meta, lo + 1, model=model)} bytes"
    return BudgetDecision(lo, used, f"training on n={lo} needs {used} bytes of {budget}; {why}")


# ----------------------------------------------------------------------------- traces


def _check_round(client: Any, rnd: Any) -> None:
    if isinstance(rnd, bool) or not isinstance(rnd, (int, np.integer)) or rnd < 0:
        raise BudgetError(f"round must be a non-negative integer, got {rnd!r}.")
    if not isinstance(client, (int, np.integer, str)) or isinstance(client, bool):
        raise BudgetError(f"client must be an int or a string id, got {client!r}.")


@dataclass(frozen=True)
class ConstantTrace:
    """Every client gets the same budget every round."""

    bytes: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "bytes", _budget(self.bytes, "ConstantTrace"))

    def budget(self, client: int | str, round: int) -> int:
        _check_round(client, round)
        return self.bytes


def _client_key(client: int | str) -> int:
    """Stable 64-bit key of a client id (not Python's salted hash)."""
    if isinstance(client, (int, np.integer)):
        return int(client) & 0xFFFFFFFFFFFFFFFF
    return int.from_bytes(hashlib.sha256(str(client).encode()).digest()[:8], "little")


@dataclass(frozen=True)
class LogNormalTrace:
    """``budget = median * exp(sigma * z)``, ``z ~ N(0, 1)`` drawn from a generator seeded by
    ``(seed, client, round)``: the same (client, round) always gets the same budget, in any order.
    Optional ``floor``/``ceiling`` clip the result."""

    median: int
    sigma: float = 0.5
    seed: int = 0
    floor: int = 0
    ceiling: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "median", _budget(self.median, "LogNormalTrace median"))
        object.__setattr__(self, "floor", _budget(self.floor, "LogNormalTrace floor"))
        if self.ceiling is not None:
            object.__setattr__(self, "ceiling", _budget(self.ceiling, "LogNormalTrace ceiling"))
            if self.ceiling < self.floor:
                raise BudgetError(f"LogNormalTrace ceiling {self.ceiling} is below floor {self.floor}.")
        if isinstance(self.sigma, bool) or not isinstance(self.sigma, (int, float)) or not (
                math.isfinite(self.sigma) and self.sigma >= 0):
            raise BudgetError(f"LogNormalTrace sigma must be a finite number >= 0, got {self.sigma!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise BudgetError(f"LogNormalTrace seed must be an integer, got {self.seed!r}.")

    def budget(self, client: int | str, round: int) -> int:
        _check_round(client, round)
        rng = np.random.default_rng([int(self.seed) & 0xFFFFFFFFFFFFFFFF, _client_key(client), int(round)])
        z = float(rng.standard_normal())
        value = self.median * math.exp(self.sigma * z)
        value = min(value, 2.0 ** 62)
        out = max(int(value), self.floor)
        if self.ceiling is not None:
            out = min(out, self.ceiling)
        return out


@dataclass
class CsvTrace:
    """Budgets read from a CSV with a header row ``client,round,bytes`` (extra columns ignored).

    ``bytes`` accepts ``40000`` or ``40kB``. A (client, round) pair not in the file gets
    ``default`` (``None``: :class:`BudgetError`); ``hold_last=True`` instead uses that client's
    latest earlier round.
    """

    path: str | os.PathLike
    default: int | str | None = None
    hold_last: bool = False
    _table: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        p = Path(self.path)
        if self.default is not None:
            self.default = _budget(self.default, "CsvTrace default")
        try:
            text = p.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise BudgetError(f"budget trace CSV {p} does not exist; expected a file with columns client,round,bytes.") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise BudgetError(f"cannot read budget trace CSV {p}: {exc}.") from None
        rows = csv.reader(text.splitlines())
        header = next(rows, None)
        if header is None:
            raise BudgetError(f"budget trace CSV {p} is empty; expected a header row client,round,bytes.")
        cols = [h.strip().lower() for h in header]
        missing = [c for c in ("client", "round", "bytes") if c not in cols]
        if missing:
            raise BudgetError(f"budget trace CSV {p}: header {header} lacks columns {missing}; "
                              "expected client,round,bytes.")
        ic, ir, ib = cols.index("client"), cols.index("round"), cols.index("bytes")
        table: dict[tuple[str, int], int] = {}
        for lineno, row in enumerate(rows, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) < len(cols):
                raise BudgetError(f"budget trace CSV {p} line {lineno}: {len(row)} fields {row}, expected {len(cols)} "
                                  f"({','.join(cols)}).")
            client = row[ic].strip()
            if not client:
                raise BudgetError(f"budget trace CSV {p} line {lineno}: empty client id.")
            try:
                rnd = int(row[ir].strip())
                if rnd < 0:
                    raise ValueError
            except ValueError:
                raise BudgetError(f"budget trace CSV {p} line {lineno}: round {row[ir]!r} is not a "
                                  "non-negative integer.") from None
            try:
                b = parse_bytes(row[ib].strip())
            except BudgetError as exc:
                raise BudgetError(f"budget trace CSV {p} line {lineno}: {exc}") from None
            key = (client, rnd)
            if key in table:
                raise BudgetError(f"budget trace CSV {p} line {lineno}: duplicate row for client {client!r} round {rnd}.")
            table[key] = b
        if not table:
            raise BudgetError(f"budget trace CSV {p} has no data rows; expected rows client,round,bytes.")
        self._table = table

    def budget(self, client: int | str, round: int) -> int:
        _check_round(client, round)
        key = (str(client), int(round))
        if key in self._table:
            return self._table[key]
        if self.hold_last:
            earlier = [r for (c, r) in self._table if c == key[0] and r < key[1]]
            if earlier:
                return self._table[(key[0], max(earlier))]
        if self.default is not None:
            return int(self.default)
        raise BudgetError(
            f"budget trace CSV {self.path} has no row for client {client!r} round {round}; add it, or pass "
            "default=... or hold_last=True."
        )

    def clients(self) -> list[str]:
        return sorted({c for c, _ in self._table})


def parse_trace(spec: str):
    """Parse a budget-trace spec into a trace (what Flower's ``budget-trace`` and Avalanche runs take).

    ``constant:40kB`` | ``lognormal:median=40kB,sigma=0.5,seed=0`` | ``csv:PATH``. The trace
    answers ``trace.budget(client, round) -> int`` bytes.
    """
    text = str(spec).strip()
    kind, _, arg = text.partition(":")
    kind = kind.strip().lower()
    try:
        if kind == "constant":
            return ConstantTrace(int(parse_bytes(arg.strip())))
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
            return LogNormalTrace(
                median=int(parse_bytes(params["median"])),
                sigma=float(params.get("sigma", 0.5)),
                seed=int(params.get("seed", 0)),
                floor=int(parse_bytes(params.get("floor", "0"))),
                ceiling=int(parse_bytes(params["ceiling"])) if "ceiling" in params else None,
            )
        if kind == "csv":
            if not arg.strip():
                raise ValueError("empty path")
            return CsvTrace(arg.strip())
    except BudgetError as err:
        raise BudgetError(f"budget-trace {spec!r}: {err}") from None
    except (TypeError, ValueError):
        pass
    raise BudgetError(
        f"budget-trace {spec!r} is not understood; expected 'constant:SIZE', "
        "'lognormal:median=SIZE,sigma=FLOAT,seed=INT[,floor=SIZE,ceiling=SIZE]' or 'csv:PATH' (SIZE like 40kB or 1.5MB). "
        "Fix budget-trace in [tool.flwr.app.config] or the node's --node-config."
    )
