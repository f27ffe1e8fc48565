"""The multisize buffer file (docs/buffer-format.md): layout, round trips, prefix rule, deltas,
conversion, errors, CLI. numpy + safetensors only (one test checks torch is never imported)."""
from __future__ import annotations

import argparse
import io
import json
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecond.buffer import (
    DELTA_FORMAT,
    FORMAT,
    MAX_HEADER_BYTES,
    BufferMeta,
    MultisizeBuffer,
    decode_images,
    encode_images,
    read_meta,
    slice_file,
)
from edgecond.errors import BufferFormatError, ConfigError

NAMES10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make(k=3, n=4, c=3, h=8, w=8, *, dtype="uint8", factor=1, seed=0, soft=False, **kw):
    rng = np.random.default_rng(seed)
    x = rng.random((k, n, c, h, w), dtype=np.float32)
    soft_labels = rng.normal(size=(k, n, factor * factor, 5)).astype(np.float32) if soft else None
    args = dict(class_names=[f"c{i}" for i in range(k)], dataset="toy", mean=[0.5] * c, std=[0.25] * c,
                factor=factor, method="random", config={"seed": seed}, dtype=dtype, soft_labels=soft_labels)
    args.update(kw)
    return x, MultisizeBuffer.from_class_major(x, **args)


# ------------------------------------------------------------------ layout


def test_file_is_plain_safetensors_with_rank_major_images(tmp_path):
    from safetensors.numpy import load_file

    x, buf = make(k=3, n=4, dtype="float32")
    path = tmp_path / "b.safetensors"
    written = buf.save(path)
    assert written == path.stat().st_size == buf.bytes_for(4)
    tensors = load_file(str(path))
    assert set(tensors) == {"images"}
    np.testing.assert_array_equal(tensors["images"], x.transpose(1, 0, 2, 3, 4))


def test_header_layout_is_canonical_and_padded(tmp_path):
    _, buf = make(k=2, n=3, soft=True)
    raw = buf.to_bytes()
    (hlen,) = struct.unpack("<Q", raw[:8])
    assert hlen % 8 == 0 and hlen <= MAX_HEADER_BYTES
    header = json.loads(raw[8:8 + hlen])
    assert list(header) == ["__metadata__", "soft_labels", "images"]  # itemsize desc: F32 soft before U8 images
    md = header["__metadata__"]
    assert list(md) == sorted(md)
    assert md["format"] == FORMAT and "space" not in md and "labels" not in md  # defaults are omitted
    assert header["soft_labels"]["data_offsets"] == [0, 3 * 2 * 1 * 5 * 4]
    assert header["images"]["data_offsets"][0] == header["soft_labels"]["data_offsets"][1]
    assert header["images"]["data_offsets"][1] == len(raw) - 8 - hlen
    assert raw[8 + len(json.dumps(header, separators=(",", ":"))):8 + hlen].strip(b" ") == b""


def test_slice_size_is_header_plus_n_ranks():
    _, buf = make(k=10, n=6, c=3, h=32, w=32)
    rank = 10 * 3 * 32 * 32
    for n in range(1, 7):
        data = buf.to_bytes(n)
        assert len(data) == buf.bytes_for(n) == len(buf.header(n)) + n * rank
        assert data[len(buf.header(n)):] == buf.stored_images().tobytes()[:n * rank]
    assert buf.bytes_for(0) == 0


def test_header_overhead_below_one_percent_from_two_ranks_cifar_uint8():
    x = np.zeros((10, 50, 3, 32, 32), dtype=np.uint8)
    buf = MultisizeBuffer.from_class_major(x, class_names=NAMES10, dataset="cifar10",
                                           mean=[0.4914, 0.4822, 0.4465], std=[0.247, 0.2435, 0.2616],
                                           method="random", dtype="uint8")
    over = {n: len(buf.header(n)) / buf.bytes_for(n) for n in range(1, 51)}
    assert over[1] < 0.02  # one rank: ~1.6% (see docs/buffer-format.md)
    assert all(v < 0.01 for n, v in over.items() if n >= 2)
    assert over[50] < 0.003


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("dtype", ["uint8", "float16", "float32"])
@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip(tmp_path, dtype, mmap):
    x, buf = make(k=3, n=5, dtype=dtype, factor=2, soft=True, extra={"mls": [1, 2]})
    buf = buf.with_accuracy({1: 0.3, 5: {"mean": 0.5, "std": 0.01}})
    path = tmp_path / "b.safetensors"
    buf.save(path)
    back = MultisizeBuffer.load(path, mmap=mmap, verify=True)
    assert back.to_bytes() == buf.to_bytes() == path.read_bytes()
    assert back.meta == buf.meta
    assert back.ipc == 5 and back.num_classes == 3 and back.factor == 2 and back.dtype == dtype
    assert back.meta.extra == {"mls": [1, 2]}
    assert back.meta.accuracy == {1: {"mean": 0.3}, 5: {"mean": 0.5, "std": 0.01}}
    assert back.meta.config == {"seed": 0}
    np.testing.assert_array_equal(back.images_class_major(), buf.images_class_major())
    np.testing.assert_array_equal(back.soft_targets(), buf.soft_targets())
    tol = {"uint8": 0.5 / 255 + 1e-7, "float16": 2.0 ** -12, "float32": 0.0}[dtype]
    assert np.abs(back.images_class_major() - x).max() <= tol
    assert MultisizeBuffer.from_bytes(path.read_bytes()).to_bytes() == buf.to_bytes()


def test_uint8_conversion_rounds_half_to_even_and_clips():
    x = np.array([0.0, 1.0, 0.5 / 255, 1.5 / 255, 2.5 / 255, 254.4 / 255, -0.3, 1.7, 0.9999], dtype=np.float64)
    q = encode_images(x, "uint8")
    assert q.dtype == np.uint8
    assert q.tolist() == [0, 255, 0, 2, 2, 254, 0, 255, 255]
    # every uint8 value survives decode -> encode exactly
    v = np.arange(256, dtype=np.uint8)
    assert np.array_equal(encode_images(decode_images(v), "uint8"), v)
    assert np.array_equal(encode_images(v, "uint8"), v)  # uint8 input stored as is
    assert encode_images(v, "float32")[255] == 1.0


def test_float16_conversion_error_bound_and_nan_rejected():
    x = np.linspace(0, 1, 10001)
    f = encode_images(x, "float16")
    assert f.dtype == np.float16
    assert np.abs(f.astype(np.float64) - x).max() <= 2.0 ** -12
    for bad in (np.nan, np.inf):
        with pytest.raises(ConfigError, match="NaN or infinite"):
            encode_images(np.array([0.1, bad]), "float16")
    with pytest.raises(ConfigError, match="uint8, float16, float32"):
        encode_images(x, "int16")


def test_training_arrays_order_rank_major_then_class_then_parts():
    from edgecond.formation import decode_numpy

    x, buf = make(k=3, n=4, c=1, h=4, w=4, dtype="float32", factor=2, labels=[7, 2, 5])
    xs, ys = buf.training_arrays(2)
    assert xs.dtype == np.float32 and ys.dtype == np.int64
    assert xs.shape == (2 * 3 * 4, 1, 4, 4)
    assert ys.tolist() == [7] * 4 + [2] * 4 + [5] * 4 + [7] * 4 + [2] * 4 + [5] * 4
    for r in range(2):
        for k in range(3):
            i = (r * 3 + k) * 4
            np.testing.assert_allclose(xs[i:i + 4], decode_numpy(x[k, r][None], 2), atol=1e-6)
    xr, yr = buf.training_arrays(2, decode=False)
    assert xr.shape == (6, 1, 4, 4) and yr.tolist() == [7, 2, 5, 7, 2, 5]
    np.testing.assert_array_equal(xr[4], x[1, 1])
    # prefixes of training arrays are training arrays of prefixes
    full_x, full_y = buf.training_arrays()
    np.testing.assert_array_equal(full_x[:len(xs)], xs)


def test_soft_targets_follow_training_order():
    _, buf = make(k=2, n=3, factor=2, soft=True, h=4, w=4)
    s = buf.soft_targets(2)
    assert s.shape == (2 * 2 * 4, 5)
    raw = buf.soft_targets(2, decode=False)
    assert raw.shape == (4, 4, 5)
    np.testing.assert_array_equal(s[4:8], raw[1])
    assert make()[1].soft_targets() is None


def test_subset_is_a_view_and_equals_a_slice():
    _, buf = make(k=3, n=6)
    sub = buf.subset(2)
    assert sub.ipc == 2 and sub.meta.ipc == 2 and len(sub.meta.digests) == 2
    assert sub.to_bytes() == buf.to_bytes(2)
    np.testing.assert_array_equal(sub.images_class_major(), buf.images_class_major(2))
    assert sub.bytes_for(2) == buf.bytes_for(2)
    with pytest.raises(ConfigError, match=r"1\.\.2"):
        sub.bytes_for(3)
    with pytest.raises(ConfigError):
        buf.subset(0)
    with pytest.raises(ConfigError):
        buf.subset(7)


def test_largest_fitting_is_exact_at_the_boundary():
    _, buf = make(k=3, n=6)
    for n in range(1, 7):
        b = buf.bytes_for(n)
        assert buf.largest_fitting(b) == n
        assert buf.largest_fitting(b - 1) == n - 1
    assert buf.largest_fitting(0) == 0
    assert buf.largest_fitting(10**12) == 6


def test_with_accuracy_accepts_size_results_and_merges():
    class R:  # like edgecond.evaluate.SizeResult
        def __init__(self, size, mean, std):
            self.size, self.mean, self.std, self.accuracies = size, mean, std, [mean]

    _, buf = make(n=4)
    b2 = buf.with_accuracy([R(1, 0.2, 0.01), R(4, 0.4, 0.02)]).with_accuracy({2: 0.3})
    assert sorted(b2.meta.accuracy) == [1, 2, 4]
    assert b2.meta.accuracy[4] == {"mean": 0.4, "std": 0.02, "accuracies": [0.4]}
    assert b2.meta.digests == buf.meta.digests  # the accuracy table is provenance: not in the chain
    assert b2.meta.provenance_digest != buf.meta.provenance_digest
    assert b2.subset(2).meta.accuracy == b2.meta.accuracy  # slices keep the table
    for bad in ({1: 1.5}, {0: 0.5}, {1: float("nan")}, 3):
        with pytest.raises(ConfigError):
            buf.with_accuracy(bad)


def test_labels_and_class_names_validation():
    x = np.zeros((2, 1, 1, 2, 2), dtype=np.float32)
    base = dict(dataset="d", mean=[0], std=[1], method="m")
    with pytest.raises(ConfigError, match="class_names"):
        MultisizeBuffer.from_class_major(x, class_names=["a"], **base)
    with pytest.raises(ConfigError, match="distinct"):
        MultisizeBuffer.from_class_major(x, class_names=["a", "b"], labels=[1, 1], **base)
    with pytest.raises(ConfigError, match="std must be positive"):
        MultisizeBuffer.from_class_major(x, class_names=["a", "b"], **{**base, "std": [0]})
    with pytest.raises(ConfigError, match="factor"):
        MultisizeBuffer.from_class_major(x, class_names=["a", "b"], factor=3, **base)
    with pytest.raises(ConfigError, match="cannot be stored as JSON"):
        MultisizeBuffer.from_class_major(x, class_names=["a", "b"], config={"f": object()}, **base)
    with pytest.raises(ConfigError, match=r"\[K, N, C, H, W\]"):
        MultisizeBuffer.from_class_major(x[0], class_names=["a", "b"], **base)
    b = MultisizeBuffer.from_class_major(x, class_names=["a", "b"], labels=[4, 9], **base)
    assert b.labels == (4, 9) and b.meta.labels == (4, 9)
    # float input outside [0, 1] is clipped
    y = np.full((2, 1, 1, 2, 2), 1.5, dtype=np.float32)
    assert MultisizeBuffer.from_class_major(y, class_names=["a", "b"], **base).images_class_major().max() == 1.0


# ------------------------------------------------------------------ prefix rule and deltas (properties)

_small = dict(max_examples=25, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@st.composite
def buffers(draw):
    k = draw(st.integers(1, 4))
    n = draw(st.integers(1, 7))
    c = draw(st.sampled_from([1, 3]))
    factor = draw(st.sampled_from([1, 2]))
    hw = 2 * draw(st.integers(1, 3))
    dtype = draw(st.sampled_from(["uint8", "float16", "float32"]))
    soft = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return make(k=k, n=n, c=c, h=hw, w=hw, dtype=dtype, factor=factor, soft=soft, seed=seed)[1]


@settings(**_small)
@given(buf=buffers(), data=st.data())
def test_property_slice_of_slice_equals_slice(buf, data):
    m = data.draw(st.integers(1, buf.ipc))
    n = data.draw(st.integers(1, m))
    sm = MultisizeBuffer.from_bytes(buf.to_bytes(m))
    assert sm.to_bytes(n) == buf.to_bytes(n)
    assert len(buf.to_bytes(n)) == buf.bytes_for(n) == sm.bytes_for(n)
    out = io.BytesIO()
    assert slice_file(io.BytesIO(buf.to_bytes()), out, n) == buf.bytes_for(n)
    assert out.getvalue() == buf.to_bytes(n)


@settings(**_small)
@given(buf=buffers(), data=st.data())
def test_property_delta_append_equals_larger_slice(buf, data):
    m = data.draw(st.integers(1, buf.ipc))
    n = data.draw(st.integers(0, m - 1))
    delta = buf.ranks(n, m)
    assert len(delta) == buf.delta_bytes(n, m)
    held = MultisizeBuffer.from_bytes(buf.to_bytes(n)) if n else None
    grown = MultisizeBuffer.append_ranks(held, delta)
    assert grown.to_bytes() == buf.to_bytes(m, provenance=n > 0)  # nothing held: the result is lean
    if n:  # onto a lean slice: the lean slice of the larger size
        lean = MultisizeBuffer.append_ranks(MultisizeBuffer.from_bytes(buf.to_bytes(n, provenance=False)), delta)
        assert lean.to_bytes() == buf.to_bytes(m, provenance=False)
    # a held buffer with more ranks than the delta's start also works (ranks are replaced)
    if n and m < buf.ipc:
        assert MultisizeBuffer.append_ranks(buf, delta).to_bytes() == buf.to_bytes(m)


@settings(**_small)
@given(buf=buffers())
def test_property_save_load_exact(buf, tmp_path_factory):
    path = tmp_path_factory.mktemp("p") / "b.safetensors"
    buf.save(path)
    back = MultisizeBuffer.load(path)
    assert back.meta == buf.meta
    np.testing.assert_array_equal(back.stored_images(), buf.stored_images())
    assert path.read_bytes() == buf.to_bytes()


def test_append_to_a_file_path_and_save(tmp_path):
    _, buf = make(n=5)
    held = tmp_path / "held.safetensors"
    buf.slice_to(held, 2)
    grown = MultisizeBuffer.append_ranks(held, buf.ranks(2, 5))
    grown.save(held)
    assert held.read_bytes() == buf.to_bytes()


def test_delta_errors():
    _, buf = make(n=5)
    _, other = make(n=5, seed=1)
    delta = buf.ranks(2, 4)
    with pytest.raises(BufferFormatError, match="another buffer"):
        MultisizeBuffer.append_ranks(other.subset(2), delta)
    with pytest.raises(BufferFormatError, match="held buffer has 1 ranks"):
        MultisizeBuffer.append_ranks(buf.subset(1), delta)
    with pytest.raises(BufferFormatError, match="no held buffer"):
        MultisizeBuffer.append_ranks(None, delta)
    bad = bytearray(delta)
    bad[-1] ^= 1
    with pytest.raises(BufferFormatError, match="digest mismatch at rank 3"):
        MultisizeBuffer.append_ranks(buf.subset(2), bytes(bad))
    with pytest.raises(BufferFormatError, match="edgecond delta"):
        MultisizeBuffer.append_ranks(buf.subset(2), buf.to_bytes(2))
    with pytest.raises(BufferFormatError, match="not an edgecond buffer"):
        MultisizeBuffer.from_bytes(delta)
    assert json.loads(delta[8:8 + struct.unpack("<Q", delta[:8])[0]])["__metadata__"]["format"] == DELTA_FORMAT
    with pytest.raises(ConfigError):
        buf.ranks(3, 3)


def test_slice_to_stream_and_path_and_slice_file_reads_only_needed_bytes(tmp_path):
    _, buf = make(k=4, n=10, soft=True)
    path = tmp_path / "b.safetensors"
    buf.save(path)

    class Counting(io.FileIO):
        read_bytes = 0

        def read(self, size=-1):
            out = super().read(size)
            Counting.read_bytes += len(out)
            return out

    out = io.BytesIO()
    with Counting(path, "rb") as f:
        written = slice_file(f, out, 3)
    assert out.getvalue() == buf.to_bytes(3)
    hlen = len(buf.header(10))
    assert Counting.read_bytes == hlen + 3 * buf.rank_bytes  # header + the 3 ranks, nothing else
    assert written == buf.bytes_for(3)
    buf.slice_to(tmp_path / "sub" / "s.safetensors", 3)
    assert (tmp_path / "sub" / "s.safetensors").read_bytes() == buf.to_bytes(3)


def test_read_meta_reads_header_only(tmp_path):
    _, buf = make(n=4)
    path = tmp_path / "b.safetensors"
    buf.save(path)
    meta = read_meta(path)
    assert isinstance(meta, BufferMeta) and meta == buf.meta
    assert meta.bytes_for(3) == buf.bytes_for(3)


# ------------------------------------------------------------------ damaged and foreign files


def _header_of(raw: bytes) -> dict:
    (hlen,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + hlen])


def _with_header(header: dict, data: bytes) -> bytes:
    js = json.dumps(header, separators=(",", ":")).encode()
    js += b" " * ((-len(js)) % 8)
    return struct.pack("<Q", len(js)) + js + data


def _with_text(js: bytes, data: bytes) -> bytes:
    js += b" " * ((-len(js)) % 8)
    return struct.pack("<Q", len(js)) + js + data


def _data_of(raw: bytes) -> bytes:
    (hlen,) = struct.unpack("<Q", raw[:8])
    return raw[8 + hlen:]


@pytest.fixture
def good():
    _, buf = make(k=2, n=3)
    return buf.to_bytes()


def _edit(raw, fn):
    h = _header_of(raw)
    fn(h)
    return _with_header(h, _data_of(raw))


def _meta_edit(key, value):
    def fn(h):
        if value is None:
            del h["__metadata__"][key]
        else:
            h["__metadata__"][key] = value
    return fn


BAD_CASES = {
    "empty": (lambda raw: b"", "empty"),
    "short": (lambda raw: raw[:5], "truncated"),
    "truncated data": (lambda raw: raw[:-1], "truncated"),
    "trailing": (lambda raw: raw + b"\0", "trailing bytes"),
    "huge header": (lambda raw: struct.pack("<Q", MAX_HEADER_BYTES + 8) + raw[8:], "cap"),
    "header past end": (lambda raw: struct.pack("<Q", len(raw)) + raw[8:], "truncated"),
    "random": (lambda raw: np.random.default_rng(0).bytes(500), "cap|truncated|multiple of 8"),
    "not json": (lambda raw: raw[:8] + b"{" + b"x" * (len(_header_of_raw_len(raw)) - 1) + _data_of(raw), "not valid UTF-8 JSON"),
    "foreign": (lambda raw: _edit(raw, lambda h: h.pop("__metadata__")), "plain safetensors"),
    "other format": (lambda raw: _edit(raw, _meta_edit("format", "other/1")), "not an edgecond buffer"),
    "version 2": (lambda raw: _edit(raw, _meta_edit("format", "edgecond/2")), "unsupported format version '2'"),
    "unknown key": (lambda raw: _edit(raw, _meta_edit("zzz", "1")), "unknown metadata keys"),
    "missing key": (lambda raw: _edit(raw, _meta_edit("mean", None)), "missing metadata keys"),
    "name edited": (lambda raw: _edit(raw, _meta_edit("classes", '["c0","cX"]')), "provenance digest mismatch"),
    "name edited, lean": (lambda raw: _edit(MultisizeBuffer.from_bytes(raw).to_bytes(provenance=False),
                                            _meta_edit("classes", "c0,cX")), "digest mismatch at rank 0"),
    "config edited": (lambda raw: _edit(raw, _meta_edit("config", '{"seed":1}')), "provenance digest mismatch"),
    "prov dropped": (lambda raw: _edit(raw, _meta_edit("prov", None)), "without 'prov'"),
    "prov alone": (lambda raw: _edit(MultisizeBuffer.from_bytes(raw).to_bytes(provenance=False),
                                     _meta_edit("prov", "A" * 22)), "'prov' without any provenance key"),
    "lean + config": (lambda raw: _edit(MultisizeBuffer.from_bytes(raw).to_bytes(provenance=False),
                                        _meta_edit("config", "{}")), "without 'prov'"),
    "bad classes": (lambda raw: _edit(raw, _meta_edit("classes", '["c0"]')), "'classes' must list 2"),
    "bad factor": (lambda raw: _edit(raw, _meta_edit("factor", "3")), "does not divide"),
    "bad digest": (lambda raw: _edit(raw, _meta_edit("digest", "AB" * 96)), "base64url"),
    "hex digest": (lambda raw: _edit(raw, _meta_edit("digest", "ab" * 96)), "base64url"),
    "non-canonical b64": (lambda raw: _edit(raw, _meta_edit("digest", "AAAAAAAAAAAAAAAAAAAAAB" * 3)), "base64url"),
    "nan in meta": (lambda raw: _edit(raw, _meta_edit("mean", "[NaN,0.5,0.5]")), "finite numbers"),
    "nan csv": (lambda raw: _edit(raw, _meta_edit("mean", "NaN,0.5,0.5")), "finite numbers"),
    "labels csv bad": (lambda raw: _edit(raw, _meta_edit("labels", "0,x")), "labels"),
    "space": (lambda raw: _edit(raw, _meta_edit("space", "normalized")), "value space"),
    "inf in meta": (lambda raw: _edit(raw, _meta_edit("mean", "[1e400,0.5,0.5]")), "finite numbers"),
    "huge int in meta": (lambda raw: _edit(raw, _meta_edit("std", "[" + "9" * 400 + ",1,1]")), "finite numbers"),
    "huge label": (lambda raw: _edit(raw, _meta_edit("labels", "[0,36893488147419103232]")), "labels"),
    "deep nesting": (lambda raw: _edit(raw, _meta_edit("config", "[" * 100000 + "]" * 100000)), "not valid JSON|cap"),
    "huge accuracy": (lambda raw: _edit(raw, _meta_edit("accuracy", '{"1":{"mean":1e999}}')), "accuracy"),
    "unknown tensor": (lambda raw: _edit(raw, lambda h: h.update(x=h["images"])), "unknown tensors"),
    "bad dtype": (lambda raw: _edit(raw, lambda h: h["images"].update(dtype="I8")), "dtype"),
    "bad shape": (lambda raw: _edit(raw, lambda h: h["images"].update(shape=[3, 2, 3, 8])), "5 dimensions"),
    "overlap": (lambda raw: _edit(raw, lambda h: h["images"].update(data_offsets=[1, 1 + 3 * 2 * 192])), "data_offsets"),
    "float shape": (lambda raw: _edit(raw, lambda h: h["images"].update(shape=[3.0, 2, 3, 8, 8])), "positive integers"),
    "dup key": (lambda raw: _with_text(_header_of_raw_len(raw).strip().replace(b'"images":', b'"images":{},"images":', 1),
                                       _data_of(raw)), "duplicate key 'images'"),
    "not padded": (lambda raw: struct.pack("<Q", struct.unpack("<Q", raw[:8])[0] - 1) + raw[8:], "multiple of 8"),
    "data flip": (lambda raw: raw[:-3] + bytes([raw[-3] ^ 0x10]) + raw[-2:], "digest mismatch at rank 2"),
}


def _header_of_raw_len(raw):
    return raw[8:8 + struct.unpack("<Q", raw[:8])[0]]


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_damaged_files_raise_buffer_format_error(good, case, tmp_path):
    mutate, pattern = BAD_CASES[case]
    bad = mutate(good)
    path = tmp_path / "bad.safetensors"
    path.write_bytes(bad)
    for opener in (lambda: MultisizeBuffer.load(path, verify=True), lambda: MultisizeBuffer.from_bytes(bad),
                   lambda: MultisizeBuffer.load(path, mmap=False).verify()):
        with pytest.raises(BufferFormatError, match=pattern):
            opener()


def test_lazy_verification_catches_late_damage_on_access(good, tmp_path):
    bad = good[:-3] + bytes([good[-3] ^ 0x10]) + good[-2:]  # rank 2 damaged
    path = tmp_path / "b.safetensors"
    path.write_bytes(bad)
    buf = MultisizeBuffer.load(path)  # rank 0 verified only
    assert buf.images_class_major(2).shape[1] == 2  # ranks 0..1 are fine
    buf.slice_to(io.BytesIO(), 2)
    for use in (buf.images_class_major, buf.training_arrays, buf.to_bytes, lambda: buf.ranks(1, 3),
                lambda: buf.slice_to(io.BytesIO(), 3), lambda: slice_file(path, io.BytesIO(), 3)):
        with pytest.raises(BufferFormatError, match="digest mismatch at rank 2"):
            use()


def test_nan_and_out_of_range_float_storage_rejected_on_decode():
    # a non-conforming writer with a valid digest: decoding must still refuse the values
    x = np.full((1, 1, 1, 2, 2), 0.5, dtype=np.float32)
    buf = MultisizeBuffer.from_class_major(x, class_names=["a"], dataset="d", mean=[0], std=[1],
                                           method="m", dtype="float32")
    md = dict(buf.meta.raw)
    order = buf.meta.tensors
    for bad_value in (np.nan, 1.5, -0.1):
        arr = np.full((1, 1, 2, 2), bad_value, dtype="<f4")
        forged = MultisizeBuffer._assemble(md, order, [[arr]], 1)
        with pytest.raises(BufferFormatError, match="outside \\[0, 1\\]"):
            forged.images_class_major()


def test_missing_file_is_a_buffer_format_error(tmp_path):
    with pytest.raises(BufferFormatError, match="no such file"):
        MultisizeBuffer.load(tmp_path / "nope.safetensors")


# ------------------------------------------------------------------ torch-free, CLI


def test_buffer_budget_units_formation_never_import_torch():
    code = textwrap.dedent("""
        import io, sys, numpy as np
        from edgecond.buffer import MultisizeBuffer, slice_file
        from edgecond import budget, units, formation
        x = np.random.default_rng(0).random((2, 3, 3, 4, 4), dtype=np.float32)
        b = MultisizeBuffer.from_class_major(x, class_names=["a", "b"], dataset="d", mean=[0]*3,
                                             std=[1]*3, method="m", factor=2, dtype="uint8")
        b2 = MultisizeBuffer.from_bytes(b.to_bytes())
        xs, ys = b2.training_arrays(2)
        assert xs.shape == (16, 3, 4, 4)
        g = MultisizeBuffer.append_ranks(b2.subset(1), b2.ranks(1, 3))
        assert g.to_bytes() == b.to_bytes()
        budget.ipc_for_bytes(b, units.parse_bytes("1kB"))
        budget.ipc_for_memory(b, "1GB")
        budget.LogNormalTrace(median=1000, sigma=0.5, seed=0).budget(1, 2)
        formation.decode_numpy(np.zeros((1, 1, 4, 4), np.float32), 2)
        assert "torch" not in sys.modules, "torch was imported"
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def _cli(argv):
    from edgecond.commands import buffer as cmd

    parser = argparse.ArgumentParser(prog="edgecond")
    cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_info_and_slice(tmp_path, capsys):
    _, buf = make(k=2, n=5)
    buf = buf.with_accuracy({1: 0.25, 5: 0.5})
    path = tmp_path / "b.safetensors"
    buf.save(path)
    assert _cli(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ipc"] == 5 and info["digest_ok"] is True
    assert [s["bytes"] for s in info["sizes"]] == [buf.bytes_for(n) for n in range(1, 6)]
    assert info["sizes"][0]["accuracy"] == {"mean": 0.25}
    assert _cli(["info", str(path)]) == 0
    text = capsys.readouterr().out
    assert "25.00%" in text and "digest ok" in text
    out = tmp_path / "s.safetensors"
    assert _cli(["slice", str(path), "--ipc", "2", "-o", str(out)]) == 0
    assert out.read_bytes() == buf.to_bytes(2)
    assert _cli(["slice", str(path), "--max-bytes", f"{buf.bytes_for(3) / 1000}kB", "-o", str(out)]) == 0
    assert out.read_bytes() == buf.to_bytes(3)
    assert _cli(["slice", str(path), "--max-bytes", str(buf.bytes_for(3) - 1), "-o", str(out)]) == 0
    assert out.read_bytes() == buf.to_bytes(2)
    from edgecond.errors import BudgetError

    with pytest.raises(BudgetError, match="below one rank"):
        _cli(["slice", str(path), "--max-bytes", "100B", "-o", str(out)])


def test_digest_chain_and_header_match_the_spec_independently():
    """Recompute header and digest chain from docs/buffer-format.md §1-§4 with hashlib + json only."""
    import base64
    import hashlib

    def b64(d):
        return base64.urlsafe_b64encode(d).rstrip(b"=").decode()

    _, buf = make(k=2, n=3, soft=True, factor=2, h=4, w=4, extra={"mls": [1]})
    buf = buf.with_accuracy({1: 0.25})
    raw = buf.to_bytes()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen])
    md = header.pop("__metadata__")
    order = sorted(header, key=lambda t: header[t]["data_offsets"][0])
    assert order == ["soft_labels", "images"]
    tensors = [[t, header[t]["dtype"], header[t]["shape"][1:]] for t in order]
    provenance_keys = ("accuracy", "config", "extra", "method")
    essential = {k: v for k, v in md.items() if k not in ("digest", "prov") + provenance_keys}
    assert sorted(essential) == ["classes", "dataset", "factor", "format", "mean", "soft", "std"]
    canon = json.dumps({"metadata": essential, "tensors": tensors},
                       sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    prev = seed = hashlib.sha256(b"edgecond/1\0" + canon.encode()).digest()[:16]
    prov = {k: md[k] for k in provenance_keys if k in md}
    assert sorted(prov) == list(provenance_keys)
    canon_prov = json.dumps(prov, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert md["prov"] == b64(hashlib.sha256(b"edgecond/1 provenance\0" + seed + canon_prov.encode()).digest()[:16])
    data = raw[8 + hlen:]
    chain = ""
    for r in range(3):
        h = hashlib.sha256(prev)
        for t in order:
            b, e = header[t]["data_offsets"]
            size = (e - b) // 3
            h.update(data[b + r * size:b + (r + 1) * size])
        prev = h.digest()[:16]
        chain += b64(prev)
    assert md["digest"] == chain and len(chain) == 3 * 22
    assert buf.digest == chain[-22:]
    # canonical header: compact JSON, metadata first with sorted keys, tensors in data order
    canon_header = {"__metadata__": dict(sorted(md.items())), **{t: header[t] for t in order}}
    js = json.dumps(canon_header, separators=(",", ":"), ensure_ascii=True).encode()
    assert raw[8:8 + hlen] == js + b" " * ((-len(js)) % 8)


def test_saving_over_the_mapped_source_file_is_safe(tmp_path):
    _, buf = make(n=4)
    path = tmp_path / "b.safetensors"
    buf.save(path)
    mapped = MultisizeBuffer.load(path)
    mapped.with_accuracy({2: 0.5}).save(path)  # atomic replace while the old file is mapped
    mapped.slice_to(path, 2)
    assert path.read_bytes() == buf.to_bytes(2)
    assert MultisizeBuffer.load(path, verify=True).ipc == 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
