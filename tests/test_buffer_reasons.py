"""Issue 22: every BufferFormatError the reader raises names which check failed (``exc.reason``)."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from edgecond.buffer import BufferFormatError, BufferFormatReason, MultisizeBuffer


def _toy(**kw) -> MultisizeBuffer:
    x = np.random.default_rng(0).random((3, 4, 3, 8, 8), dtype=np.float32)
    return MultisizeBuffer.from_class_major(x, class_names=["a", "b", "c"], dataset="toy", mean=[0.5] * 3,
                                            std=[0.25] * 3, method="random", dtype="uint8", **kw)


def _with_header(data: bytes, edit) -> bytes:
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen])
    edit(header)
    js = json.dumps(header, separators=(",", ":")).encode()
    js += b" " * ((-len(js)) % 8)
    return struct.pack("<Q", len(js)) + js + data[8 + hlen:]


def _reason(data: bytes) -> BufferFormatReason:
    with pytest.raises(BufferFormatError) as info:
        MultisizeBuffer.from_bytes(data)
    return info.value.reason


def test_each_damage_has_its_own_reason():
    good = _toy().to_bytes()
    assert _reason(b"") is BufferFormatReason.CONTAINER
    assert _reason(good[:8] + b"[" + good[9:]) is BufferFormatReason.CONTAINER
    assert _reason(_with_header(good, lambda h: h["__metadata__"].pop("format"))) is BufferFormatReason.FOREIGN
    assert _reason(_with_header(good, lambda h: h["__metadata__"].update(format="edgecond/9"))) \
        is BufferFormatReason.VERSION
    assert _reason(_with_header(good, lambda h: h["__metadata__"].update(extra_key="1"))) \
        is BufferFormatReason.METADATA
    assert _reason(_with_header(good, lambda h: h["images"].update(dtype="I64"))) is BufferFormatReason.TENSORS
    assert _reason(_with_header(good, lambda h: h["__metadata__"].update(std="0,0,0"))) \
        is BufferFormatReason.METADATA
    assert _reason(good + b"\0" * 8) is BufferFormatReason.LAYOUT
    assert _reason(_with_header(good, lambda h: h["__metadata__"].update(method="edited"))) \
        is BufferFormatReason.PROVENANCE
    damaged = bytearray(good)
    damaged[-1] ^= 0xFF
    assert _reason(bytes(damaged)) is BufferFormatReason.DIGEST


def test_caps_and_deltas_have_their_reasons():
    good = _toy().to_bytes()
    assert _reason(_with_header(good, lambda h: h["images"].update(shape=[4, 3, 3, 8, 99999]))) \
        is BufferFormatReason.CAPS
    buf = _toy()
    other = MultisizeBuffer.from_class_major(np.zeros((3, 4, 3, 8, 8), np.float32), class_names=["a", "b", "c"],
                                             dataset="other", mean=[0.5] * 3, std=[0.25] * 3, method="random",
                                             dtype="uint8")
    with pytest.raises(BufferFormatError) as info:
        MultisizeBuffer.append_ranks(other.subset(2), buf.ranks(2, 4))
    assert info.value.reason is BufferFormatReason.DELTA
    assert info.value.reason == "delta"  # a str enum: compares to its spelling
