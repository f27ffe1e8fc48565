"""Lean slices (docs/buffer-format.md §3): essential metadata vs provenance, header overhead,
byte accounting, slicing/delta identities and tamper detection of the provenance."""
from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecond.budget import delta_bytes, ipc_for_bytes
from edgecond.buffer import PROVENANCE_KEYS, MultisizeBuffer, read_meta, slice_file
from edgecond.errors import BufferFormatError, ConfigError

NAMES10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# the resolved CondenseConfig of an MDC run, as edgecond.condense.engine stores it (~300 bytes of JSON)
REALISTIC_CONFIG = {
    "method": "idc", "ipc": 50, "factor": 1, "iterations": 2000, "seed": 0, "lr_img": 0.005,
    "momentum_img": 0.5, "batch_real": 128, "model": "convnet", "model_kwargs": {},
    "augment": "color_crop_cutout", "method_config": {"inner_loop": 100},
    "hooks": "mdc", "hooks_config": {"delta_t": 10, "window": 10}, "preset": "paper", "dataset": "cifar10",
    "dtype": "uint8", "init": "real",
}


def _header(raw: bytes) -> dict:
    (hlen,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + hlen])


@pytest.fixture(scope="module")
def cifar():
    """10-class 3x32x32 uint8, 50 IPC, realistic config + accuracy table + MLS history."""
    x = np.random.default_rng(0).integers(0, 256, size=(10, 50, 3, 32, 32), dtype=np.uint8)
    buf = MultisizeBuffer.from_class_major(
        x, class_names=NAMES10, dataset="cifar10", mean=[0.4914, 0.4822, 0.4465], std=[0.247, 0.2435, 0.2616],
        method="idc", config=REALISTIC_CONFIG, dtype="uint8",
        extra={"mdc": {"mls": [1, 1, 2, 3, 5, 8, 13, 21], "frozen": 21}},
    )
    return buf.with_accuracy({n: {"mean": 0.3 + n / 200, "std": 0.004} for n in (1, 2, 5, 10, 20, 50)})


def test_realistic_config_is_about_300_bytes():
    assert 280 <= len(json.dumps(REALISTIC_CONFIG, separators=(",", ":"))) <= 360


def test_lean_header_overhead_under_one_percent_at_every_n(cifar):
    rank = cifar.rank_bytes
    assert rank == 30_720
    for n in range(1, cifar.ipc + 1):
        head = len(cifar.header(n, provenance=False))
        assert head <= 0.01 * n * rank, (n, head)  # under 1% of the image bytes (hence of the file)
        assert len(cifar.header(n)) > head  # the full form is bigger: it carries the provenance
    assert len(cifar.header(1, provenance=False)) <= 304
    assert len(cifar.header(1)) / cifar.bytes_for(1) > 0.01  # why the lean form exists


def test_lean_header_holds_exactly_the_essential_keys(cifar):
    md = _header(cifar.to_bytes(1, provenance=False))["__metadata__"]
    assert sorted(md) == ["classes", "dataset", "digest", "format", "mean", "std"]
    assert md["classes"] == ",".join(NAMES10) and md["mean"] == "0.4914,0.4822,0.4465"
    assert len(md["digest"]) == 22
    full = _header(cifar.to_bytes(1))["__metadata__"]
    assert set(full) - set(md) == set(PROVENANCE_KEYS) | {"prov"}


def test_lean_slice_reads_back_with_same_data_and_digests(cifar):
    lean = MultisizeBuffer.from_bytes(cifar.to_bytes(7, provenance=False))
    assert lean.meta.digests == cifar.meta.digests[:7] and lean.digest == cifar.subset(7).digest
    assert not lean.meta.has_provenance and cifar.meta.has_provenance
    assert lean.meta.method == "" and lean.meta.config == {} and lean.meta.accuracy == {} and lean.meta.extra == {}
    assert lean.meta.provenance_digest == "" and len(cifar.meta.provenance_digest) == 22
    assert (lean.class_names, lean.labels, lean.meta.mean, lean.meta.std, lean.factor) == (
        cifar.class_names, cifar.labels, cifar.meta.mean, cifar.meta.std, cifar.factor)
    np.testing.assert_array_equal(lean.stored_images(), cifar.stored_images(7))
    assert lean.to_bytes() == lean.to_bytes(provenance=True) == cifar.to_bytes(7, provenance=False)
    assert cifar.lean().to_bytes() == cifar.to_bytes(provenance=False)


def test_bytes_for_and_largest_fitting_are_exact_for_both_forms(cifar, tmp_path):
    path = tmp_path / "b.safetensors"
    cifar.save(path)
    for n in (1, 2, 3, 17, 50):
        for prov in (True, False):
            data = cifar.to_bytes(n, provenance=prov)
            assert len(data) == cifar.bytes_for(n, provenance=prov) == cifar.meta.bytes_for(n, provenance=prov)
            out = io.BytesIO()
            assert slice_file(path, out, n, provenance=prov) == len(data) and out.getvalue() == data
            assert cifar.largest_fitting(len(data), provenance=prov) == n
            assert cifar.largest_fitting(len(data) - 1, provenance=prov) == n - 1
            d = ipc_for_bytes(cifar, len(data), provenance=prov)
            assert (d.n, d.bytes) == (n, len(data))
            assert ipc_for_bytes(read_meta(path), len(data) - 1, provenance=prov).n == n - 1
            assert delta_bytes(cifar, 0, n, provenance=prov) == len(data)
    assert cifar.bytes_for(0, provenance=False) == 0
    d = ipc_for_bytes(cifar, cifar.bytes_for(1, provenance=False) - 1, provenance=False)
    assert d.n == 0 and "lean n=1" in d.reason
    # budgets between the two sizes: only the lean form fits
    assert ipc_for_bytes(cifar, cifar.bytes_for(1, provenance=False)).n == 0
    for bad in ("no", None, 0):
        with pytest.raises(ConfigError, match="provenance"):
            cifar.bytes_for(1, provenance=bad)


def test_with_accuracy_keeps_digests_and_lean_bytes(cifar):
    more = cifar.with_accuracy({3: 0.42})
    assert more.meta.digests == cifar.meta.digests and more.meta.provenance_digest != cifar.meta.provenance_digest
    assert more.to_bytes(4, provenance=False) == cifar.to_bytes(4, provenance=False)
    lean = cifar.subset(2).lean()
    annotated = lean.with_accuracy({1: 0.3})  # a lean buffer gains provenance with only this table
    assert annotated.meta.has_provenance and annotated.meta.accuracy == {1: {"mean": 0.3}}
    assert annotated.meta.method == "" and annotated.to_bytes(provenance=False) == lean.to_bytes()


def test_delta_onto_lean_and_full(cifar):
    lean5 = MultisizeBuffer.from_bytes(cifar.to_bytes(5, provenance=False))
    delta = cifar.ranks(5, 12)
    assert "prov" not in _header(delta)["__metadata__"] and "config" not in _header(delta)["__metadata__"]
    assert MultisizeBuffer.append_ranks(lean5, delta).to_bytes() == cifar.to_bytes(12, provenance=False)
    assert MultisizeBuffer.append_ranks(cifar.subset(5), delta).to_bytes() == cifar.to_bytes(12)
    assert MultisizeBuffer.append_ranks(None, cifar.ranks(0, 3)).to_bytes() == cifar.to_bytes(3, provenance=False)


def test_provenance_tampering_is_detected(cifar, tmp_path):
    raw = cifar.to_bytes(2)
    hdr = _header(raw)
    (hlen,) = struct.unpack("<Q", raw[:8])
    md = hdr["__metadata__"]
    acc = json.loads(md["accuracy"])
    acc["1"]["mean"] = 0.99  # inflate the reported accuracy, keep everything else
    md["accuracy"] = json.dumps(acc, separators=(",", ":"), sort_keys=True)
    js = json.dumps(hdr, separators=(",", ":")).encode()
    js += b" " * ((-len(js)) % 8)
    bad = struct.pack("<Q", len(js)) + js + raw[8 + hlen:]
    with pytest.raises(BufferFormatError, match="provenance digest mismatch"):
        MultisizeBuffer.from_bytes(bad)
    path = tmp_path / "bad.safetensors"
    path.write_bytes(bad)
    for fn in (lambda: MultisizeBuffer.load(path), lambda: read_meta(path),
               lambda: slice_file(path, io.BytesIO(), 1, provenance=False)):
        with pytest.raises(BufferFormatError, match="provenance digest mismatch"):
            fn()


def test_class_names_with_commas_labels_and_factor_round_trip():
    x = np.random.default_rng(1).random((3, 2, 1, 4, 4), dtype=np.float32)
    buf = MultisizeBuffer.from_class_major(x, class_names=["a,b", "[c", "d"], labels=[7, 3, 0], dataset="t",
                                           mean=[0.1], std=[0.3], factor=2, method="m", dtype="float16")
    md = _header(buf.to_bytes(provenance=False))["__metadata__"]
    assert md["classes"] == '["a,b","[c","d"]' and md["labels"] == "7,3,0" and md["factor"] == "2"
    back = MultisizeBuffer.from_bytes(buf.to_bytes(1, provenance=False))
    assert back.class_names == ("a,b", "[c", "d") and back.labels == (7, 3, 0) and back.factor == 2
    buf2 = MultisizeBuffer.from_class_major(x, class_names=["x", "[y", "z"], dataset="t", mean=[0.1], std=[0.3],
                                            method="m")
    assert _header(buf2.to_bytes())["__metadata__"]["classes"] == "x,[y,z"
    assert MultisizeBuffer.from_bytes(buf2.to_bytes()).class_names == ("x", "[y", "z")


def test_cli_slice_lean(cifar, tmp_path, capsys):
    import argparse

    from edgecond.commands.buffer import cmd_info, cmd_slice

    path, out = tmp_path / "b.safetensors", tmp_path / "s.safetensors"
    cifar.save(path)
    args = argparse.Namespace(buffer=str(path), ipc=None, max_bytes=str(cifar.bytes_for(3, provenance=False)),
                              output=str(out), lean=True)
    assert cmd_slice(args) == 0
    assert out.read_bytes() == cifar.to_bytes(3, provenance=False)
    args.lean = False
    assert cmd_slice(args) == 0
    assert out.read_bytes() == cifar.to_bytes(2)
    capsys.readouterr()
    assert cmd_info(argparse.Namespace(buffer=str(path), json=True)) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["has_provenance"] and info["sizes"][0]["lean_bytes"] == cifar.bytes_for(1, provenance=False)
    assert cmd_info(argparse.Namespace(buffer=str(out), json=False)) == 0
    assert cmd_slice(argparse.Namespace(buffer=str(path), ipc=4, max_bytes=None, output=str(out), lean=True)) == 0
    assert cmd_info(argparse.Namespace(buffer=str(out), json=False)) == 0
    assert "provenance none" in capsys.readouterr().out


_small = dict(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def buffers(draw):
    k = draw(st.integers(1, 3))
    n = draw(st.integers(1, 6))
    factor = draw(st.sampled_from([1, 2]))
    dtype = draw(st.sampled_from(["uint8", "float16", "float32"]))
    soft = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.random((k, n, 3, 4, 4), dtype=np.float32)
    s = rng.normal(size=(k, n, factor * factor, 2)).astype(np.float32) if soft else None
    buf = MultisizeBuffer.from_class_major(
        x, class_names=[f"c{i}" for i in range(k)], dataset="toy", mean=[0.5] * 3, std=[0.25] * 3, factor=factor,
        method="mdc", config={"seed": 1, "lr": 0.01}, dtype=dtype, soft_labels=s, extra={"mls": [1, 2]},
        labels=draw(st.sampled_from([None, list(range(k))[::-1]])))
    return buf.with_accuracy({1: 0.5}) if draw(st.booleans()) else buf


@settings(**_small)
@given(buf=buffers(), data=st.data())
def test_property_lean_slices(buf, data):
    m = data.draw(st.integers(1, buf.ipc))
    n = data.draw(st.integers(1, m))
    lean_m = MultisizeBuffer.from_bytes(buf.to_bytes(m, provenance=False))
    full_m = MultisizeBuffer.from_bytes(buf.to_bytes(m))
    want = buf.to_bytes(n, provenance=False)
    assert len(want) == buf.bytes_for(n, provenance=False)
    assert lean_m.to_bytes(n) == lean_m.to_bytes(n, provenance=False) == want  # lean of lean
    assert full_m.to_bytes(n, provenance=False) == want  # lean of full slice
    assert lean_m.meta.digests[:n] == buf.meta.digests[:n]
    if n < m:
        delta = buf.ranks(n, m)
        grown = MultisizeBuffer.append_ranks(MultisizeBuffer.from_bytes(want), delta)
        assert grown.to_bytes() == lean_m.to_bytes()
