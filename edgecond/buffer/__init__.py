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

from ..errors import BufferFormatError, BufferFormatReason
from .core import MultisizeBuffer
from .digest import _seed
from .files import read_meta, slice_file
from .meta import BufferMeta, TensorSpec, _data_order, _encode_header
from .spec import (DECODE_BUDGET_ENV, DELTA_FORMAT, DIGEST_BYTES, DIGEST_CHARS, FORMAT, FORMAT_NAME,
                   FORMAT_VERSION, MAX_CHANNELS, MAX_CLASSES, MAX_FACTOR, MAX_HEADER_BYTES, MAX_LABEL,
                   MAX_SDC_COEFFICIENTS, MAX_SIDE, MAX_SOFT_DIM, DEFAULT_DECODE_BUDGET, PathOrStream, PROV_KEY,
                   PROVENANCE_KEYS, SDC_FORMATION)
from .values import decode_budget, decode_images, encode_images


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
    "BufferFormatError",
    "BufferFormatReason",
]
