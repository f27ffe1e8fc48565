"""The multisize buffer: one safetensors file whose first ``n`` ranks are a training set.

The byte-level specification is ``docs/buffer-format.md`` (format ``edgecond/1``); this module
implements it with numpy + safetensors' file format + the standard library only (no torch, so
phones and torch-free clients can use it).

- images are stored **rank-major** ``[N, K, C, H, W]``: ranks ``0..n-1`` of every class are one
  contiguous prefix of the data, so slicing to ``n`` ranks copies byte ranges and decodes
  nothing;
- a per-rank SHA-256 chain (metadata ``digest``, 128-bit entries) covers the essential metadata
  and every rank: verifying a prefix costs only that prefix, slicing hashes nothing new, and a
  delta ``ranks(a, b)`` is verified by continuing the chain;
- provenance (method, config, accuracy table, extra) has its own digest ``prov`` and can be
  dropped: ``slice_to(dest, n, provenance=False)`` writes a *lean* slice (same rank digests),
  the form to ship to clients (Flower payloads, deploy bundles);
- every malformed input raises :class:`~edgecond.errors.BufferFormatError`.

Typical use::

    buf = MultisizeBuffer.from_class_major(images, class_names=names, dataset="cifar10",
                                           mean=mean, std=std, method="mdc", dtype="uint8")
    buf.save("cifar10-mdc.safetensors")
    buf = MultisizeBuffer.load("cifar10-mdc.safetensors")       # memory-mapped
    n = buf.largest_fitting(200_000)                            # budget in bytes -> ranks
    buf.slice_to("client.safetensors", n)                       # exactly buf.bytes_for(n) bytes
    n = buf.largest_fitting(200_000, provenance=False)          # ... the same for lean slices
    buf.slice_to("lean.safetensors", n, provenance=False)       # buf.bytes_for(n, provenance=False)
    x, y = buf.training_arrays(n)                               # float32 pixel space, int64
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import re
import struct
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Iterable, Mapping, Sequence, Union

import numpy as np

from .errors import BufferFormatError, ConfigError
from .errors import EdgecondError as EdgecondErrorBase
from .formation import SDC_KIND, SDC_VERSION, check_factor, decode_numpy, decode_sdc_numpy

__all__ = [
    "FORMAT",
    "DELTA_FORMAT",
    "MAX_HEADER_BYTES",
    "MAX_CLASSES",
    "MAX_CHANNELS",
    "MAX_SIDE",
    "MAX_FACTOR",
    "MAX_SOFT_DIM",
    "DEFAULT_DECODE_BUDGET",
    "decode_budget",
    "PROVENANCE_KEYS",
    "TensorSpec",
    "BufferMeta",
    "MultisizeBuffer",
    "read_meta",
    "slice_file",
    "encode_images",
    "decode_images",
    "SDC_FORMATION",
]

FORMAT_NAME = "edgecond"
FORMAT_VERSION = 1
FORMAT = f"{FORMAT_NAME}/{FORMAT_VERSION}"
DELTA_FORMAT = f"{FORMAT_NAME}-delta/{FORMAT_VERSION}"
MAX_HEADER_BYTES = 1 << 20  # 1 MiB
DIGEST_BYTES = 16  # chain entries: SHA-256 truncated to 128 bits
DIGEST_CHARS = 22  # ... written as unpadded base64url (spec §4)
MAX_LABEL = 2**31  # class ids are in [0, 2**31)
_B64 = re.compile(r"[A-Za-z0-9_-]{22}")
# Hard caps on what a header may declare (spec §3 "Caps"): checked before anything proportional to
# them is allocated or looped over. The rank count needs no cap of its own: its digest list
# (22 characters per rank) must fit the 1 MiB header, so N <= 47,662.
MAX_CLASSES = 1 << 17  # K: class slots (ImageNet-21k has 21,841)
MAX_CHANNELS = 16  # C
MAX_SIDE = 4096  # H and W, pixels
MAX_FACTOR = 8  # formation factor f (each stored image decodes to f² images)
MAX_SOFT_DIM = 1 << 17  # L: width of a soft label
# Decoding (training_arrays, images_class_major, soft_targets) refuses to allocate more than this
# unless the caller passes max_bytes=... or sets EDGECOND_DECODE_BUDGET (e.g. "8GiB").
DEFAULT_DECODE_BUDGET = 2 * 1024**3  # 2 GiB
DECODE_BUDGET_ENV = "EDGECOND_DECODE_BUDGET"

_ST_TO_NP = {"U8": np.dtype("uint8"), "F16": np.dtype("<f2"), "F32": np.dtype("<f4")}
_NP_TO_ST = {"uint8": "U8", "float16": "F16", "float32": "F32"}
_ST_NAMES = {v: k for k, v in _NP_TO_ST.items()}
_TENSOR_DTYPES = {"images": ("U8", "F16", "F32"), "soft_labels": ("F16", "F32"),
                  "coefficients": ("F16", "F32")}  # coefficients: formation sdc/1 only (spec §5.1)
# spec §3: essential keys (covered by the digest chain's seed; every slice keeps them) ...
_REQUIRED_KEYS = ("classes", "dataset", "digest", "format", "mean", "std")
_OPTIONAL_KEYS = ("factor", "formation", "labels", "recipe", "soft", "space")  # written only when not the default
SDC_FORMATION = f"{SDC_KIND}/{SDC_VERSION}"  # metadata 'formation' of slimmable (SDC) buffers
MAX_SDC_COEFFICIENTS = 1 << 16  # cap on M, the coefficients per rank and class (spec §5.1)
# ... provenance keys (descriptive; covered by PROV_KEY; dropped by provenance=False)
PROVENANCE_KEYS = ("accuracy", "config", "extra", "method")
PROV_KEY = "prov"
_DELTA_KEYS = ("anchor", "start")
_PROV_TAG = FORMAT.encode() + b" provenance\0"
_SOFT_KINDS = ("logits", "probs")

PathOrStream = Union[str, "os.PathLike[str]", IO[bytes]]


# ----------------------------------------------------------------------------- small helpers


def _err(src: str, msg: str) -> BufferFormatError:
    return BufferFormatError(f"{src}: {msg}")


def _canonical(obj: Any) -> str:
    """Compact, sorted, ASCII JSON (the one spelling edgecond writes)."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=True, allow_nan=False)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _loads(text: str | bytes) -> Any:
    """Strict JSON: no NaN/Infinity, no duplicate keys. Raises ValueError (also for deep nesting)."""
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


def _b64(d: bytes) -> str:
    """Unpadded base64url (22 characters for a 16-byte digest)."""
    return base64.urlsafe_b64encode(d).rstrip(b"=").decode("ascii")


def _unb64(s: str) -> bytes | None:
    """Inverse of :func:`_b64` for one 22-character digest; None unless ``s`` is its canonical spelling."""
    if not _B64.fullmatch(s):
        return None
    d = base64.urlsafe_b64decode(s + "==")
    return d if _b64(d) == s else None


def _num_text(v: float | int) -> str:
    return json.dumps(v, allow_nan=False)


def _csv(vals: Iterable[Any]) -> str:
    """Comma-separated JSON numbers: the compact spelling of number lists (spec §3)."""
    return ",".join(_num_text(v) for v in vals)


def _names_text(names: Sequence[str]) -> str:
    """Class names: comma-separated when unambiguous, else a compact JSON array (spec §3)."""
    if all(n and "," not in n for n in names) and not names[0].startswith("["):
        return ",".join(names)
    return _canonical(list(names))


def _parse_list(text: str) -> list | None:
    """A JSON array, or comma-separated items each parsed as JSON (numbers); None if invalid."""
    try:
        if text.startswith("["):
            val = _loads(text)
            return val if isinstance(val, list) else None
        return [_loads(item) for item in text.split(",")]
    except ValueError:
        return None


def _parse_names(text: str) -> list | None:
    if text.startswith("["):
        try:
            val = _loads(text)
        except ValueError:
            return None
        return val if isinstance(val, list) else None
    return text.split(",")


def _essential(md: Mapping[str, str]) -> dict[str, str]:
    """The metadata the chain seed covers: everything but the digest, provenance and delta keys."""
    drop = set(PROVENANCE_KEYS) | {PROV_KEY, "digest"} | set(_DELTA_KEYS)
    return {k: v for k, v in md.items() if k not in drop}


def _provenance(md: Mapping[str, str]) -> dict[str, str]:
    return {k: md[k] for k in PROVENANCE_KEYS if k in md}


def _prov_digest(seed: bytes, md: Mapping[str, str]) -> str:
    """Spec §4: digest of the provenance keys, bound to the chain seed (the essentials)."""
    h = hashlib.sha256(_PROV_TAG + seed + _canonical(_provenance(md)).encode())
    return _b64(h.digest()[:DIGEST_BYTES])


def _check_provenance_mode(provenance: Any) -> bool:
    if not isinstance(provenance, (bool, np.bool_)):
        raise ConfigError(f"provenance must be True (keep method/config/accuracy/extra) or False (lean: "
                          f"essential metadata only), got {provenance!r}.")
    return bool(provenance)


def _short_float(x: float) -> float:
    """Shortest decimal that round-trips at float32 (keeps mean/std compact in the header)."""
    return float(str(np.float32(x)))


def _jsonable(obj: Any, what: str) -> Any:
    """Convert numpy scalars/arrays, tuples and paths to JSON types; reject the rest."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        if not math.isfinite(float(obj)):
            raise ConfigError(f"{what} contains a non-finite number {obj!r}; JSON metadata needs finite numbers.")
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist(), what)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                if isinstance(k, (int, np.integer)):
                    k = str(int(k))
                else:
                    raise ConfigError(f"{what} has a non-string key {k!r}; use string keys.")
            out[k] = _jsonable(v, what)
        return out
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, what) for v in obj]
    raise ConfigError(
        f"{what} contains {type(obj).__name__} value {obj!r} that cannot be stored as JSON; "
        "pass plain numbers, strings, lists and dicts."
    )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite_number(v: Any) -> bool:
    """A JSON number that is finite as a float (JSON allows 1e400 and 400-digit integers)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:
        return False


# ----------------------------------------------------------------------------- value conversion


def encode_images(x: Any, dtype: str) -> np.ndarray:
    """Convert images (float pixel space or uint8) to the storage dtype (spec §5).

    float input: NaN/inf raise :class:`ConfigError`, values are clipped to ``[0, 1]``;
    ``uint8`` storage is ``clip(rint(x*255), 0, 255)``; ``float16`` rounds to nearest even.
    uint8 input is stored as is for ``uint8`` and divided by 255 otherwise.
    """
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    name = _storage_name(dtype)
    if x.dtype == np.uint8:
        if name == "uint8":
            return x
        x = x.astype(np.float32) / np.float32(255.0)
    elif not np.issubdtype(x.dtype, np.floating):
        raise ConfigError(
            f"images have dtype {x.dtype}; expected float pixel values in [0, 1] or uint8 0..255."
        )
    if x.size and not np.isfinite(x).all():
        raise ConfigError("images contain NaN or infinite values; a buffer stores finite pixels in [0, 1].")
    x = np.clip(x, 0.0, 1.0)
    if name == "uint8":
        return np.clip(np.rint(x.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return x.astype(_ST_TO_NP[_NP_TO_ST[name]])


def decode_images(q: np.ndarray, *, src: str = "buffer") -> np.ndarray:
    """Stored images -> float32 pixel space; float storage is checked to be finite in ``[0, 1]``."""
    if q.dtype == np.uint8:
        return q.astype(np.float32) / np.float32(255.0)
    x = q.astype(np.float32)
    if x.size and not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
        bad = int(np.count_nonzero(~(np.isfinite(x) & (x >= 0) & (x <= 1))))
        raise _err(src, f"{bad} stored pixel values are NaN/inf or outside [0, 1] (expected pixel space "
                        "[0, 1]); the file was not written by a conforming writer.")
    return x


def _storage_name(dtype: Any) -> str:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in _NP_TO_ST:
        raise ConfigError(f"storage dtype {dtype!r} is not supported; expected one of uint8, float16, float32.")
    return name


# ----------------------------------------------------------------------------- metadata


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


def _seed(metadata: Mapping[str, str], tensors: Sequence[TensorSpec]) -> bytes:
    """Spec §4: chain seed (16 bytes) over the essential metadata and the tensor specs.

    Provenance keys, ``prov``, ``digest`` and delta keys are not covered, so dropping
    provenance (or adding an accuracy table) leaves every rank digest unchanged.
    """
    md = _essential(metadata)
    tl = [[t.name, t.dtype, list(t.shape)] for t in tensors]
    full = hashlib.sha256(FORMAT.encode() + b"\0" + _canonical({"metadata": md, "tensors": tl}).encode())
    return full.digest()[:DIGEST_BYTES]


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


@dataclass
class _Layout:
    meta: BufferMeta
    n: int
    data_start: int  # absolute offset of the data section
    begins: dict[str, int]  # absolute offset of each tensor
    seed: bytes
    chain: list[bytes]  # n chain entries (raw digests)
    start: int = 0  # delta only
    anchor: bytes = b""  # delta only


def _sdc_coefficients_spec(src: str, raw: tuple, n: int, k: int) -> "TensorSpec":
    """Spec §5.1: ``coefficients`` is ``[N, K, M]`` with ``N <= M <= MAX_SDC_COEFFICIENTS``."""
    dt, shape, _ = raw
    if len(shape) != 3 or shape[0] != n or shape[1] != k or not n <= shape[2] <= MAX_SDC_COEFFICIENTS:
        raise _err(src, f"'coefficients' has shape {shape!r:.80}; expected [N={n}, K={k}, M] with "
                        f"{n} <= M <= {MAX_SDC_COEFFICIENTS} (one weight per decoded row, formation sdc/1).")
    return TensorSpec("coefficients", dt, tuple(shape[1:]))


def _check_formation(src: str, md: Mapping[str, str], raw_specs: Mapping[str, tuple]) -> str:
    """Spec §5.1: the optional ``formation`` key; ``sdc/1`` iff a ``coefficients`` tensor is present."""
    formation = md.get("formation", "")
    if "formation" in md and formation != SDC_FORMATION:
        raise _err(src, f"unsupported formation {formation!r:.40}; this edgecond reads {SDC_FORMATION!r} "
                        "or no 'formation' key (plain images). Upgrade edgecond or re-create the buffer.")
    if ("coefficients" in raw_specs) != (formation == SDC_FORMATION):
        raise _err(src, f"the 'coefficients' tensor and formation {SDC_FORMATION!r} must be present together; "
                        f"found tensor={'coefficients' in raw_specs}, formation={formation or None!r}.")
    if formation and "soft_labels" in raw_specs:
        raise _err(src, f"formation {SDC_FORMATION!r} does not define soft labels; found a 'soft_labels' tensor.")
    return formation


def _sdc_decode(src: str, codes: np.ndarray, coefficients: np.ndarray, factor: int) -> np.ndarray:
    """Checked SDC decode (spec §5.1): codes must be valid images, coefficients finite."""
    codes = decode_images(codes, src=src)
    coef = coefficients.astype(np.float32)
    if not np.isfinite(coef).all():
        raise _err(src, "SDC coefficients contain NaN or infinite values; expected finite numbers. The file is damaged.")
    return decode_sdc_numpy(codes, coef, factor)


def _read_prefix(src: str, first8: bytes, total_size: int) -> int:
    if total_size == 0:
        raise _err(src, "the file is empty (0 bytes); expected a safetensors file of at least 8 bytes.")
    if len(first8) < 8 or total_size < 8:
        raise _err(src, f"truncated: {total_size} bytes, expected at least 8 (header length) + header + data.")
    (hlen,) = struct.unpack("<Q", first8[:8])
    if hlen > MAX_HEADER_BYTES:
        raise _err(src, f"header length {hlen} exceeds the cap of {MAX_HEADER_BYTES} bytes (1 MiB); the file is "
                        "damaged or not an edgecond buffer.")
    if hlen > total_size - 8:
        raise _err(src, f"truncated: header length {hlen} needs at least {8 + hlen} bytes, file has {total_size}.")
    if hlen % 8:
        raise _err(src, f"header length {hlen} is not a multiple of 8 as edgecond/1 requires; the file is "
                        "damaged or was rewritten by another tool.")
    return hlen


def _parse_header(src: str, js: bytes, hlen: int, total_size: int, *, kind: str = "buffer") -> _Layout:
    """Validate a header (spec §1-§4) against the file size; returns the layout. ``kind``: buffer|delta."""
    try:
        return _parse_header_checked(src, js, hlen, total_size, kind=kind)
    except RecursionError:
        raise _err(src, "the header nests JSON values too deeply; the file is damaged.") from None


def _parse_header_checked(src: str, js: bytes, hlen: int, total_size: int, *, kind: str) -> _Layout:
    if not js[:1] == b"{":
        raise _err(src, f"not a safetensors/edgecond file: the header must start with '{{', found {js[:1]!r}.")
    try:
        text = js.decode("utf-8")
        header = _loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _err(src, f"the header is not valid UTF-8 JSON ({exc}); the file is damaged.") from None
    if not isinstance(header, dict):
        raise _err(src, "the header is not a JSON object; the file is damaged.")
    md = header.pop("__metadata__", None)
    want_format = FORMAT if kind == "buffer" else DELTA_FORMAT
    if not isinstance(md, dict) or "format" not in md:
        raise _err(src, f"not an edgecond buffer: no __metadata__['format'] (expected {want_format!r}); "
                        "this looks like a plain safetensors file.")
    fmt = md["format"]
    if not isinstance(fmt, str):
        raise _err(src, f"__metadata__['format'] must be a string, found {type(fmt).__name__}.")
    if fmt != want_format:
        name, _, ver = fmt.partition("/")
        want_name = want_format.partition("/")[0]
        if name == want_name:
            raise _err(src, f"unsupported format version {ver!r} ({fmt!r}); this edgecond reads {want_format!r}. "
                            "Upgrade edgecond or re-create the buffer.")
        raise _err(src, f"not an edgecond {kind}: format is {fmt!r}, expected {want_format!r}.")
    for k, v in md.items():
        if not isinstance(v, str):
            raise _err(src, f"__metadata__[{k!r}] must be a string, found {type(v).__name__}.")
    allowed = set(_REQUIRED_KEYS) | set(_OPTIONAL_KEYS) | (
        set(_DELTA_KEYS) if kind == "delta" else set(PROVENANCE_KEYS) | {PROV_KEY})
    unknown = sorted(set(md) - allowed)
    if unknown:
        raise _err(src, f"unknown metadata keys {unknown}; expected only {sorted(allowed)}.")
    need = set(_REQUIRED_KEYS) | (set(_DELTA_KEYS) if kind == "delta" else set())
    missing = sorted(need - set(md))
    if missing:
        raise _err(src, f"missing metadata keys {missing}; the file is damaged or not an edgecond {kind}.")

    # ---- tensors
    unknown_t = sorted(set(header) - set(_TENSOR_DTYPES))
    if unknown_t:
        raise _err(src, f"unknown tensors {unknown_t}; expected 'images' and optionally 'soft_labels' "
                        "(or 'coefficients' with formation sdc/1).")
    if "images" not in header:
        raise _err(src, "no 'images' tensor; expected an 'images' tensor of shape [N, K, C, H, W].")
    raw_specs = {}
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise _err(src, f"tensor {name!r} must be an object with keys dtype, shape, data_offsets; found {entry!r:.120}.")
        dt, shape, offs = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dt not in _TENSOR_DTYPES[name]:
            raise _err(src, f"tensor {name!r} has dtype {dt!r}; expected one of {list(_TENSOR_DTYPES[name])}.")
        if not (isinstance(shape, list) and all(_is_int(s) and s >= 1 for s in shape)):
            raise _err(src, f"tensor {name!r} has shape {shape!r:.80}; expected a list of positive integers.")
        if not (isinstance(offs, list) and len(offs) == 2 and all(_is_int(o) and o >= 0 for o in offs)):
            raise _err(src, f"tensor {name!r} has data_offsets {offs!r:.80}; expected [begin, end] integers.")
        raw_specs[name] = (dt, shape, offs)
    dt, ishape, _ = raw_specs["images"]
    if len(ishape) != 5:
        raise _err(src, f"'images' has shape {ishape}; expected 5 dimensions [N, K, C, H, W].")
    n, k, c, h, w = ishape
    _check_rank_count(src, n, md["digest"])
    _check_image_caps(src, k, c, h, w)
    specs = [TensorSpec("images", dt, (k, c, h, w))]
    if "soft_labels" in raw_specs:
        sdt, sshape, _ = raw_specs["soft_labels"]
        if len(sshape) != 4 or sshape[0] != n or sshape[1] != k:
            raise _err(src, f"'soft_labels' has shape {sshape}; expected [N={n}, K={k}, factor², L].")
        _check_soft_caps(src, sshape)
        specs.append(TensorSpec("soft_labels", sdt, tuple(sshape[1:])))
    if "coefficients" in raw_specs:
        specs.append(_sdc_coefficients_spec(src, raw_specs["coefficients"], n, k))
    order = _data_order(specs)
    data_start = 8 + hlen
    data_len = total_size - data_start
    pos = 0
    begins = {}
    for t in order:
        b, e = raw_specs[t.name][2]
        size = n * t.rank_bytes
        if b != pos or e - b != size:
            raise _err(src, f"tensor {t.name!r} has data_offsets [{b}, {e}]; expected [{pos}, {pos + size}] "
                            f"(tensors tile the data section in the order {[s.name for s in order]}, no overlap or gap).")
        begins[t.name] = data_start + b
        pos = e
    if pos != data_len:
        what = "truncated" if data_len < pos else "trailing bytes"
        raise _err(src, f"{what}: the tensors need {pos} data bytes, the file has {data_len} "
                        f"(file size {total_size}, expected {data_start + pos}).")

    # ---- metadata values
    def js_field(key: str, typ: type, what: str) -> Any:
        try:
            val = _loads(md[key])
        except ValueError as exc:
            raise _err(src, f"__metadata__[{key!r}] is not valid JSON ({exc}); expected {what}.") from None
        if not isinstance(val, typ):
            raise _err(src, f"__metadata__[{key!r}] is {md[key]!r:.80}; expected {what}.")
        return val

    dataset = md["dataset"]
    if not dataset:
        raise _err(src, "__metadata__['dataset'] is empty; expected the dataset name.")
    classes = _parse_names(md["classes"])
    if classes is None or len(classes) != k or not all(isinstance(v, str) and v for v in classes) \
            or len(set(classes)) != k:
        raise _err(src, f"'classes' must list {k} distinct non-empty names (one per class slot), comma-separated "
                        f"or as a JSON array; found {md['classes']!r:.120}.")
    if "labels" in md:
        labels = _parse_list(md["labels"])
        if labels is None or len(labels) != k or not all(_is_int(v) and 0 <= v < MAX_LABEL for v in labels) \
                or len(set(labels)) != k:
            raise _err(src, f"'labels' must list {k} distinct integers in [0, 2**31) (comma-separated); "
                            f"found {md['labels']!r:.120}.")
    else:
        labels = list(range(k))
    stats = {}
    for key in ("mean", "std"):
        vals = _parse_list(md[key])
        if vals is None or len(vals) != c or not all(_finite_number(v) for v in vals):
            raise _err(src, f"'{key}' must list {c} finite numbers (one per channel, comma-separated); "
                            f"found {md[key]!r:.120}.")
        if key == "std" and not all(v > 0 for v in vals):
            raise _err(src, f"'std' must be positive; found {vals!r}.")
        stats[key] = tuple(float(v) for v in vals)
    if md.get("space", "pixel") != "pixel":
        raise _err(src, f"value space {md['space']!r:.40} is not supported; expected 'pixel' ([0, 1]) or no 'space' key.")
    fac = md.get("factor", "1")
    if not (fac.isascii() and fac.isdigit() and fac[0] != "0" and len(fac) < 6):
        raise _err(src, f"'factor' is {fac!r:.40}; expected a positive decimal integer (omitted when 1).")
    factor = int(fac)
    _check_factor_cap(src, factor)
    if h % factor or w % factor:
        raise _err(src, f"factor {factor} does not divide the image size {h}x{w}.")
    soft = None
    if "soft" in md:
        soft = js_field("soft", dict, "a JSON object {\"kind\": \"logits\"|\"probs\"}")
        if soft.get("kind") not in _SOFT_KINDS:
            raise _err(src, f"soft label kind {soft.get('kind')!r:.40}; expected one of {list(_SOFT_KINDS)}.")
    has_soft_tensor = "soft_labels" in raw_specs
    if has_soft_tensor != (soft is not None):
        raise _err(src, "the 'soft_labels' tensor and the 'soft' metadata key must be present together; "
                        f"found tensor={has_soft_tensor}, key={soft is not None}.")
    if has_soft_tensor and raw_specs["soft_labels"][1][2] != factor * factor:
        raise _err(src, f"'soft_labels' has {raw_specs['soft_labels'][1][2]} entries per stored image; "
                        f"expected factor² = {factor * factor}.")
    formation = _check_formation(src, md, raw_specs)
    dig = md["digest"]
    digests = tuple(dig[i * DIGEST_CHARS:(i + 1) * DIGEST_CHARS] for i in range(n))
    chain = [_unb64(d) for d in digests]
    if len(dig) != n * DIGEST_CHARS or any(d is None for d in chain):
        raise _err(src, f"'digest' must be {n} x {DIGEST_CHARS} base64url characters (one 128-bit entry per "
                        f"rank, A-Z a-z 0-9 - _, canonical, no padding); found {len(dig)} characters.")

    # ---- provenance (spec §3): descriptive keys, covered by 'prov'
    method = md.get("method", "")
    if "method" in md and not method:
        raise _err(src, "__metadata__['method'] is empty; expected the condensation method name.")
    config = js_field("config", dict, "a JSON object") if "config" in md else {}
    extra = js_field("extra", dict, "a JSON object") if "extra" in md else {}
    accuracy: dict[int, dict] = {}
    if "accuracy" in md:
        acc = js_field("accuracy", dict, "a JSON object {\"<n>\": {\"mean\": a, ...}}")
        for key, val in acc.items():
            if not (key.isascii() and key.isdigit() and key[0] != "0" and len(key) < 10):
                raise _err(src, f"accuracy key {key!r:.40} is not a positive decimal size.")
            mean = val.get("mean") if isinstance(val, dict) else None
            if not (_finite_number(mean) and 0 <= mean <= 1):
                raise _err(src, f"accuracy[{key}] is {val!r:.80}; expected an object with 'mean' in [0, 1].")
            accuracy[int(key)] = val

    start, anchor = 0, b""
    base_md = {kk: vv for kk, vv in md.items() if kk not in ("digest",) + _DELTA_KEYS}
    if kind == "delta":
        st, an = md["start"], md["anchor"]
        if not (st.isascii() and st.isdigit() and len(st) < 10 and (st == "0" or st[0] != "0")):
            raise _err(src, f"delta 'start' is {st!r:.40}; expected a non-negative decimal rank.")
        anchor_b = _unb64(an)
        if anchor_b is None:
            raise _err(src, f"delta 'anchor' is {an!r:.40}; expected {DIGEST_CHARS} base64url characters "
                            "(the chain entry before 'start').")
        start, anchor = int(st), anchor_b
        base_md["format"] = FORMAT
    seed = _seed(base_md, order)
    prov = md.get(PROV_KEY, "")
    has_prov_keys = any(kk in md for kk in PROVENANCE_KEYS)
    if has_prov_keys != (PROV_KEY in md):
        what = ("provenance keys " + str([kk for kk in PROVENANCE_KEYS if kk in md]) + " without 'prov'"
                if has_prov_keys else "'prov' without any provenance key")
        raise _err(src, f"{what}; expected both or neither ('prov' is the digest of {list(PROVENANCE_KEYS)}). "
                        "Re-create the file, or slice it with provenance=False to drop the provenance.")
    if has_prov_keys:
        want = _prov_digest(seed, md)
        if prov != want:
            raise _err(src, f"provenance digest mismatch: 'prov' is {prov!r:.40}, the provenance keys hash to "
                            f"{want!r} (it also covers the essential metadata); the method/config/accuracy/extra "
                            "or the essential metadata was edited or damaged. "
                            "Re-download the file, or slice it with provenance=False (lean) to drop it.")
    meta = BufferMeta(
        dataset=dataset, class_names=tuple(classes), labels=tuple(labels), image_shape=(c, h, w),
        dtype=_ST_NAMES[dt], ipc=n, factor=factor,
        mean=stats["mean"], std=stats["std"], method=method, config=config, accuracy=accuracy,
        soft=soft, extra=extra, space="pixel", format=FORMAT, digests=digests, tensors=order,
        raw=base_md, provenance_digest=prov, recipe=_check_recipe(src, md), formation=formation,
    )
    return _Layout(meta=meta, n=n, data_start=data_start, begins=begins, seed=seed,
                   chain=chain, start=start, anchor=anchor)


def _check_rank_count(src: str, n: int, digest: str) -> None:
    """Spec §3 caps: the rank count is bounded by its digest list, checked before any per-rank work."""
    if len(digest) != n * DIGEST_CHARS:
        raise _err(src, f"the images tensor declares {n} ranks but 'digest' has {len(digest)} characters; "
                        f"expected {DIGEST_CHARS} base64url characters per rank (at most {MAX_HEADER_BYTES // DIGEST_CHARS} ranks fit "
                        "the 1 MiB header). The file is damaged or hostile.")


def _check_image_caps(src: str, k: int, c: int, h: int, w: int) -> None:
    """Spec §3 caps on the declared class slots, channels and image size."""
    for what, val, cap in (("class slots K", k, MAX_CLASSES), ("channels C", c, MAX_CHANNELS),
                           ("image height H", h, MAX_SIDE), ("image width W", w, MAX_SIDE)):
        if val > cap:
            raise _err(src, f"the images tensor declares {val} {what}; the cap is {cap}. The file is damaged "
                            "or hostile (edgecond never writes such a buffer).")


def _check_soft_caps(src: str, sshape: Sequence[int]) -> None:
    if sshape[3] > MAX_SOFT_DIM:
        raise _err(src, f"'soft_labels' declares {sshape[3]} classes per label; the cap is {MAX_SOFT_DIM}.")


def _check_factor_cap(src: str, factor: int) -> None:
    if factor > MAX_FACTOR:
        raise _err(src, f"'factor' is {factor}; the cap is {MAX_FACTOR} (each stored image decodes to factor² "
                        "training images). The file is damaged or hostile.")


def decode_budget(max_bytes: Any = None) -> int:
    """The decoding memory budget in bytes: ``max_bytes`` if given, else ``$EDGECOND_DECODE_BUDGET``,
    else :data:`DEFAULT_DECODE_BUDGET` (2 GiB). Accepts ``"8GiB"``-style strings."""
    from .units import parse_bytes

    source = "argument max_bytes"
    if max_bytes is None:
        source = f"${DECODE_BUDGET_ENV}"
        max_bytes = os.environ.get(DECODE_BUDGET_ENV) or DEFAULT_DECODE_BUDGET
    try:
        return parse_bytes(max_bytes)
    except EdgecondErrorBase as exc:
        raise ConfigError(f"decode budget {max_bytes!r} ({source}) is not a byte quantity: {exc}") from None


def _check_decode_budget(src: str, need: int, max_bytes: Any, what: str) -> None:
    budget = decode_budget(max_bytes)
    if need > budget:
        raise _err(src, f"{what} would need about {need} bytes ({need / 2**30:.2f} GiB), above the decoding "
                        f"budget of {budget} bytes. Pass a smaller n, max_bytes={need} (or more), or set "
                        f"{DECODE_BUDGET_ENV}={need} if this buffer is trusted.")


def _layout_from_buffer(src: str, buf: memoryview, kind: str = "buffer") -> _Layout:
    total = len(buf)
    hlen = _read_prefix(src, bytes(buf[:8]), total)
    return _parse_header(src, bytes(buf[8:8 + hlen]), hlen, total, kind=kind)


def _layout_from_file(src: str, f: IO[bytes], total: int) -> _Layout:
    f.seek(0)
    hlen = _read_prefix(src, f.read(8), total)
    js = f.read(hlen)
    if len(js) != hlen:
        raise _err(src, f"truncated: could read only {len(js)} of {hlen} header bytes.")
    return _parse_header(src, js, hlen, total)


class _State:
    """Verification progress shared by a buffer and its views (same underlying bytes)."""

    __slots__ = ("verified",)

    def __init__(self, verified: int = 0) -> None:
        self.verified = verified


def _check_chain(src: str, prev: bytes, ranks: Iterable[Sequence[Any]], expected: Sequence[bytes],
                 first: int) -> bytes:
    """Continue the chain from ``prev`` over the given ranks; raise at the first mismatch."""
    for i, parts in enumerate(ranks):
        h = hashlib.sha256(prev)
        for p in parts:
            h.update(p)
        prev = h.digest()[:DIGEST_BYTES]
        if prev != expected[i]:
            raise _err(src, f"digest mismatch at rank {first + i}: expected {_b64(expected[i])}, "
                            f"computed {_b64(prev)}; the file is damaged (or its essential metadata was edited). "
                            "Re-download or re-create it.")
    return prev


# ----------------------------------------------------------------------------- the buffer


class MultisizeBuffer:
    """A multisize buffer (spec: ``docs/buffer-format.md``); every prefix of ranks is a buffer.

    Create with :meth:`from_class_major`, :meth:`load` or :meth:`from_bytes`. The object is a
    read-only view on file bytes (memory-mapped or in memory); :meth:`subset` makes views
    without copying. Data is digest-verified the first time each prefix is read.
    """

    def __init__(self, *, _buf: memoryview, _layout: _Layout, _n: int, _state: _State,
                 _src: str, _keep: Any = None) -> None:
        self._buf = _buf
        self._layout = _layout
        self._n = _n
        self._state = _state
        self._src = _src
        self._keep = _keep  # keeps a memmap alive
        self._meta = _layout.meta if _n == _layout.n else _layout.meta.with_ipc(_n)

    # ---- construction

    @classmethod
    def from_class_major(
        cls,
        images: Any,
        *,
        labels: Sequence[int] | None = None,
        class_names: Sequence[str],
        dataset: str,
        mean: Sequence[float],
        std: Sequence[float],
        factor: int = 1,
        method: str,
        config: Mapping[str, Any] | None = None,
        dtype: str = "float16",
        soft_labels: Any = None,
        soft_label_kind: str = "logits",
        extra: Mapping[str, Any] | None = None,
        accuracy: Any = None,
        soft_label_dtype: str = "float32",
        recipe: Any = None,
        coefficients: Any = None,
        coefficient_dtype: str = "float16",
    ) -> "MultisizeBuffer":
        """Build a buffer from class-major images ``[K, N, C, H, W]`` (float pixel space or uint8).

        ``images[k, r]`` is the rank-``r`` image of class slot ``k`` (rank 0 = the most important).
        ``labels``: class id of each slot (default ``0..K-1``); ``class_names``: one per slot.
        ``soft_labels``: ``[K, N, factor², L]`` (or ``[K, N, L]`` when ``factor == 1``), stored
        ``soft_label_dtype`` (float32 | float16), kind ``"logits"`` or ``"probs"``. Float images are clipped to ``[0, 1]``.
        ``recipe``: an :class:`edgecond.recipe.Recipe` (essential key ``recipe``), or None.
        ``coefficients``: ``[K, N, M]`` (``M >= N``) makes a slimmable (SDC, formation ``sdc/1``)
        buffer: ``images`` are then the component codes in ``[0, 1]`` (spec §5.1), stored with
        ``coefficient_dtype`` (float16 | float32).
        """
        if hasattr(images, "detach"):
            images = images.detach().cpu().numpy()
        images = np.asarray(images)
        if images.ndim != 5 or 0 in images.shape:
            raise ConfigError(f"images must have shape [K, N, C, H, W] with no empty axis, got {images.shape}.")
        k, n, c, h, w = (int(s) for s in images.shape)
        factor = check_factor(factor, h, w)
        _check_writable_sizes(k, c, h, w, factor)
        name = _storage_name(dtype)
        labels_t = tuple(range(k)) if labels is None else tuple(_int_label(v) for v in labels)
        if len(labels_t) != k or len(set(labels_t)) != k:
            raise ConfigError(f"labels must give {k} distinct non-negative class ids (one per slot), got {labels!r}.")
        names = tuple(str(s) for s in class_names)
        if len(names) != k or len(set(names)) != k or not all(names):
            raise ConfigError(
                f"class_names must give {k} distinct non-empty names (one per class slot), got {len(names)}: {names!r:.120}."
            )
        if not isinstance(dataset, str) or not dataset:
            raise ConfigError(f"dataset must be a non-empty name, got {dataset!r}.")
        if not isinstance(method, str) or not method:
            raise ConfigError(f"method must be a non-empty name, got {method!r}.")
        mean_t = _stats(mean, c, "mean")
        std_t = _stats(std, c, "std")
        if not all(v > 0 for v in std_t):
            raise ConfigError(f"std must be positive per channel, got {std_t}.")
        stored = np.ascontiguousarray(encode_images(images, name).transpose(1, 0, 2, 3, 4))
        arrays = {"images": stored}
        specs = [TensorSpec("images", _NP_TO_ST[name], (k, c, h, w))]
        md: dict[str, str] = {  # essentials (spec §3): defaults (labels 0..K-1, factor 1, pixel) omitted
            "format": FORMAT,
            "dataset": dataset,
            "classes": _names_text(names),
            "mean": _csv(_short_float(v) for v in mean_t),
            "std": _csv(_short_float(v) for v in std_t),
        }
        if labels_t != tuple(range(k)):
            md["labels"] = _csv(labels_t)
        if factor != 1:
            md["factor"] = str(factor)
        if recipe is not None:
            md["recipe"] = _recipe_text(recipe)
        md["method"] = method  # provenance
        cfg = _jsonable(dict(config or {}), "config")
        if cfg:
            md["config"] = _canonical(cfg)
        if extra:
            md["extra"] = _canonical(_jsonable(dict(extra), "extra"))
        if soft_labels is not None:
            if hasattr(soft_labels, "detach"):
                soft_labels = soft_labels.detach().cpu().numpy()
            s = np.asarray(soft_labels, dtype=np.float32)
            if s.ndim == 3 and factor == 1:
                s = s[:, :, None, :]
            if s.ndim != 4 or s.shape[:3] != (k, n, factor * factor) or s.shape[3] < 1:
                raise ConfigError(
                    f"soft_labels must have shape [K={k}, N={n}, factor²={factor * factor}, L], got {np.shape(soft_labels)}."
                )
            if not np.isfinite(s).all():
                raise ConfigError("soft_labels contain NaN or infinite values.")
            if soft_label_kind not in _SOFT_KINDS:
                raise ConfigError(f"soft_label_kind must be one of {list(_SOFT_KINDS)}, got {soft_label_kind!r}.")
            if soft_label_dtype not in ("float16", "float32"):
                raise ConfigError(f"soft_label_dtype must be 'float16' or 'float32', got {soft_label_dtype!r}.")
            half = soft_label_dtype == "float16"
            if half and not np.isfinite(s.astype("<f2")).all():
                raise ConfigError("soft_labels overflow float16; pass soft_label_dtype='float32'.")
            arrays["soft_labels"] = np.ascontiguousarray(s.transpose(1, 0, 2, 3)).astype("<f2" if half else "<f4")
            specs.append(TensorSpec("soft_labels", "F16" if half else "F32",
                                    tuple(int(v) for v in s.shape[:1] + s.shape[2:])))
            md["soft"] = _canonical({"kind": soft_label_kind})
        if accuracy is not None:
            md["accuracy"] = _canonical(_normalize_accuracy(accuracy))
        if coefficients is not None:
            if soft_labels is not None:
                raise ConfigError("a slimmable (SDC) buffer stores no soft labels; pass soft_labels=None.")
            arrays["coefficients"], spec = _sdc_coefficients_array(coefficients, k, n, coefficient_dtype)
            specs.append(spec)
            md["formation"] = SDC_FORMATION
        order = _data_order(specs)
        return cls._assemble(md, order, [[arrays[t.name][r] for t in order] for r in range(n)], n)

    @classmethod
    def _assemble(cls, md: Mapping[str, str], order: Sequence[TensorSpec],
                  ranks: Sequence[Sequence[Any]], n: int) -> "MultisizeBuffer":
        """Hash the chain over per-rank parts and write one file image (verified by construction)."""
        base = {k: v for k, v in md.items() if k not in ("digest", PROV_KEY)}
        prev = seed = _seed(base, order)
        chain = []
        for parts in ranks:
            hsh = hashlib.sha256(prev)
            for p in parts:
                hsh.update(_as_bytes_view(p))
            prev = hsh.digest()[:DIGEST_BYTES]
            chain.append(_b64(prev))
        full = dict(base)
        if _provenance(base):
            full[PROV_KEY] = _prov_digest(seed, base)
        full["digest"] = "".join(chain)
        out = io.BytesIO()
        out.write(_encode_header(full, order, n))
        for ti in range(len(order)):
            for parts in ranks:
                out.write(_as_bytes_view(parts[ti]))
        return cls.from_bytes(out.getvalue(), _verified=True)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, *, verify: bool = True,
                   _verified: bool = False) -> "MultisizeBuffer":
        """Open a buffer held in memory (e.g. received over Flower); the bytes are copied.

        ``verify=True`` checks the whole digest chain now (the data is in memory anyway);
        ``verify=False`` checks rank 0 (all metadata) now and later ranks when first read.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise BufferFormatError(f"from_bytes expects bytes, got {type(data).__name__}.")
        raw = bytes(data)
        buf = memoryview(raw)
        layout = _layout_from_buffer("<bytes>", buf)
        obj = cls(_buf=buf, _layout=layout, _n=layout.n, _state=_State(layout.n if _verified else 0),
                  _src="<bytes>", _keep=raw)
        obj.verify(None if verify else 1)
        return obj

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap: bool = True, verify: bool = False) -> "MultisizeBuffer":
        """Open a buffer file. ``mmap=True`` maps it (only the bytes used are read); otherwise reads it.

        The header is validated and rank 0 verified (the digest chain authenticates all metadata);
        further ranks are verified the first time they are read. ``verify=True`` checks all now.
        """
        p = Path(path)
        src = str(p)
        try:
            total = p.stat().st_size
            if not p.is_file():
                raise BufferFormatError(f"{src}: not a regular file; expected a .safetensors buffer file.")
            with open(p, "rb") as f:
                layout = _layout_from_file(src, f, total)
                if mmap:
                    keep = np.memmap(p, dtype=np.uint8, mode="r", shape=(total,))
                    buf = memoryview(keep)
                else:
                    f.seek(0)
                    keep = f.read()
                    buf = memoryview(keep)
        except FileNotFoundError:
            raise BufferFormatError(f"{src}: no such file; expected a buffer written by MultisizeBuffer.save.") from None
        except OSError as exc:
            raise BufferFormatError(f"{src}: cannot read the file ({exc}).") from None
        if len(buf) != total:
            raise BufferFormatError(f"{src}: the file changed while it was opened (size {total} -> {len(buf)}).")
        obj = cls(_buf=buf, _layout=layout, _n=layout.n, _state=_State(0), _src=src, _keep=keep)
        obj.verify(None if verify else 1)
        return obj

    # ---- properties

    @property
    def meta(self) -> BufferMeta:
        return self._meta

    @property
    def ipc(self) -> int:
        """Images (ranks) per class of this buffer/view."""
        return self._n

    @property
    def num_classes(self) -> int:
        return self._meta.num_classes

    @property
    def factor(self) -> int:
        return self._meta.factor

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self._meta.image_shape

    @property
    def dtype(self) -> str:
        return self._meta.dtype

    @property
    def labels(self) -> tuple[int, ...]:
        return self._meta.labels

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._meta.class_names

    @property
    def has_soft_labels(self) -> bool:
        return self._meta.soft is not None

    @property
    def digest(self) -> str:
        """Hex of the last digest-chain entry: identifies this exact content."""
        return self._meta.digest

    @property
    def rank_bytes(self) -> int:
        return self._meta.rank_bytes

    def __repr__(self) -> str:
        m = self._meta
        return (f"MultisizeBuffer(dataset={m.dataset!r}, method={m.method!r}, ipc={self._n}, "
                f"classes={m.num_classes}, image_shape={m.image_shape}, dtype={m.dtype!r}, factor={m.factor})")

    # ---- sizes

    def bytes_for(self, n: int, *, provenance: bool = True) -> int:
        """Exact size in bytes of the ``n``-rank slice file (0 for ``n = 0``); ``provenance=False``: lean slice."""
        return self._meta.bytes_for(n, provenance=provenance)

    def largest_fitting(self, max_bytes: int, *, provenance: bool = True) -> int:
        """Largest ``n`` whose slice file fits in ``max_bytes`` (0 if not even one rank fits)."""
        return self._meta.largest_fitting(max_bytes, provenance=provenance)

    # ---- verification and raw access

    def _rank_view(self, name: str, a: int, b: int) -> memoryview:
        spec = next(t for t in self._layout.meta.tensors if t.name == name)
        start = self._layout.begins[name]
        return self._buf[start + a * spec.rank_bytes:start + b * spec.rank_bytes]

    def verify(self, n: int | None = None) -> None:
        """Check the digest chain of ranks ``0..n-1`` (default: all); cheap when already done."""
        n = self._n if n is None else self._meta._check_n(n)
        st = self._state
        if st.verified >= n:
            return
        lay = self._layout
        prev = lay.seed if st.verified == 0 else lay.chain[st.verified - 1]
        order = lay.meta.tensors
        parts = ([self._rank_view(t.name, r, r + 1) for t in order] for r in range(st.verified, n))
        _check_chain(self._src, prev, parts, lay.chain[st.verified:n], st.verified)
        st.verified = n

    def _stored(self, name: str, n: int) -> np.ndarray:
        spec = next(t for t in self._layout.meta.tensors if t.name == name)
        view = self._rank_view(name, 0, n)
        return np.frombuffer(view, dtype=spec.np_dtype()).reshape((n, *spec.shape))

    def _resolve_n(self, n: int | None) -> int:
        return self._n if n is None else self._meta._check_n(n)

    def stored_images(self, n: int | None = None) -> np.ndarray:
        """Read-only rank-major stored images ``[n, K, C, H, W]`` in the storage dtype (no copy)."""
        n = self._resolve_n(n)
        self.verify(n)
        return self._stored("images", n)

    def check_values(self, n: int | None = None) -> None:
        """Verify the digests, then decode rank by rank (bounded memory) and check that pixels are
        finite in ``[0, 1]`` and soft labels finite: what ``edgecond info --verify`` runs.

        The digest only proves the bytes are what the writer signed; this finds a file written or
        re-signed with NaN/inf/out-of-range values (which every decoder would reject later).
        """
        n = self._resolve_n(n)
        self.verify(n)
        stored = self._stored("images", n)
        for r in range(n):
            try:
                decode_images(stored[r], src=self._src)
            except BufferFormatError as exc:
                raise _err(self._src, f"rank {r}: {exc}") from None
        if self.has_soft_labels:
            soft = self._stored("soft_labels", n)
            for r in range(n):
                if not np.isfinite(soft[r].astype(np.float32)).all():
                    raise _err(self._src, f"soft labels of rank {r} contain NaN or infinite values; expected "
                                          "finite numbers.")

    # ---- views and arrays

    def subset(self, n: int) -> "MultisizeBuffer":
        """The first ``n`` ranks as a buffer (a view: no copy)."""
        n = self._meta._check_n(n)
        return MultisizeBuffer(_buf=self._buf, _layout=self._layout, _n=n, _state=self._state,
                               _src=self._src, _keep=self._keep)

    def images_class_major(self, n: int | None = None, *, max_bytes: Any = None) -> np.ndarray:
        """Images ``[K, n, C, H, W]`` as float32 pixel space (a new array); ``max_bytes``: see :func:`decode_budget`."""
        _check_decode_budget(self._src, self._meta.decode_bytes(self._resolve_n(n), decode=False), max_bytes,
                             "images_class_major")
        q = self.stored_images(n)
        if self._meta.is_sdc:  # the decoded (untiled) images of the n-component prefix
            x = self._sdc_images(q, factor=1).reshape(q.shape)
        else:
            x = decode_images(q, src=self._src)
        return np.ascontiguousarray(x.transpose(1, 0, 2, 3, 4))
    def coefficients_class_major(self, n: int | None = None) -> np.ndarray | None:
        """SDC coefficients ``[K, n, M]`` in their storage dtype (a new array); None for plain images."""
        if not self._meta.is_sdc:
            return None
        n = self._resolve_n(n)
        self.verify(n)
        return np.ascontiguousarray(self._stored("coefficients", n).transpose(1, 0, 2))

    def _sdc_images(self, q: np.ndarray, *, factor: int) -> np.ndarray:
        """Spec §5.1 decode of the verified prefix ``q`` (component codes) with its coefficients."""
        return _sdc_decode(self._src, q, self._stored("coefficients", q.shape[0]), factor)

    def class_training_images(self, slot: int, n: int | None = None) -> np.ndarray:
        """Decoded training images ``[n*f², C, H, W]`` (float32 pixel) of class slot ``slot``'s
        first ``n`` ranks, for either formation kind (SDC images depend on ``n``, so a client must
        not cut a larger decode: this is the per-class reader the Avalanche policy uses)."""
        n = self._resolve_n(n)
        if not (_is_int(slot) or isinstance(slot, np.integer)) or not 0 <= int(slot) < self.num_classes:
            raise ConfigError(f"slot must be an integer in 0..{self.num_classes - 1}, got {slot!r}.")
        q = self.stored_images(n)
        if self._meta.is_sdc:
            coef = self._stored("coefficients", n)[:, int(slot):int(slot) + 1]
            return _sdc_decode(self._src, q[:, int(slot):int(slot) + 1], coef, self.factor)
        x = decode_images(q[:, int(slot)], src=self._src)
        return decode_numpy(x, self.factor) if self.factor > 1 else x

    def training_arrays(self, n: int | None = None, *, decode: bool = True,
                        max_bytes: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` to train on: x float32 pixel space, y int64.

        Order: rank-major, then class slot, then (``decode=True``) the ``factor²`` decoded images
        of each stored image (``edgecond.formation.decode_numpy``). ``decode=False`` returns the
        stored images ``[n*K, C, H, W]`` and one label each. Refuses (``BufferFormatError`` naming
        the bytes needed) when :meth:`BufferMeta.decode_bytes` exceeds the decoding budget
        ``max_bytes`` (default :func:`decode_budget`: 2 GiB or ``$EDGECOND_DECODE_BUDGET``).
        """
        _check_decode_budget(self._src, self._meta.decode_bytes(self._resolve_n(n), decode=decode), max_bytes,
                             "training_arrays")
        q = self.stored_images(n)
        m = q.shape[0] * q.shape[1]
        y = np.tile(np.asarray(self._meta.labels, dtype=np.int64), q.shape[0])
        if self._meta.is_sdc:  # spec §5.1: n components -> n images per class (then factor² tiles)
            x = self._sdc_images(q, factor=self.factor if decode else 1)
            return x, (np.repeat(y, self.factor * self.factor) if decode else y)
        x = decode_images(q, src=self._src).reshape(m, *q.shape[2:])
        if decode and self.factor > 1:
            x = decode_numpy(x, self.factor)
            y = np.repeat(y, self.factor * self.factor)
        return x, y

    def soft_targets(self, n: int | None = None, *, decode: bool = True) -> np.ndarray | None:
        """Soft labels in training order: ``[n*K*f², L]`` (``decode=False``: ``[n*K, f², L]``); None if absent."""
        if not self.has_soft_labels:
            return None
        n = self._resolve_n(n)
        width = self._meta.soft_label_dim or 0
        _check_decode_budget(self._src, 8 * n * self.num_classes * self.factor ** 2 * width, None, "soft_targets")
        self.verify(n)
        s = self._stored("soft_labels", n).astype(np.float32)
        if not np.isfinite(s).all():
            raise _err(self._src, "soft labels contain NaN or infinite values; expected finite numbers.")
        _, k, f2, l = s.shape
        return s.reshape(n * k * f2, l) if decode else s.reshape(n * k, f2, l)

    # ---- writing

    def header(self, n: int | None = None, *, provenance: bool = True) -> bytes:
        """The canonical header bytes of the ``n``-rank slice (length prefix included)."""
        return self._meta.header(self._resolve_n(n), provenance=provenance)

    def slice_to(self, dest: PathOrStream, n: int | None = None, *, provenance: bool = True) -> int:
        """Write the ``n``-rank slice (default: all ranks) to a path or binary stream.

        Copies byte ranges only: the header, then the first ``n`` ranks of each tensor. Returns
        the bytes written (``== bytes_for(n, provenance=provenance)``). Paths are written
        atomically (temp + rename). ``provenance=False`` writes the *lean* slice: essential
        metadata only (no method/config/accuracy/extra); its rank digests are the same, so it
        is hash-free too (spec §3).
        """
        n = self._resolve_n(n)
        header = self._meta.header(n, provenance=provenance)
        self.verify(n)
        pieces = [header] + [self._rank_view(t.name, 0, n) for t in self._layout.meta.tensors]
        return _write_pieces(dest, pieces)

    def save(self, path: PathOrStream, *, provenance: bool = True) -> int:
        """Write the whole buffer (all ``ipc`` ranks); returns bytes written."""
        return self.slice_to(path, self._n, provenance=provenance)

    def to_bytes(self, n: int | None = None, *, provenance: bool = True) -> bytes:
        """The ``n``-rank slice file as bytes (for in-memory transfer, e.g. Flower: pass ``provenance=False``)."""
        out = io.BytesIO()
        self.slice_to(out, n, provenance=provenance)
        return out.getvalue()

    def lean(self) -> "MultisizeBuffer":
        """This buffer without provenance (in memory): ``from_bytes(to_bytes(provenance=False))``."""
        return MultisizeBuffer.from_bytes(self.to_bytes(provenance=False), _verified=True)

    def ranks(self, a: int, b: int | None = None) -> bytes:
        """Delta payload with ranks ``a..b-1`` (spec §6): self-describing and verifiable.

        A client holding ``a`` ranks appends it with :meth:`append_ranks` and gets exactly the
        bytes of the ``b``-rank slice.
        """
        b = self._n if b is None else b
        header = self._meta.delta_header(a, b)
        self.verify(b)
        out = io.BytesIO()
        _write_pieces(out, [header] + [self._rank_view(t.name, a, b) for t in self._layout.meta.tensors])
        return out.getvalue()

    def delta_bytes(self, a: int, b: int) -> int:
        """Exact size of :meth:`ranks` ``(a, b)``."""
        return self._meta.delta_bytes(a, b)

    @classmethod
    def append_ranks(cls, held: "MultisizeBuffer | str | os.PathLike | None",
                     delta: bytes | bytearray | memoryview) -> "MultisizeBuffer":
        """Append a delta (from :meth:`ranks`) to a held prefix; returns the longer buffer (in memory).

        ``held`` must be the same buffer (same essential metadata) with at least ``start`` ranks;
        ranks beyond ``start`` are replaced by the delta's. The result keeps ``held``'s metadata:
        appended to a lean slice it is the lean slice of the larger size, appended to a full one
        the full slice, byte for byte. With ``start == 0``, ``held`` may be None (result: lean).
        Save the result with :meth:`save`.
        """
        if not isinstance(delta, (bytes, bytearray, memoryview)):
            raise BufferFormatError(f"delta must be bytes from MultisizeBuffer.ranks, got {type(delta).__name__}.")
        dbuf = memoryview(bytes(delta))
        dl = _layout_from_buffer("<delta>", dbuf, kind="delta")
        a = dl.start
        if held is not None and not isinstance(held, MultisizeBuffer):
            held = cls.load(held, mmap=True)
        if held is None:
            if a != 0:
                raise BufferFormatError(f"<delta>: it starts at rank {a} but no held buffer was given; pass the "
                                        f"buffer holding ranks 0..{a - 1}.")
            if dl.anchor != dl.seed:
                raise BufferFormatError("<delta>: its anchor does not match its own metadata (expected the chain "
                                        "seed for a delta starting at rank 0); the delta is damaged.")
            prev = dl.seed
            head_chain: list[bytes] = []
            held_parts: list[memoryview] = []
        else:
            hl = held._layout
            if hl.seed != dl.seed:
                raise BufferFormatError(
                    "<delta>: it belongs to another buffer (its metadata differs from the held buffer's: "
                    f"held {held._meta.dataset}/{held._meta.method}, delta {dl.meta.dataset}/{dl.meta.method}); "
                    "request the delta from the server that sent the held buffer."
                )
            if held.ipc < a:
                raise BufferFormatError(f"<delta>: it starts at rank {a} but the held buffer has {held.ipc} ranks; "
                                        f"request ranks({held.ipc}, {a + dl.n}).")
            if a > 0:
                held.verify(a)
            prev = hl.chain[a - 1] if a > 0 else hl.seed
            if prev != dl.anchor:
                raise BufferFormatError(f"<delta>: anchor {_b64(dl.anchor)} does not match the held "
                                        f"buffer's rank {a - 1} digest {_b64(prev)}; the held buffer or "
                                        "the delta is damaged or from another buffer.")
            head_chain = hl.chain[:a]
            held_parts = [held._rank_view(t.name, 0, a) for t in hl.meta.tensors]
        order = dl.meta.tensors
        sizes = {t.name: t.rank_bytes for t in order}
        parts = ([dbuf[dl.begins[t.name] + r * sizes[t.name]:dl.begins[t.name] + (r + 1) * sizes[t.name]]
                  for t in order] for r in range(dl.n))
        _check_chain("<delta>", prev, parts, dl.chain, a)
        b = a + dl.n
        md = dict(dl.meta.raw if held is None else held._layout.meta.raw)
        md["digest"] = "".join(_b64(d) for d in head_chain + dl.chain)
        out = io.BytesIO()
        out.write(_encode_header(md, order, b))
        for i, t in enumerate(order):
            if held_parts:
                out.write(held_parts[i])
            out.write(dbuf[dl.begins[t.name]:dl.begins[t.name] + dl.n * sizes[t.name]])
        return cls.from_bytes(out.getvalue(), _verified=True)

    def with_recipe(self, recipe: Any) -> "MultisizeBuffer":
        """A copy carrying ``recipe`` (an :class:`edgecond.recipe.Recipe`; None removes it).

        The recipe is essential metadata: the chain seed covers it, so every rank digest (and the
        buffer id ``d[0]``) changes; provenance is kept and its ``prov`` recomputed.
        """
        self.verify()
        md = dict(self._meta.raw)
        md.pop("recipe", None)
        if recipe is not None:
            md["recipe"] = _recipe_text(recipe)
        order = self._layout.meta.tensors
        ranks = [[self._rank_view(t.name, r, r + 1) for t in order] for r in range(self._n)]
        return MultisizeBuffer._assemble(md, order, ranks, self._n)

    def with_accuracy(self, table: Any) -> "MultisizeBuffer":
        """A copy whose metadata records measured accuracy per size (merged into any existing table).

        ``table``: ``{n: mean}``, ``{n: {"mean": m, "std": s, ...}}``, or objects with
        ``.size``, ``.mean`` (and ``.std``) such as ``edgecond.evaluate.SizeResult``. Values in [0, 1].
        The accuracy table is provenance: the rank digests stay the same, ``prov`` is recomputed.
        The data is verified first. A lean buffer gains provenance with only this table.
        """
        self.verify()
        acc = {str(k): v for k, v in self._meta.accuracy.items()}
        acc.update(_normalize_accuracy(table))
        md = dict(self._meta.raw)
        md["accuracy"] = _canonical({k: acc[k] for k in sorted(acc, key=int)})
        order = self._layout.meta.tensors
        ranks = [[self._rank_view(t.name, r, r + 1) for t in order] for r in range(self._n)]
        return MultisizeBuffer._assemble(md, order, ranks, self._n)


# ----------------------------------------------------------------------------- module helpers


def _recipe_text(recipe: Any) -> str:
    """The canonical spelling of a recipe (spec §3 ``recipe``)."""
    from .recipe import Recipe

    if not isinstance(recipe, Recipe):
        raise ConfigError(f"recipe is a {type(recipe).__name__}; expected an edgecond.recipe.Recipe "
                          "(e.g. edgecond.recipe.recipe_from_eval(eval_config, flips=...)).")
    return _canonical(recipe.to_json())


def _check_recipe(src: str, md: Mapping[str, str]) -> Any:
    """Spec §3 ``recipe``: parse and validate (None when absent: older buffers carry none)."""
    if "recipe" not in md:
        return None
    from .recipe import parse_recipe

    return parse_recipe(md["recipe"], src=src)


def _as_bytes_view(p: Any) -> memoryview:
    if isinstance(p, np.ndarray):
        return memoryview(np.ascontiguousarray(p)).cast("B")
    return memoryview(p).cast("B") if not isinstance(p, memoryview) or p.format != "B" else p


def _check_writable_sizes(k: int, c: int, h: int, w: int, factor: int) -> None:
    """The writer refuses what the reader's caps (spec §3) would refuse."""
    try:
        _check_image_caps("images", k, c, h, w)
        _check_factor_cap("factor", factor)
    except BufferFormatError as exc:
        raise ConfigError(f"cannot write this buffer: {exc}") from None


def _int_label(v: Any) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) < MAX_LABEL:
        raise ConfigError(f"labels must be integers in [0, 2**31), got {v!r}.")
    return int(v)


def _stats(vals: Any, c: int, what: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in np.asarray(vals, dtype=np.float64).reshape(-1))
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be {c} numbers (one per channel), got {vals!r}.") from None
    if len(out) != c or not all(math.isfinite(v) for v in out):
        raise ConfigError(f"{what} must be {c} finite numbers (one per channel), got {vals!r}.")
    return out


def _normalize_accuracy(table: Any) -> dict[str, dict]:
    """``{str(n): {"mean": m, ...}}`` from a mapping or an iterable of SizeResult-like objects."""
    items: list[tuple[Any, Any]]
    if isinstance(table, Mapping):
        items = list(table.items())
    else:
        try:
            items = [(getattr(r, "size"), r) for r in table]
        except (TypeError, AttributeError):
            raise ConfigError(
                "accuracy table must be {n: accuracy} or an iterable of results with .size/.mean/.std, "
                f"got {type(table).__name__}."
            ) from None
    out: dict[str, dict] = {}
    for n, v in items:
        if (isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer, str))
                or not (str(n).isascii() and str(n).isdigit()) or int(n) < 1):
            raise ConfigError(f"accuracy sizes must be positive integers, got {n!r}.")
        if isinstance(v, Mapping):
            entry = _jsonable(dict(v), "accuracy")
        elif isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
            entry = {"mean": float(v)}
        elif hasattr(v, "mean"):
            entry = {"mean": float(v.mean)}
            if getattr(v, "std", None) is not None:
                entry["std"] = float(v.std)
            if getattr(v, "accuracies", None) is not None:
                entry["accuracies"] = [float(a) for a in v.accuracies]
        else:
            raise ConfigError(f"accuracy for size {n} must be a number in [0, 1] or have .mean, got {v!r}.")
        m = entry.get("mean")
        if not isinstance(m, (int, float)) or isinstance(m, bool) or not (0.0 <= m <= 1.0):
            raise ConfigError(f"accuracy for size {n} must have mean in [0, 1], got {m!r}.")
        out[str(int(n))] = entry
    return out


def _sdc_coefficients_array(coefficients: Any, k: int, n: int, dtype: str) -> tuple[np.ndarray, TensorSpec]:
    """Class-major ``[K, N, M]`` SDC coefficients -> rank-major stored array and its spec."""
    if hasattr(coefficients, "detach"):
        coefficients = coefficients.detach().cpu().numpy()
    a = np.asarray(coefficients, dtype=np.float64)
    if a.ndim != 3 or a.shape[:2] != (k, n) or not n <= a.shape[2] <= MAX_SDC_COEFFICIENTS:
        raise ConfigError(f"coefficients must have shape [K={k}, N={n}, M] with {n} <= M <= "
                          f"{MAX_SDC_COEFFICIENTS}, got {np.shape(coefficients)}.")
    name = _storage_name(dtype)
    if name not in ("float16", "float32"):
        raise ConfigError(f"coefficient_dtype must be float16 or float32, got {dtype!r}.")
    if not np.isfinite(a).all() or (name == "float16" and np.abs(a).max() > 65504):
        raise ConfigError(f"coefficients must be finite (and within float16 range for {name}).")
    out = np.ascontiguousarray(a.transpose(1, 0, 2)).astype("<f2" if name == "float16" else "<f4")
    return out, TensorSpec("coefficients", _NP_TO_ST[name], (k, int(a.shape[2])))


def _write_pieces(dest: PathOrStream, pieces: Sequence[Any]) -> int:
    total = sum(len(memoryview(p).cast("B")) for p in pieces)
    if hasattr(dest, "write"):
        for p in pieces:
            dest.write(p)
        return total
    path = Path(dest)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f"{path.suffix}.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for p in pieces:
                f.write(p)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; a saved buffer is 0644 under umask 022
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return total


def _umask() -> int:
    """The process umask (read by setting and restoring it: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_meta(path: str | os.PathLike | IO[bytes]) -> BufferMeta:
    """Parse and validate the header of a buffer file (reads only the header and rank 0).

    Rank 0 is hashed so the metadata is authenticated by the digest chain; use it for budget
    decisions without opening the data (``edgecond.budget`` takes a ``BufferMeta``).
    """
    if hasattr(path, "read"):
        f = path
        f.seek(0, os.SEEK_END)
        total = f.tell()
        return _meta_from_stream("<stream>", f, total)
    p = Path(path)
    try:
        total = p.stat().st_size
        with open(p, "rb") as f:
            return _meta_from_stream(str(p), f, total)
    except FileNotFoundError:
        raise BufferFormatError(f"{p}: no such file; expected a buffer file.") from None


def _meta_from_stream(src: str, f: IO[bytes], total: int) -> BufferMeta:
    lay = _layout_from_file(src, f, total)
    parts = []
    for t in lay.meta.tensors:
        f.seek(lay.begins[t.name])
        parts.append(f.read(t.rank_bytes))
    _check_chain(src, lay.seed, [parts], lay.chain[:1], 0)
    return lay.meta


def slice_file(src: str | os.PathLike | IO[bytes], dest: PathOrStream, n: int, *, verify: bool = True,
               provenance: bool = True) -> int:
    """Stream the ``n``-rank slice of a buffer file without opening the rest of it.

    Reads exactly the header plus the first ``n`` ranks of each tensor (one ``read`` per
    tensor), verifies their digest chain (``verify=True``) and writes the slice. Returns the
    bytes written (``== bytes_for(n, provenance=provenance)``); ``provenance=False``: lean slice.
    """
    provenance = _check_provenance_mode(provenance)
    if hasattr(src, "read"):
        f = src
        f.seek(0, os.SEEK_END)
        total = f.tell()
        return _slice_stream("<stream>", f, total, dest, n, verify, provenance)
    p = Path(src)
    try:
        total = p.stat().st_size
        with open(p, "rb") as f:
            return _slice_stream(str(p), f, total, dest, n, verify, provenance)
    except FileNotFoundError:
        raise BufferFormatError(f"{p}: no such file; expected a buffer file.") from None


def _slice_stream(name: str, f: IO[bytes], total: int, dest: PathOrStream, n: int, verify: bool,
                  provenance: bool = True) -> int:
    lay = _layout_from_file(name, f, total)
    n = lay.meta._check_n(n)
    blocks = []
    for t in lay.meta.tensors:
        f.seek(lay.begins[t.name])
        want = n * t.rank_bytes
        data = f.read(want)
        if len(data) != want:
            raise _err(name, f"truncated: read {len(data)} of {want} bytes of tensor {t.name!r}.")
        blocks.append(memoryview(data))
    if verify:
        sizes = [t.rank_bytes for t in lay.meta.tensors]
        parts = ([blk[r * s:(r + 1) * s] for blk, s in zip(blocks, sizes)] for r in range(n))
        _check_chain(name, lay.seed, parts, lay.chain[:n], 0)
    return _write_pieces(dest, [lay.meta.header(n, provenance=provenance)] + blocks)
