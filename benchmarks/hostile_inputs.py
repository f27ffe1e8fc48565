"""Hostile-input suite: seeded mutant families of every file and value edgecond reads.

Families (issue 21): rank / factor / shape bombs in buffer headers, decode bombs, NaN pixels in
re-signed buffers, bundle path escapes and symlinks, malformed manifests, ONNX models with
external data, tampered checkpoints, bad Flower transfer records, hostile ``.npz`` datasets and
bad command-line values. Every case is either *valid* (must be accepted, and the result is
checked) or *hostile* (must end in exactly one :class:`~edgecond.errors.EdgecondError`).
Outcomes per case:

- ``error``: a project error (hostile case) — the wanted outcome;
- ``ok``: a valid case accepted with the right result;
- ``traceback``: any other exception escaped;
- ``hang``: the case took more than ``--case-seconds`` (default 2 s) of CPU time (process time: a
  spinning reader is caught, a busy shared machine does not turn slow cases into "hangs");
- ``wrong``: a hostile case accepted, or a valid case rejected / read back wrong.

The CI test (``tests/test_hostile.py``) runs the default suite and asserts
``traceback == hang == wrong == 0`` and ``>= 2000`` cases. Run it by hand::

    .venv/bin/python benchmarks/hostile_inputs.py [--seed 0] [--scale 1] [--json out.json]
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import importlib
import io
import json
import os
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from edgecond.errors import EdgecondError  # noqa: E402

OUTCOMES = ("error", "ok", "traceback", "hang", "wrong")
# (label, run, valid): valid=True: run() must return True (result checked); False: run() must raise a
# project error; None: either (a mutation that may or may not keep the input well-formed).
Case = tuple[str, Callable[[], Any], "bool | None"]


# ----------------------------------------------------------------------------- signed buffer files


def _b64(d: bytes) -> str:
    return base64.urlsafe_b64encode(d).rstrip(b"=").decode("ascii")


def signed_buffer(data: np.ndarray, *, factor: int = 1, dtype: str = "U8", classes: list[str] | None = None,
                  soft: np.ndarray | None = None, extra_md: dict | None = None) -> bytes:
    """A buffer file with a *correct* digest chain for rank-major ``data [n, K, C, H, W]`` (any values:
    the writer's checks are bypassed, as a hostile writer would)."""
    from edgecond.buffer import FORMAT, TensorSpec, _data_order, _encode_header, _seed

    n, k, c, h, w = data.shape
    md = {"format": FORMAT, "dataset": "hostile", "classes": ",".join(classes or [f"c{i}" for i in range(k)]),
          "mean": ",".join(["0.5"] * c), "std": ",".join(["0.25"] * c)}
    if factor != 1:
        md["factor"] = str(factor)
    specs = [TensorSpec("images", dtype, (k, c, h, w))]
    arrays = {"images": data}
    if soft is not None:
        md["soft"] = '{"kind":"logits"}'
        specs.append(TensorSpec("soft_labels", "F32", tuple(soft.shape[1:])))
        arrays["soft_labels"] = soft.astype("<f4")
    md.update(extra_md or {})
    order = _data_order(specs)
    prev = _seed(md, order)
    chain = []
    for r in range(n):
        hsh = hashlib.sha256(prev)
        for t in order:
            hsh.update(np.ascontiguousarray(arrays[t.name][r]).tobytes())
        prev = hsh.digest()[:16]
        chain.append(_b64(prev))
    md["digest"] = "".join(chain)
    out = io.BytesIO()
    out.write(_encode_header(md, order, n))
    for t in order:
        out.write(np.ascontiguousarray(arrays[t.name]).tobytes())
    return out.getvalue()


def declared_header(shape: list[int], *, dtype: str = "U8", digest_ranks: int | None = None,
                    factor: str | None = None, soft_shape: list[int] | None = None) -> tuple[bytes, int]:
    """A header declaring ``shape`` (possibly absurd) and the data size it implies; no data."""
    from edgecond.buffer import FORMAT

    n, k, c, h, w = shape
    item = {"U8": 1, "F16": 2, "F32": 4}[dtype]
    md = {"format": FORMAT, "dataset": "hostile", "classes": ",".join(f"c{i}" for i in range(min(k, 50))),
          "mean": ",".join(["0.5"] * min(c, 50)), "std": ",".join(["0.25"] * min(c, 50)),
          "digest": "@DIGEST@"}
    if factor is not None:
        md["factor"] = factor
    size = n * k * c * h * w * item
    obj: dict[str, Any] = {"__metadata__": md}
    tensors = [("images", dtype, shape, size)]
    if soft_shape is not None:
        md["soft"] = '{"kind":"logits"}'
        ssize = int(np.prod(soft_shape, dtype=object)) * 4
        tensors.append(("soft_labels", "F32", soft_shape, ssize))
    off = 0
    for name, dt, shp, sz in sorted(tensors, key=lambda t: (-{"U8": 1, "F16": 2, "F32": 4}[t[1]], t[0])):
        obj[name] = {"dtype": dt, "shape": shp, "data_offsets": [off, off + sz]}
        off += sz
    digest = b"A" * (22 * (n if digest_ranks is None else digest_ranks))
    js = json.dumps(obj, separators=(",", ":")).encode().replace(b"@DIGEST@", digest)  # no 1 MB json.dumps
    js += b" " * ((-len(js)) % 8)
    return struct.pack("<Q", len(js)) + js, off


# ----------------------------------------------------------------------------- families


def fam_rank_bomb(rng: np.random.Generator, tmp: Path, scale: int) -> Iterator[Case]:
    """Headers claiming 10^3..10^15 ranks / huge K, C, H, W, as sparse files whose size matches."""
    from edgecond.buffer import MultisizeBuffer, read_meta

    for i in range(400 * scale):
        n = int(10 ** rng.uniform(3, 15))
        shape = [n, 1, 1, 1, 1]
        j = int(rng.integers(0, 5))
        if j and rng.random() < 0.5:
            shape[j] = int(10 ** rng.uniform(4, 12))
        head, size = declared_header(shape, digest_ranks=int(rng.choice([0, 1, 10, 47662])))
        path = tmp / f"rank{i}.safetensors"
        with open(path, "wb") as f:
            f.write(head)
            if size < 2**40:
                f.truncate(len(head) + size)  # sparse: the bytes are "present"
        reader = [lambda p=path: read_meta(p), lambda p=path: MultisizeBuffer.load(p),
                  lambda p=path: MultisizeBuffer.load(p, mmap=False)][i % 3]
        yield f"n={n} shape={shape}", reader, False


def fam_factor_bomb(rng: np.random.Generator, tmp: Path, scale: int) -> Iterator[Case]:
    """Signed (valid-digest) buffers with factor = H = W up to 4096, or decodes above the budget."""
    from edgecond.buffer import MAX_FACTOR, MultisizeBuffer

    for i in range(300 * scale):
        kind = i % 3
        if kind == 0:  # factor above the cap, H = W = factor (the 65 kB -> 32 GiB reproducer)
            f = int(rng.choice([9, 12, 16, 32, 64, 128, 256]))
            data = rng.integers(0, 256, (1, 1, 1, f, f), dtype=np.uint8)
            raw = signed_buffer(data, factor=f)
            yield f"factor={f}", lambda raw=raw: MultisizeBuffer.from_bytes(raw).training_arrays(), False
        elif kind == 1:  # legal factor, decode above a small budget
            f = int(rng.integers(2, MAX_FACTOR + 1))
            side = f * int(rng.integers(1, 5))
            data = rng.integers(0, 256, (2, 2, 1, side, side), dtype=np.uint8)
            raw = signed_buffer(data, factor=f)
            budget = int(rng.integers(1, 12 * 2 * 2 * side * side * f * f))  # below the need
            yield (f"factor={f} side={side} budget={budget}",
                   lambda raw=raw, b=budget: MultisizeBuffer.from_bytes(raw).training_arrays(max_bytes=b), False)
        else:  # valid: within the budget, decoded size must be exact
            f = int(rng.integers(1, MAX_FACTOR + 1))
            side = f * int(rng.integers(1, 4))
            n, k = int(rng.integers(1, 4)), int(rng.integers(1, 4))
            data = rng.integers(0, 256, (n, k, 1, side, side), dtype=np.uint8)
            raw = signed_buffer(data, factor=f)

            def run(raw=raw, n=n, k=k, f=f, side=side):
                x, y = MultisizeBuffer.from_bytes(raw).training_arrays(max_bytes="64MiB")
                return x.shape == (n * k * f * f, 1, side, side) and len(y) == len(x) and np.isfinite(x).all()

            yield f"valid factor={f} side={side}", run, True


def fam_shape_bomb(rng: np.random.Generator, tmp: Path, scale: int) -> Iterator[Case]:
    """K, C, H, W and soft-label width above the caps; NaN/inf/out-of-range pixels in re-signed files."""
    from edgecond.buffer import MAX_CHANNELS, MAX_CLASSES, MAX_SIDE, MAX_SOFT_DIM, MultisizeBuffer

    caps = {1: MAX_CLASSES, 2: MAX_CHANNELS, 3: MAX_SIDE, 4: MAX_SIDE}
    for i in range(300 * scale):
        kind = i % 3
        if kind == 0:
            j = int(rng.integers(1, 5))
            shape = [1, 1, 1, 1, 1]
            shape[j] = caps[j] + int(rng.integers(1, 10 ** 6))
            head, size = declared_header(shape, digest_ranks=1)
            raw = head + b"\0" * min(size, 64)
            yield f"shape={shape}", lambda raw=raw: MultisizeBuffer.from_bytes(raw), False
        elif kind == 1:
            width = MAX_SOFT_DIM + int(rng.integers(1, 10 ** 6))
            head, size = declared_header([1, 1, 1, 2, 2], digest_ranks=1, soft_shape=[1, 1, 1, width])
            raw = head + b"\0" * 64
            yield f"soft width={width}", lambda raw=raw: MultisizeBuffer.from_bytes(raw), False
        else:
            bad = [np.nan, np.inf, -np.inf, -0.5, 1.5, 65504.0][int(rng.integers(0, 6))]
            data = rng.random((3, 2, 1, 4, 4)).astype("<f2")
            data[int(rng.integers(0, 3)), int(rng.integers(0, 2)), 0, int(rng.integers(0, 4)), 0] = bad
            raw = signed_buffer(data, dtype="F16")
            which = i % 2
            run = (lambda raw=raw: MultisizeBuffer.from_bytes(raw).check_values()) if which else \
                  (lambda raw=raw: MultisizeBuffer.from_bytes(raw).training_arrays())
            yield f"pixel {bad}", run, False


def _fake_bundle(d: Path, files: dict | None = None, **fields) -> dict:
    """A bundle directory with a schema-valid manifest (artifacts are empty placeholder files)."""
    from edgecond.deploy import BUNDLE_FORMAT, BUNDLE_VERSION

    d.mkdir(parents=True, exist_ok=True)
    names = {"training_model": "training_model.onnx", "eval_model": "eval_model.onnx",
             "optimizer_model": "optimizer_model.onnx", "checkpoint": "checkpoint", "buffer": "buffer.safetensors"}
    for n in names.values():
        (d / n).write_bytes(b"")
    m = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "files": dict(names, **(files or {})),
         "mean": [0.5], "std": [0.25], "batch_size": 8, "num_classes": 10, "logits_name": "logits",
         "image_shape": [1, 8, 8], "ipc": 1, "factor": 1,
         "training": {"epochs": 3, "lr": 0.01, "schedule": "step", "optimizer": "sgd",
                      "augment": {"enabled": True, "crop_pad": 1, "flip": False}}}
    m.update(fields)
    (d / "manifest.json").write_text(json.dumps(m))
    return m


def fam_path_escape(rng: np.random.Generator, tmp: Path, scale: int) -> Iterator[Case]:
    """files.* absolute, with '..', through symlinks out of the bundle, to devices and directories."""
    from edgecond.deploy import read_manifest

    outside = tmp / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.bin").write_bytes(b"secret")
    roles = ("training_model", "eval_model", "optimizer_model", "checkpoint", "buffer", "eval")
    for i in range(300 * scale):
        d = tmp / f"bundle{i}"
        role = roles[i % len(roles)]
        kind = (i // len(roles)) % 8
        if kind == 0:
            _fake_bundle(d, {role: str(outside / "secret.bin")})
        elif kind == 1:
            _fake_bundle(d, {role: "../outside/secret.bin"})
        elif kind == 2:
            _fake_bundle(d, {role: "sub/../../outside/secret.bin"})
        elif kind == 3:
            _fake_bundle(d, {role: "link.bin"})
            os.symlink(outside / "secret.bin", d / "link.bin")
        elif kind == 4:
            _fake_bundle(d, {role: "dirlink/secret.bin"})
            os.symlink(outside, d / "dirlink")
        elif kind == 5:
            _fake_bundle(d, {role: "zero"})
            os.symlink("/dev/zero", d / "zero")
        elif kind == 6:
            _fake_bundle(d, {role: "adir"})
            (d / "adir").mkdir()
        else:  # the manifest itself is a link out of the bundle
            _fake_bundle(d)
            (outside / f"m{i}.json").write_text((d / "manifest.json").read_text())
            (d / "manifest.json").unlink()
            os.symlink(outside / f"m{i}.json", d / "manifest.json")
        yield f"{role} escape kind {kind}", lambda d=d: read_manifest(d), False
    for i in range(20 * scale):  # valid: plain names and a subdirectory inside the bundle
        d = tmp / f"good{i}"
        _fake_bundle(d, {"eval": "sub/eval.safetensors"})
        (d / "sub").mkdir()
        (d / "sub" / "eval.safetensors").write_bytes(b"")
        yield "valid bundle", lambda d=d: read_manifest(d)["files"]["eval"] == "sub/eval.safetensors", True


_BAD_VALUES: dict[str, list] = {
    "batch_size": [0, -1, 1e9, 10**9, "8", None, True, 8.5, [8]],
    "mean": ["0.5", [], [0.5, 0.5], [None], ["a"], 0.5, [1e400]],
    "std": [[0], [0.0], [-1], [1e-12], "x", [], [0.25, 0.25], [None]],
    "num_classes": [0, -3, "10", 10**9, None, 2.5],
    "logits_name": ["", None, 3, []],
    "files": ["buffer.safetensors", [], None, {"buffer": 3}, {"bogus": "x"}],
    "image_shape": [[1, 8], [0, 8, 8], [1, 8, 10**6], "1,8,8", [1.0, 8, 8]],
    "training.epochs": [0, -5, "3", 1e9, 10**9, None, 2.5, True],
    "training.lr": [0, -0.1, "abc", None, 1e9, float("nan")],
    "training.schedule": ["cosine", 3, None],
    "training.augment": [None, "yes", [], {}, {"enabled": "yes"}],
    "training.augment.crop_pad": [10**6, -1, "1", 1.5, 8, None],
    "training.augment.flip": ["no", 1, None],
    "training": [None, [], "x"],
    "ipc": [0, -1, "2"],
    "factor": [0, "2", 2.5],
}


def fam_bad_manifest(rng: np.random.Generator, tmp: Path, scale: int) -> Iterator[Case]:
    """One manifest field set to a value of the wrong type or out of range (or removed)."""
    from edgecond.deploy import read_manifest

    keys = sorted(_BAD_VALUES)
    i = 0
    for rep in range(2 * scale):
        for key in keys:
            for value in _BAD_VALUES[key] + ["<missing>"]:
                d = tmp / f"manifest{i}"
                i += 1
                m = _fake_bundle(d)
                target, parts = m, key.split(".")
                for p in parts[:-1]:
                    target = target[p]
                if value == "<missing>":
                    if key in ("ipc", "factor", "image_shape", "training.schedule", "training.augment.crop_pad",
                               "training.augment.flip"):
                        continue  # optional fields
                    del target[parts[-1]]
                else:
                    target[parts[-1]] = value
                text = json.dumps(m).replace("NaN", "1e999")  # NaN is not JSON; 1e999 parses to inf
                (d / "manifest.json").write_text(text)
                yield f"{key}={value!r}", lambda d=d: read_manifest(d), False
    for j in range(40 * scale):  # garbage manifests
        d = tmp / f"garbage{j}"
        _fake_bundle(d)
        raw = bytearray((d / "manifest.json").read_bytes())
        for _ in range(int(rng.integers(1, 4))):
            raw[int(rng.integers(0, len(raw)))] = int(rng.integers(0, 256))
        (d / "manifest.json").write_bytes(bytes(raw))

        def run(d=d):
            try:
                read_manifest(d)
            except EdgecondError:
                raise
            return True  # a flip that keeps the manifest valid (e.g. inside a class name) is fine

        yield "garbage manifest", run, None


def _pb_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _pb(num: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _pb_varint(num << 3) + _pb_varint(payload)
    return _pb_varint((num << 3) | 2) + _pb_varint(len(payload)) + payload


def _tensor(external: str | None) -> bytes:
    t = _pb(1, 4) + _pb(2, 1) + _pb(8, b"w")  # dims=[4], data_type=FLOAT, name="w"
    if external == "location":
        t += _pb(13, _pb(1, b"location") + _pb(2, b"../secret.bin")) + _pb(14, 1)
    elif external == "flag":
        t += _pb(14, 1)
    else:
        t += _pb(9, b"\0" * 16)  # raw_data
    return t


def _model(tensor: bytes, where: str) -> bytes:
    if where == "initializer":
        graph = _pb(5, tensor)
    elif where == "attribute":
        graph = _pb(1, _pb(5, _pb(1, b"value") + _pb(5, tensor)))
    elif where == "subgraph":
        inner = _pb(5, tensor)
        graph = _pb(1, _pb(5, _pb(1, b"then_branch") + _pb(6, inner)))
    else:  # a function's node attribute
        return _pb(1, 8) + _pb(7, b"") + _pb(25, _pb(7, _pb(5, _pb(1, b"v") + _pb(5, tensor))))
    return _pb(1, 8) + _pb(7, graph)


def fam_onnx_external(rng: np.random.Generator, tmp: Path, scale: int) -> Iterator[Case]:
    """ONNX models whose tensors point at external files (anywhere in the graph), and garbage bytes."""
    from edgecond.deploy import check_onnx_external_data

    wheres = ("initializer", "attribute", "subgraph", "function")
    for i in range(160 * scale):
        where = wheres[i % 4]
        kind = (i // 4) % 4
        path = tmp / f"model{i}.onnx"
        if kind == 0:
            path.write_bytes(_model(_tensor("location"), where))
            yield f"external {where}", lambda p=path: check_onnx_external_data(p), False
        elif kind == 1:
            path.write_bytes(_model(_tensor("flag"), where))
            yield f"external flag {where}", lambda p=path: check_onnx_external_data(p), False
        elif kind == 2:
            path.write_bytes(_model(_tensor(None), where))
            yield f"inline {where}", lambda p=path: check_onnx_external_data(p) is None, True
        else:
            good = _model(_tensor(None), where)
            cut = good[:int(rng.integers(1, len(good)))] + rng.bytes(int(rng.integers(0, 3)))
            path.write_bytes(cut)

            def run(p=path):
                check_onnx_external_data(p)
                return True  # a truncation can still be a well-formed (shorter) message

            yield f"truncated {where}", run, None


def _ckpt_state(rng: np.random.Generator, shape=(2, 3, 1, 4, 4)) -> dict:
    import torch

    images = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    return {"config": {"iterations": 10, "method": "dm"}, "iteration": 4, "images": images,
            "optimizer": {"state": {0: {"momentum_buffer": torch.zeros(shape)}},
                          "param_groups": [{"lr": 0.1, "momentum": 0.5, "params": [0]}]},
            "matcher": {}, "hooks": {}, "rng": {"main": torch.Generator().get_state()},
            "history": {"iteration": [0, 1, 2, 3], "loss": [1.0, 0.9, 0.8, 0.7]}}


def fam_checkpoint(rng: np.random.Generator, tmp: Path, scale: int) -> Iterator[Case]:
    """Bit flips, truncations, re-signed edits (iteration, shapes, dtypes, keys, NaN) and bad JSON."""
    import torch

    from edgecond.condense.checkpoint import (check_resume_state, checkpoint_digest, flatten_state,
                                              load_checkpoint, save_checkpoint)

    shape = (2, 3, 1, 4, 4)

    def resume(p):
        state = load_checkpoint(p)
        return check_resume_state(state, p, iterations=10, images_shape=shape, images_dtype=torch.float32)

    base = tmp / "base.ckpt"
    save_checkpoint(base, _ckpt_state(rng, shape))
    raw = base.read_bytes()
    edits: list[tuple[str, Callable[[dict], None]]] = [
        ("iteration=-5", lambda s: s.update(iteration=-5)),
        ("iteration=1000", lambda s: s.update(iteration=1000)),
        ("iteration=11", lambda s: s.update(iteration=11)),
        ("iteration='4'", lambda s: s.update(iteration="4")),
        ("iteration=4.0", lambda s: s.update(iteration=4.0)),
        ("iteration=True", lambda s: s.update(iteration=True)),
        ("images [2,1,...]", lambda s: s.update(images=torch.zeros(2, 1, 1, 4, 4))),
        ("images float64", lambda s: s.update(images=s["images"].double())),
        ("images NaN", lambda s: s["images"].view(-1).__setitem__(0, float("nan"))),
        ("images list", lambda s: s.update(images=[1, 2])),
        ("momentum shape", lambda s: s["optimizer"]["state"][0].update(momentum_buffer=torch.zeros(1, 3, 1, 4, 4))),
        ("optimizer str", lambda s: s.update(optimizer="sgd")),
        ("lr NaN", lambda s: s["optimizer"]["param_groups"][0].update(lr=float("nan"))),
        ("rng float", lambda s: s["rng"].update(main=torch.zeros(10))),
        ("rng missing", lambda s: s.update(rng={})),
        ("history str", lambda s: s.update(history={"loss": "x"})),
        ("config list", lambda s: s.update(config=[1])),
        *[(f"missing {k}", (lambda k: lambda s: s.pop(k))(k)) for k in
          ("config", "iteration", "images", "optimizer", "matcher", "hooks", "rng", "history")],
    ]
    for i in range(300 * scale):
        kind = i % 4
        path = tmp / f"ck{i}.ckpt"
        if kind == 0:  # bit flips anywhere (header JSON included)
            b = bytearray(raw)
            for _ in range(int(rng.integers(1, 4))):
                j = int(rng.integers(0, len(b)))
                b[j] ^= 1 << int(rng.integers(0, 8))
            path.write_bytes(bytes(b))
            yield "bit flip", lambda p=path: resume(p), False
        elif kind == 1:  # truncation / junk
            cut = raw[:int(rng.integers(0, len(raw)))] if rng.random() < 0.7 else raw + rng.bytes(16)
            path.write_bytes(cut)
            yield "truncated", lambda p=path: resume(p), False
        elif kind == 2:  # re-signed edits: the digest matches, the content is wrong
            label, edit = edits[(i // 4) % len(edits)]
            st = _ckpt_state(np.random.default_rng(i), shape)
            edit(st)
            save_checkpoint(path, st)
            yield f"re-signed {label}", lambda p=path: resume(p), False
        else:  # state JSON that is not JSON / refers to missing tensors, re-signed
            from safetensors.torch import save_file

            skeleton, tensors = flatten_state(_ckpt_state(np.random.default_rng(i), shape))
            bad = [json.dumps(skeleton)[:-3], '{"images": {"__tensor__": "nope"}}', "[" * 5000 + "]" * 5000,
                   '{"a": NaN}', '{"x": {"__items__": 5}}', "null"][(i // 4) % 6]
            meta = {"format": "edgecond-condense-checkpoint", "version": "2", "state": bad,
                    "digest": checkpoint_digest(bad, tensors)}
            save_file(tensors, str(path), metadata=meta)
            yield "bad state JSON", lambda p=path: resume(p), False
    for i in range(20 * scale):  # valid
        path = tmp / f"good{i}.ckpt"
        st = _ckpt_state(np.random.default_rng(10_000 + i), shape)
        save_checkpoint(path, st)
        yield "valid checkpoint", lambda p=path: resume(p) == 4, True


def fam_transfer(rng: np.random.Generator, tmp: Path, scale: int) -> Iterator[Case]:
    """Flower transfer records with wrong types/ranges for kind, have, target, nbytes, digest."""
    from edgecond.federated import validate_transfer

    bad = {"kind": ["FULL", 3, None, ""], "target": ["four", None, -1, 0, 10**12, 2.5, True, "<missing>"],
           "have": [-1, "0", 5, 1.0, None], "nbytes": [-1, "10", 2.5, None], "digest": [5, None, ["x"]]}
    good = {"kind": "delta", "have": 2, "target": 4, "nbytes": 100, "digest": "abc", "budget": 1000}
    i = 0
    for rep in range(8 * scale):
        for key, values in bad.items():
            for v in values:
                t = dict(good, kind=["full", "delta"][i % 2], have=0 if i % 2 == 0 else 2)
                i += 1
                if v == "<missing>":
                    t.pop(key)
                else:
                    t[key] = v
                if key == "have" and t["kind"] == "delta" and v == 5:
                    pass  # have >= target: invalid too
                yield f"{key}={v!r}", lambda t=t: validate_transfer(t), False
    for j in range(40 * scale):
        target = int(rng.integers(1, 1000))
        t = dict(good, kind="delta", have=int(rng.integers(0, target)), target=target)
        yield "valid transfer", lambda t=t: validate_transfer(t)["target"] == t["target"], True


def fam_npz(rng: np.random.Generator, tmp: Path, scale: int) -> Iterator[Case]:
    """npz datasets: empty training class, absurd/NaN labels, not a zip, .npy bombs."""
    from edgecond.data import load_dataset

    x = rng.integers(0, 255, (12, 4, 4), dtype=np.uint8)
    y = np.arange(12) % 3
    for i in range(60 * scale):
        path = tmp / f"d{i}.npz"
        kind = i % 6
        arrays = dict(x_train=x, y_train=y, x_test=x, y_test=y)
        if kind == 0:
            arrays["y_train"] = np.where(y == 1, 2, y)  # class 1 has no training image
        elif kind == 1:
            arrays["y_train"] = np.where(y == 1, int(10 ** rng.uniform(6, 18)), y)
        elif kind == 2:
            arrays["y_test"] = np.where(y == 1, [np.nan, np.inf, 1e30][i % 3], y).astype(float)
        if kind <= 2:
            np.savez(path, **arrays)
        elif kind == 3:
            path.write_bytes(rng.bytes(int(rng.integers(0, 200))))
        elif kind == 4:  # a zip whose .npy member declares 10^12 elements
            import zipfile

            with zipfile.ZipFile(path, "w") as zf:
                zf.writestr("x_train.npy", _npy_header((10 ** 12,)) + b"\0" * 64)
                for k in ("y_train", "x_test", "y_test"):
                    buf = io.BytesIO()
                    np.save(buf, arrays[k])
                    zf.writestr(f"{k}.npy", buf.getvalue())
        else:
            np.save(tmp / f"d{i}.npy", x)
            os.replace(tmp / f"d{i}.npy", path)  # a plain .npy named .npz
        yield f"npz kind {kind}", lambda p=path: load_dataset(f"npz:{p}"), False


def _npy_header(shape: tuple) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue()  # magic + header length + header


def fam_cli(rng: np.random.Generator, tmp: Path, scale: int) -> Iterator[Case]:
    """Bad command-line values and output paths: usage error (2) or a project error line, never a traceback."""
    import edgecond.condense  # noqa: F401 - warm the torch import so it is not timed as a case
    from edgecond.buffer import MultisizeBuffer
    from edgecond.cli import main

    buf_path = tmp / "b.safetensors"
    data = rng.random((2, 3, 1, 4, 4), dtype=np.float32)
    MultisizeBuffer.from_class_major(data, class_names=["a", "b"], dataset="toy", mean=[0.5], std=[0.2],
                                     method="m", dtype="uint8").save(buf_path)
    afile = tmp / "afile"
    afile.write_text("x")
    outs = [str(tmp), str(afile / "x.safetensors"), "/proc/edgecond-x.safetensors"]
    o_st, s_st, dep = str(tmp / "o.st"), str(tmp / "s.st"), str(tmp / "dep")
    ints = ["-1", "abc", "", "1.5", "1e9", "0x10", "--"]
    # option -> values that are all invalid for it (a valid value would start real work)
    options: list[tuple[list[str], list[str], list[str]]] = [
        (["condense", "--method", "dm", "--threads"], ints + ["0", "99999999999"], ["-o", o_st]),
        (["condense", "--method", "dm", "--ipc"], ints + ["0", "99999999999"], ["-o", o_st]),
        (["condense", "--method", "dm", "--factor"], ints + ["0", "9", "64"], ["-o", o_st]),
        (["condense", "--method", "dm", "--iterations"], ints, ["-o", o_st]),
        (["condense", "--method", "dm", "--seed"], ints, ["-o", o_st]),
        (["condense", "--method", "dm", "--checkpoint-every"], ints + ["0"], ["-o", o_st]),
        (["slice", str(buf_path), "--ipc"], ints + ["0", "4", "99999999999"], ["-o", s_st]),
        (["slice", str(buf_path), "--max-bytes"], ["-1", "abc", "", "1.5XB", "10", "nan", "inf"], ["-o", s_st]),
        (["evaluate", str(buf_path), "--seeds"], ints + ["0", "1001"], []),
        (["evaluate", str(buf_path), "--epochs"], ints + ["0"], []),
        (["evaluate", str(buf_path), "--threads"], ints + ["0"], []),
        (["evaluate-real", "--seeds"], ints + ["0"], []),
        (["evaluate-real", "--cutmix-prob"], ["-1", "abc", "", "1.5", "nan", "inf"], []),
        (["evaluate-real", "--batch-size"], ints + ["0"], []),
        (["deploy", str(buf_path), "--max-bytes", "1MB", "--batch"], ints + ["0", "5000"], ["-o", dep]),
        (["deploy", str(buf_path), "--max-bytes"], ["-1", "abc", "", "0", "1.5XB", "nan"], ["-o", dep]),
        (["deploy", str(buf_path), "--max-bytes", "1MB", "--lr"], ["-1", "abc", "", "0", "nan", "inf", "1e9"],
         ["-o", dep]),
        (["deploy", str(buf_path), "--max-bytes", "1MB", "--epochs"], ints + ["0", "100001"], ["-o", dep]),
        (["deploy", str(buf_path), "--max-bytes", "1MB", "--eval-samples"], ["-1", "abc", "", "1.5"], ["-o", dep]),
        (["export", "--batch"], ints + ["0"], ["-o", dep]),
        (["export", "--weight-decay"], ["-1", "abc", "", "nan", "inf"], ["-o", dep]),
    ]
    argvs: list[list[str]] = [[*head, v, *tail] for head, values, tail in options for v in values]
    for key, v in (("lr_img", "abc"), ("lr_img", "NaN"), ("lr_img", "Infinity"), ("batch_real", "2.5"),
                   ("batch_real", "[1]"), ("momentum_img", "true"), ("bogus", "1"), ("factor", "{}"),
                   ("dtype", "5"), ("init_seed", '"a"'), ("model_kwargs", "[]"), ("augment", "3")):
        argvs.append(["condense", "--method", "dm", "--set", f"{key}={v}", "--iterations", "0", "--threads", "1",
                      "-o", o_st])
    argvs.append(["condense", "--method", "dm", "--set", "novalue", "-o", o_st])
    for o in outs:
        argvs += [["condense", "--method", "dm", "--threads", "1", "-o", o],
                  ["condense", "--method", "dm", "--threads", "1", "-o", str(tmp / "ok.st"), "--checkpoint", o],
                  ["condense", "--method", "dm", "--threads", "1", "-o", str(tmp / "ok.st"), "--log", o],
                  ["slice", str(buf_path), "--ipc", "1", "-o", o],
                  ["evaluate", str(buf_path), "--json", o, "--threads", "1", "--seeds", "1"],
                  ["datasets", "--json", o]]
    argvs += [["export", "--dataset", "digits", "-o", str(afile)],
              ["deploy", str(buf_path), "--max-bytes", "1MB", "-o", str(afile)],
              ["deploy", str(buf_path), "--max-bytes", "1MB", "-o", "/proc/edgecond-bundle"],
              ["condense", "--method", "dm", "--threads", "1", "-o", ""],
              ["info", str(afile)], ["info", str(tmp)], ["info", "/dev/null"], ["info", str(tmp / "none.st")],
              ["slice", str(afile), "--ipc", "1", "-o", str(tmp / "z.st")]]
    import edgecond.cli as cli

    parser = cli.build_parser()  # built once: main() would rebuild it for every case (~50 ms)
    for rep in range(scale):
        for argv in argvs:
            def run(argv=argv):
                saved, cli.build_parser = cli.build_parser, lambda: parser
                try:
                    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                        rc = main(argv)
                finally:
                    cli.build_parser = saved
                if rc == 0:
                    return False  # accepted a bad value
                raise _UsageError(rc)

            yield " ".join(argv[:2] + argv[-4:]), run, False


class _UsageError(EdgecondError):
    """The CLI returned a non-zero status with one error line (counted as a project error)."""


FAMILIES: dict[str, Callable[[np.random.Generator, Path, int], Iterator[Case]]] = {
    "rank bomb": fam_rank_bomb,
    "factor/decode bomb": fam_factor_bomb,
    "shape bomb / NaN pixels": fam_shape_bomb,
    "bundle path escape": fam_path_escape,
    "bad manifest": fam_bad_manifest,
    "ONNX external data": fam_onnx_external,
    "checkpoint tampering": fam_checkpoint,
    "Flower transfer record": fam_transfer,
    "npz dataset": fam_npz,
    "bad CLI values": fam_cli,
}


# heavy modules a family needs, imported before its clock starts (torch alone takes seconds)
FAMILY_IMPORTS = {"checkpoint tampering": ("torch", "safetensors.torch", "edgecond.condense.checkpoint"),
                  "npz dataset": ("edgecond.data",), "bad CLI values": ("edgecond.condense", "edgecond.cli")}


def run_case(run: Callable[[], Any], valid: bool | None, case_seconds: float) -> tuple[str, str]:
    """Classify one case; ``valid=None``: either a project error or an accepted (well-formed) input is fine."""
    t0 = time.process_time()
    detail = ""
    try:
        result = run()
        if valid is None:
            outcome = "ok"
        elif valid:
            outcome = "ok" if isinstance(result, (bool, np.bool_)) and bool(result) else "wrong"
        else:
            outcome, detail = "wrong", f"accepted: {result!r:.80}"
    except EdgecondError as exc:
        outcome = "wrong" if valid else "error"
        detail = str(exc)[:160]
    except Exception as exc:  # noqa: BLE001 - exactly what the suite counts
        outcome, detail = "traceback", f"{type(exc).__name__}: {str(exc)[:160]}"
    if time.process_time() - t0 > case_seconds:
        outcome = "hang"
    return outcome, detail


def run_suite(*, seed: int = 0, scale: int = 1, families: list[str] | None = None,
              case_seconds: float = 2.0, tmp: str | os.PathLike | None = None) -> dict:
    """Run the families; returns ``{"families": {name: {outcome: count, "cases", "seconds"}}, "failures": [...]}``."""
    out: dict[str, Any] = {"seed": seed, "scale": scale, "families": {}, "failures": []}
    if tmp is None and os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        tmp = "/dev/shm"  # tmpfs: checkpoint fsyncs and thousands of small files cost no disk time
    with tempfile.TemporaryDirectory(prefix="hostile-", dir=tmp) as root:
        for fi, (name, fam) in enumerate(FAMILIES.items()):
            if families and name not in families:
                continue
            rng = np.random.default_rng([seed, fi])
            d = Path(root) / f"f{fi}"
            d.mkdir()
            counts = dict.fromkeys(OUTCOMES, 0)
            t_import = time.perf_counter()
            for module in FAMILY_IMPORTS.get(name, ()):
                importlib.import_module(module)
            out.setdefault("import_seconds", {})[name] = round(time.perf_counter() - t_import, 2)
            t0, c0 = time.perf_counter(), time.process_time()
            for label, run, valid in fam(rng, d, scale):
                outcome, detail = run_case(run, valid, case_seconds)
                counts[outcome] += 1
                if outcome in ("traceback", "hang", "wrong"):
                    out["failures"].append({"family": name, "case": label, "outcome": outcome, "detail": detail})
            counts["cases"] = sum(counts[o] for o in OUTCOMES)
            counts["seconds"] = round(time.perf_counter() - t0, 2)
            counts["cpu_seconds"] = round(time.process_time() - c0, 2)
            out["families"][name] = counts
    tot = {o: sum(f[o] for f in out["families"].values()) for o in (*OUTCOMES, "cases")}
    for key in ("seconds", "cpu_seconds"):
        tot[key] = round(sum(f[key] for f in out["families"].values()), 2)
    out["total"] = tot
    return out


def markdown(result: dict) -> str:
    rows = ["| family | cases | project error | valid ok | traceback | hang | wrong | wall s | CPU s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, c in [*result["families"].items(), ("**total**", result["total"])]:
        rows.append(f"| {name} | {c['cases']} | {c['error']} | {c['ok']} | {c['traceback']} | {c['hang']} | "
                    f"{c['wrong']} | {c['seconds']} | {c['cpu_seconds']} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=int, default=1, help="multiply the number of cases per family")
    p.add_argument("--case-seconds", type=float, default=2.0, help="a case slower than this is a hang")
    p.add_argument("--json", default=None, help="write the result as JSON")
    args = p.parse_args(argv)
    result = run_suite(seed=args.seed, scale=args.scale, case_seconds=args.case_seconds)
    print(markdown(result))
    for f in result["failures"][:20]:
        print(f"FAIL {f['family']}: {f['case']}: {f['outcome']} {f['detail']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    t = result["total"]
    return 0 if t["traceback"] == t["hang"] == t["wrong"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
