"""Tensor specs, the canonical header writer and :class:`BufferMeta` (what a header says)."""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import ConfigError
from .digest import _essential, _seed
from .spec import (_ST_TO_NP, DELTA_FORMAT, DIGEST_CHARS, FORMAT, FORMAT_VERSION, PROVENANCE_KEYS,
                   SDC_FORMATION)
from .text import _b64, _check_provenance_mode, _is_int


@dataclass(frozen=True)
class TensorSpec:
    """One rank-major tensor: safetensors dtype code and the shape of ONE rank (``shape[1:]``)."""

    name: str
    dtype: str  # "U8" | "F16" | "F32"
    shape: tuple[int, ...]

    @property
    def itemsize(self) -> int:
        return _ST_TO_NP[self.dtype].itemsize

    @property
    def rank_bytes(self) -> int:
        """Bytes of one rank of this tensor (all classes)."""
        return math.prod(self.shape) * self.itemsize  # exact Python ints: no overflow

    def np_dtype(self) -> np.dtype:
        return _ST_TO_NP[self.dtype]


def _data_order(specs: Iterable[TensorSpec]) -> tuple[TensorSpec, ...]:
    """Spec §2: itemsize descending, then name."""
    return tuple(sorted(specs, key=lambda t: (-t.itemsize, t.name)))


def _tensor_entries(tensors: Sequence[TensorSpec], n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    off = 0
    for t in tensors:
        size = n * t.rank_bytes
        out[t.name] = {"dtype": t.dtype, "shape": [n, *t.shape], "data_offsets": [off, off + size]}
        off += size
    return out


def _encode_header(metadata: Mapping[str, str], tensors: Sequence[TensorSpec], n: int) -> bytes:
    """The canonical 8-byte length + padded JSON header of an ``n``-rank file."""
    obj: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    obj.update(_tensor_entries(tensors, n))
    js = json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    js += b" " * ((-len(js)) % 8)
    return struct.pack("<Q", len(js)) + js


def _header_length_fn(metadata: Mapping[str, str], tensors: Sequence[TensorSpec]):
    """``n -> len(_encode_header(metadata + digest of n entries, tensors, n))`` in O(1) per ``n``.

    The metadata JSON is measured once with an empty digest; the digest adds exactly
    ``DIGEST_CHARS`` ASCII characters per rank and the tensor entries are measured per ``n``
    (this keeps ``edgecond info`` and budget searches linear in the number of ranks).
    """
    md = dict(sorted({**metadata, "digest": ""}.items()))
    base = len(json.dumps({"__metadata__": md}, separators=(",", ":"), ensure_ascii=True)) - 1  # without "}"

    fixed = [(f'"{t.name}":{{"dtype":"{t.dtype}","shape":[', "".join(f",{s}" for s in t.shape) + '],"data_offsets":[',
              t.rank_bytes) for t in tensors]  # names and dtypes are plain ASCII: json.dumps spells them so

    def length(n: int) -> int:
        tens, off = 1 + len(fixed), 0  # "," before each entry, then "}"
        for head, mid, rank_bytes in fixed:
            end = off + n * rank_bytes
            tens += len(head) + len(str(n)) + len(mid) + len(str(off)) + 1 + len(str(end)) + 2  # ",", "]}"
            off = end
        js = base + (tens if tensors else 1) + DIGEST_CHARS * n
        return 8 + js + (-js) % 8

    return length



@dataclass(frozen=True)
class BufferMeta:
    """Everything the header says about a buffer (spec §3), parsed and validated.

    ``ipc`` is the number of ranks of *this* file/view; ``digests`` the chain entries of its
    ranks (base64url, 22 characters each). ``bytes_for(n)`` is a pure function of this object
    (budgets use it). ``method``, ``config``, ``accuracy`` and ``extra`` are *provenance*: a lean
    slice (``provenance=False``) has none of them (``method == ""``, empty dicts).
    """

    dataset: str
    class_names: tuple[str, ...]
    labels: tuple[int, ...]
    image_shape: tuple[int, int, int]
    dtype: str  # numpy name of the storage dtype: uint8 | float16 | float32
    ipc: int
    factor: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    method: str
    config: dict = field(default_factory=dict)
    accuracy: dict = field(default_factory=dict)  # {n: {"mean": a, "std": s, ...}}
    soft: dict | None = None  # {"kind": "logits" | "probs", ...} when soft labels are stored
    extra: dict = field(default_factory=dict)
    space: str = "pixel"
    format: str = FORMAT
    digests: tuple[str, ...] = field(default=(), repr=False)
    tensors: tuple[TensorSpec, ...] = field(default=(), repr=False)
    raw: Mapping[str, str] = field(default_factory=dict, repr=False)  # metadata minus digest
    provenance_digest: str = ""  # metadata 'prov': digest of the provenance keys ("" in lean files)
    #: the training recipe (``edgecond.recipe.Recipe``, essential key ``recipe``); None when absent
    recipe: Any = None
    formation: str = ""  # "" = images (spec §5); "sdc/1" = slimmable components (spec §5.1)

    @property
    def is_sdc(self) -> bool:
        """True for a slimmable (SDC) buffer: ranks are components, decoded by :func:`decode_sdc_numpy`."""
        return self.formation == SDC_FORMATION

    @property
    def decoded_per_rank(self) -> int:
        """Training images one rank of one class decodes to (``factor²`` for every formation kind)."""
        return self.factor * self.factor

    @property
    def has_provenance(self) -> bool:
        """True when the file carries provenance keys (method/config/accuracy/extra); False when lean."""
        return any(k in self.raw for k in PROVENANCE_KEYS)

    @property
    def num_classes(self) -> int:
        """``K``: the number of class slots stored."""
        return len(self.labels)

    @property
    def version(self) -> int:
        return FORMAT_VERSION

    @property
    def soft_label_dim(self) -> int | None:
        for t in self.tensors:
            if t.name == "soft_labels":
                return t.shape[-1]
        return None

    @property
    def rank_bytes(self) -> int:
        """Bytes of one rank of every tensor (all classes): the slope of :meth:`bytes_for`."""
        return sum(t.rank_bytes for t in self.tensors)

    @property
    def digest(self) -> str:
        """The last chain entry (base64url): identifies this exact ``ipc``-rank content.

        Provenance does not enter the chain: a lean slice and the full slice of the same size
        have the same digest.
        """
        return self.digests[-1] if self.digests else ""

    def header(self, n: int | None = None, *, provenance: bool = True) -> bytes:
        """Canonical header (length prefix + padded JSON) of the ``n``-rank slice.

        ``provenance=False``: the lean form (essential keys only, spec §3).
        """
        n = self.ipc if n is None else self._check_n(n)
        md = dict(self.raw) if _check_provenance_mode(provenance) else _essential(self.raw)
        md["digest"] = "".join(self.digests[:n])
        return _encode_header(md, self.tensors, n)

    def header_bytes(self, n: int | None = None, *, provenance: bool = True) -> int:
        """``len(header(n, provenance=...))`` without building the header (O(metadata), not O(n))."""
        n = self.ipc if n is None else self._check_n(n)
        md = dict(self.raw) if _check_provenance_mode(provenance) else _essential(self.raw)
        return _header_length_fn(md, self.tensors)(n)

    def header_sizes(self, *, provenance: bool = True) -> list[int]:
        """Header length of every slice ``n = 1..ipc`` in one linear pass (what ``edgecond info`` lists)."""
        md = dict(self.raw) if _check_provenance_mode(provenance) else _essential(self.raw)
        length = _header_length_fn(md, self.tensors)
        return [length(n) for n in range(1, self.ipc + 1)]

    def decode_bytes(self, n: int | None = None, *, decode: bool = True) -> int:
        """Peak bytes :meth:`MultisizeBuffer.training_arrays` allocates for ``n`` ranks (an upper estimate).

        float32 copies of the stored images and, with ``decode=True`` and ``factor > 1``, the
        ``factor²`` decoded images plus the float64 intermediates of the bilinear decode.
        """
        n = self.ipc if n is None else self._check_n(n)
        c, h, w = self.image_shape
        pixels = n * self.num_classes * c * h * w  # stored pixels (exact Python ints)
        if decode and self.factor > 1:
            return pixels * (4 + 8 + 12 * self.factor ** 2)
        return pixels * 8

    def bytes_for(self, n: int, *, provenance: bool = True) -> int:
        """Exact file size of the ``n``-rank slice; 0 for ``n = 0`` (nothing is sent).

        ``provenance=False``: size of the lean slice (what ``slice_to(..., provenance=False)`` writes).
        """
        if _is_int(n) and n == 0:
            _check_provenance_mode(provenance)
            return 0
        n = self._check_n(n)
        return self.header_bytes(n, provenance=provenance) + n * self.rank_bytes

    def delta_header(self, a: int, b: int) -> bytes:
        """Canonical header of the delta payload carrying ranks ``a..b-1`` (spec §6)."""
        if not (_is_int(a) and _is_int(b) and 0 <= a < b <= self.ipc):
            raise ConfigError(f"delta ranks must satisfy 0 <= a < b <= {self.ipc}; got a={a!r}, b={b!r}.")
        md = _essential(self.raw)  # deltas carry no provenance (spec §6)
        md["format"] = DELTA_FORMAT
        md["start"] = str(a)
        md["anchor"] = self.digests[a - 1] if a > 0 else _b64(_seed(self.raw, self.tensors))
        md["digest"] = "".join(self.digests[a:b])
        return _encode_header(md, self.tensors, b - a)

    def delta_bytes(self, a: int, b: int) -> int:
        """Exact size of ``ranks(a, b)``; 0 when ``b <= a``."""
        if _is_int(a) and _is_int(b) and b <= a:
            return 0
        return len(self.delta_header(a, b)) + (b - a) * self.rank_bytes

    def largest_fitting(self, max_bytes: int, *, provenance: bool = True) -> int:
        """Largest ``n`` with ``bytes_for(n, provenance=...) <= max_bytes`` (0 when not even one rank fits)."""
        if not _is_int(max_bytes) and not isinstance(max_bytes, np.integer):
            raise ConfigError(f"max_bytes must be an integer number of bytes, got {max_bytes!r}.")
        _check_provenance_mode(provenance)
        max_bytes = int(max_bytes)
        lo, hi = 0, self.ipc  # invariant: bytes_for(lo) <= max_bytes (or lo == 0)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.bytes_for(mid, provenance=provenance) <= max_bytes:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _check_n(self, n: Any) -> int:
        if not (_is_int(n) or isinstance(n, np.integer)) or not 1 <= int(n) <= self.ipc:
            raise ConfigError(
                f"n must be an integer in 1..{self.ipc} (the buffer's images per class), got {n!r}."
            )
        return int(n)

    def with_ipc(self, n: int) -> "BufferMeta":
        return replace(self, ipc=n, digests=self.digests[:n])

    def to_dict(self) -> dict:
        """JSON-friendly summary (what ``edgecond info --json`` prints)."""
        return {
            "format": self.format,
            "dataset": self.dataset,
            "method": self.method,
            "ipc": self.ipc,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "labels": list(self.labels),
            "image_shape": list(self.image_shape),
            "dtype": self.dtype,
            "factor": self.factor,
            "space": self.space,
            "mean": list(self.mean),
            "std": list(self.std),
            "config": self.config,
            "accuracy": {str(k): v for k, v in sorted(self.accuracy.items())},
            "soft": self.soft,
            "soft_label_dim": self.soft_label_dim,
            "extra": self.extra,
            "digest": self.digest,
            "rank_bytes": self.rank_bytes,
            "formation": self.formation or "images",
            "decoded_per_rank": self.decoded_per_rank,
            "has_provenance": self.has_provenance,
            "provenance_digest": self.provenance_digest,
            "recipe": self.recipe.to_json() if self.recipe is not None else None,
        }


# ----------------------------------------------------------------------------- parsing
