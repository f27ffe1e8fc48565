"""Fuzz the buffer reader: seeded mutations (bit flips, byte edits, truncations, header edits,
length-prefix edits) of valid files and deltas. Every mutated input must either raise
BufferFormatError or read back exactly the original content; nothing else may escape."""
from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest

from edgecond.buffer import MultisizeBuffer, read_meta, slice_file
from edgecond.errors import BufferFormatError

N_MUTANTS = 1500  # per run; ~3 s on 2 cores


def _bases():
    rng = np.random.default_rng(123)
    out = []
    for dtype, factor, soft in (("uint8", 1, False), ("float16", 2, True), ("float32", 1, True)):
        x = rng.random((3, 4, 3, 4, 4), dtype=np.float32)
        s = rng.normal(size=(3, 4, factor * factor, 3)).astype(np.float32) if soft else None
        buf = MultisizeBuffer.from_class_major(
            x, class_names=["a", "b", "c"], dataset="toy", mean=[0.5] * 3, std=[0.2] * 3, factor=factor,
            method="mdc", config={"lr": 0.1}, dtype=dtype, soft_labels=s, extra={"mls": [1, 3]},
        ).with_accuracy({1: 0.2, 4: 0.4})
        out.append(buf)
    out.append(out[0].lean())  # a lean file: essential metadata only (no 'prov', no provenance keys)
    out.append(MultisizeBuffer.from_class_major(  # labels != 0..K-1 and names needing the JSON-array form
        rng.random((3, 4, 1, 4, 4), dtype=np.float32), class_names=["a,1", "b", "c"], labels=[5, 0, 9],
        dataset="toy", mean=[0.5], std=[0.2], method="m", dtype="uint8"))
    return out


def _header_span(raw: bytes) -> tuple[int, int]:
    return 8, 8 + struct.unpack("<Q", raw[:8])[0]


_JSON_CHARS = b'{}[]":,0123456789 -.eE\\abcdefxyzU'


def mutate(raw: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(raw)
    kind = int(rng.integers(0, 10))
    h0, h1 = _header_span(raw)
    if kind == 0:  # flip 1-3 random bits anywhere
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(0, len(b)))
            b[i] ^= 1 << int(rng.integers(0, 8))
    elif kind == 1:  # flip a bit in the data section
        i = int(rng.integers(h1, len(b)))
        b[i] ^= 1 << int(rng.integers(0, 8))
    elif kind == 2:  # truncate
        return bytes(b[: int(rng.integers(0, len(b)))])
    elif kind == 3:  # append junk
        return bytes(b) + rng.bytes(int(rng.integers(1, 64)))
    elif kind == 4:  # replace a header byte with a JSON-ish character
        i = int(rng.integers(h0, h1))
        b[i] = _JSON_CHARS[int(rng.integers(0, len(_JSON_CHARS)))]
    elif kind == 5:  # delete or insert a header byte (length prefix left as is)
        i = int(rng.integers(h0, h1))
        if rng.random() < 0.5:
            del b[i]
        else:
            b.insert(i, _JSON_CHARS[int(rng.integers(0, len(_JSON_CHARS)))])
    elif kind == 6:  # edit the length prefix
        choices = [0, 1, h1 - 8 - 8, h1 - 8 + 8, 2**63, 2**20 + 8, int(rng.integers(0, 2**64, dtype=np.uint64))]
        b[:8] = struct.pack("<Q", choices[int(rng.integers(0, len(choices)))] % 2**64)
    elif kind == 7:  # structured header edit: change one number/string value, keep the file consistent
        hdr = json.loads(raw[h0:h1])
        md = hdr["__metadata__"]
        key = sorted(md)[int(rng.integers(0, len(md)))]
        v = md[key]
        if v:
            j = int(rng.integers(0, len(v)))
            v = v[:j] + chr(int(rng.integers(32, 127))) + v[j + 1:]
        md[key] = v
        if rng.random() < 0.3:
            t = "images"
            hdr[t]["shape"][0] = int(rng.integers(0, 6))
        js = json.dumps(hdr, separators=(",", ":")).encode()
        js += b" " * ((-len(js)) % 8)
        return struct.pack("<Q", len(js)) + js + raw[h1:]
    elif kind == 9:  # replace one header value (tensor field or metadata value) by an odd JSON value
        hdr = json.loads(raw[h0:h1])
        odd = [None, True, -1, 0, 2**70, 1e400, 1.5, "", "x", [], {}, [[[]]], {"a": 1}, [1, 2, 3],
               "[1,2]", "{}", "[]", "null", "1e999", "edgecond/1", "\u0000"]
        value = odd[int(rng.integers(0, len(odd)))]
        section = sorted(hdr)[int(rng.integers(0, len(hdr)))]
        target = hdr[section]
        key = sorted(target)[int(rng.integers(0, len(target)))] if isinstance(target, dict) and target else None
        if key is None or rng.random() < 0.1:
            hdr[section] = value
        elif section == "__metadata__" and not isinstance(value, str):
            target[key] = json.dumps(value) if rng.random() < 0.8 else value
        else:
            target[key] = value
        js = json.dumps(hdr, separators=(",", ":")).encode()
        js += b" " * ((-len(js)) % 8)
        return struct.pack("<Q", len(js)) + js + raw[h1:]
    else:  # overwrite a run of bytes with random bytes
        i = int(rng.integers(0, len(b)))
        run = rng.bytes(int(rng.integers(1, 16)))
        b[i:i + len(run)] = run[: len(b) - i]
    return bytes(b)


def _same(a: MultisizeBuffer, b: MultisizeBuffer) -> bool:
    return (a.meta == b.meta and a.to_bytes() == b.to_bytes()
            and np.array_equal(a.images_class_major(), b.images_class_major()))


def test_fuzz_mutated_buffers_and_deltas(tmp_path):
    rng = np.random.default_rng(20260611)
    bases = _bases()
    raws = [b.to_bytes() for b in bases]
    deltas = [(b, b.ranks(2, 4)) for b in bases]
    outcomes = {"rejected": 0, "identical": 0}
    path = tmp_path / "m.safetensors"
    for i in range(N_MUTANTS):
        j = i % len(bases)
        if i % 5 == 4:  # a mutated delta appended to the genuine 2-rank prefix
            buf, delta = deltas[j]
            bad = mutate(delta, rng)
            try:
                grown = MultisizeBuffer.append_ranks(buf.subset(2), bad)
            except BufferFormatError:
                outcomes["rejected"] += 1
                continue
            assert grown.to_bytes() == buf.to_bytes(), f"mutant {i}: delta accepted with different content"
            assert grown.meta == buf.meta
            outcomes["identical"] += 1
            continue
        bad = mutate(raws[j], rng)
        route = i % 4
        try:
            if route == 0:
                got = MultisizeBuffer.from_bytes(bad)
            elif route == 1:
                path.write_bytes(bad)
                got = MultisizeBuffer.load(path, mmap=True)
                got.training_arrays()  # reading everything verifies everything
            elif route == 2:
                path.write_bytes(bad)
                got = MultisizeBuffer.from_bytes(bad, verify=False)
                meta = read_meta(io.BytesIO(bad))
                assert meta == got.meta
                got.verify()
            else:
                out = io.BytesIO()
                slice_file(io.BytesIO(bad), out, 1)
                got = MultisizeBuffer.from_bytes(bad)
                assert out.getvalue() == got.to_bytes(1)
        except BufferFormatError as exc:
            assert str(exc), "empty message"
            outcomes["rejected"] += 1
            continue
        assert _same(got, bases[j]), f"mutant {i}: accepted with different content"
        outcomes["identical"] += 1
    assert outcomes["rejected"] + outcomes["identical"] == N_MUTANTS
    assert outcomes["rejected"] > 0.8 * N_MUTANTS


@pytest.mark.parametrize("seed", range(3))
def test_fuzz_random_bytes_and_foreign_safetensors(seed, tmp_path):
    from safetensors.numpy import save

    rng = np.random.default_rng(seed)
    candidates = [b"", rng.bytes(7), rng.bytes(int(rng.integers(8, 4000))),
                  save({"images": np.zeros((1, 1, 1, 2, 2), np.uint8)}),
                  save({"w": np.ones(3, np.float32)}, metadata={"format": "pt"}),
                  save({"images": np.zeros((1, 1, 1, 2, 2), np.uint8)}, metadata={"format": "edgecond/1"}),
                  b"\x08\x00\x00\x00\x00\x00\x00\x00" + b"[" * 8,
                  struct.pack("<Q", 4096) + b"[" * 4096]
    for raw in candidates:
        with pytest.raises(BufferFormatError):
            MultisizeBuffer.from_bytes(raw)
        p = tmp_path / "x.safetensors"
        p.write_bytes(raw)
        with pytest.raises(BufferFormatError):
            MultisizeBuffer.load(p)
