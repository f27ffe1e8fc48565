"""SDC (slimmable condensation): the X = UΣV parameterisation, the ``sdc/1`` formation kind in the
buffer, every reader's decoder against the torch decoder, fuzzing of the new kind, the CLI."""
from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgecond.buffer import SDC_FORMATION, MultisizeBuffer, read_meta, slice_file
from edgecond.errors import BufferFormatError, ConfigError
from edgecond.formation import decode_sdc_numpy, decode_sdc_torch

sys.path.insert(0, str(Path(__file__).parent))
from test_buffer_fuzz import _same, mutate  # noqa: E402
from test_condense import TINY_FACTS, tiny_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _sdc_buffer(k=3, n=4, c=1, h=4, w=4, *, dtype="uint8", factor=1, coef_dtype="float16", seed=0, m=None,
                **kw) -> MultisizeBuffer:
    rng = np.random.default_rng(seed)
    codes = rng.random((k, n, c, h, w), dtype=np.float32)
    coef = rng.normal(0.0, 0.4, (k, n, m or n))
    return MultisizeBuffer.from_class_major(
        codes, class_names=[f"c{i}" for i in range(k)], dataset="toy", mean=[0.5] * c, std=[0.25] * c,
        factor=factor, method="sdc", dtype=dtype, coefficients=coef, coefficient_dtype=coef_dtype, **kw)


def _torch_decode(buf: MultisizeBuffer, n: int) -> np.ndarray:
    """The torch decoder (edgecond.formation.decode_sdc_torch) on the stored prefix, float64."""
    q = buf.stored_images(n)
    codes = torch.from_numpy(q.astype(np.float64) / (255.0 if q.dtype == np.uint8 else 1.0))
    coef = torch.from_numpy(buf._stored("coefficients", n).astype(np.float64))
    return decode_sdc_torch(codes, coef, buf.factor).numpy()


# --------------------------------------------------------------------------- formation


@pytest.mark.parametrize("factor", [1, 2])
def test_numpy_and_torch_sdc_decoders_agree(factor):
    rng = np.random.default_rng(1)
    codes = rng.random((3, 2, 3, 4, 4)).astype(np.float32)
    coef = rng.normal(size=(3, 2, 5)).astype(np.float32)
    a = decode_sdc_numpy(codes, coef, factor)
    b = decode_sdc_torch(torch.from_numpy(codes), torch.from_numpy(coef), factor).numpy()
    assert a.shape == (3 * 2 * factor**2, 3, 4, 4) and a.dtype == np.float32
    assert np.abs(a - b).max() <= 1e-6
    assert a.min() >= 0.0 and a.max() <= 1.0  # the decode clips to pixel space
    # row i of class k from n ranks: sum_j coef[j, k, i] * (2 code[j, k] - 1), clipped
    want = np.clip(sum(coef[j, 1, 0] * (2.0 * codes[j, 1].astype(np.float64) - 1.0) for j in range(3)), 0, 1)
    got = a.reshape(3, 2, factor**2, 3, 4, 4)[0, 1] if factor == 1 else None
    if got is not None:
        np.testing.assert_allclose(got[0], want, atol=1e-6)
    with pytest.raises(ConfigError):
        decode_sdc_numpy(codes, coef[:, :, :2], factor)  # M < n


def test_factorisation_and_export_roundtrip_every_prefix():
    from edgecond.condense.sdc import SlimmableSet, sdc_factorize

    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(2, 4, 1, 4, 4, generator=g)
    u, s, v = sdc_factorize(pixels)
    x = torch.einsum("kij,kj,kjd->kid", u.double(), s.double(), v.double()).reshape(pixels.shape)
    assert torch.allclose(x.float(), pixels, atol=1e-5)
    assert torch.all(s[:, :-1] >= s[:, 1:])  # components sorted by significance
    syn = SlimmableSet(pixels, factor=1, mean=[0.5], std=[0.25])
    with torch.no_grad():  # scramble the significance order: export must sort
        syn.s[:, 0] *= 0.01
    codes, coef = syn.export()
    assert float(codes.min()) >= 0.0 and float(codes.max()) <= 1.0
    for n in range(1, 5):
        dec = decode_sdc_numpy(codes[:, :n].numpy().transpose(1, 0, 2, 3, 4),
                               coef[:, :n].numpy().transpose(1, 0, 2))
        want = torch.stack([syn.pixels(c, n) for c in range(2)]).transpose(0, 1).reshape(-1, 1, 4, 4)
        assert np.abs(dec - want.detach().numpy()).max() < 1e-5, n


def test_regularisers_pull_significance_to_the_first_component():
    from edgecond.condense.sdc import SDCConfig, SlimmableSet

    g = torch.Generator().manual_seed(0)
    syn = SlimmableSet(torch.rand(1, 4, 1, 4, 4, generator=g), factor=1, mean=[0.5], std=[0.25])
    mc = SDCConfig(skew_weight=1.0, ortho_weight=0.0)
    share0 = float((syn.significance(0)[0] ** 2 / (syn.significance(0) ** 2).sum()).detach())
    opt = torch.optim.Adam(syn.parameters(), lr=0.01)
    for _ in range(20):
        opt.zero_grad()
        syn.regularizer(0, mc).backward()
        opt.step()
    share1 = float((syn.significance(0)[0] ** 2 / (syn.significance(0) ** 2).sum()).detach())
    assert share1 > share0


# --------------------------------------------------------------------------- the buffer


@pytest.mark.parametrize("dtype,factor,coef_dtype", [("uint8", 1, "float16"), ("float16", 2, "float32"),
                                                      ("float32", 1, "float32")])
def test_sdc_buffer_prefix_rule_budgets_deltas_and_lean(dtype, factor, coef_dtype):
    from edgecond.budget import ipc_for_bytes, memory_for

    buf = _sdc_buffer(dtype=dtype, factor=factor, coef_dtype=coef_dtype, m=5)
    meta = buf.meta
    assert meta.formation == SDC_FORMATION and meta.is_sdc and meta.decoded_per_rank == factor**2
    isz = {"uint8": 1, "float16": 2, "float32": 4}
    assert meta.rank_bytes == 3 * (16 * isz[dtype] + 5 * isz[coef_dtype])  # components + coefficients
    for n in range(1, 5):
        for prov in (True, False):
            raw = buf.to_bytes(n, provenance=prov)
            assert len(raw) == buf.bytes_for(n, provenance=prov)
            assert buf.largest_fitting(len(raw), provenance=prov) == n
            assert buf.largest_fitting(len(raw) - 1, provenance=prov) == n - 1
            back = MultisizeBuffer.from_bytes(raw)
            assert back.meta.formation == SDC_FORMATION
            np.testing.assert_array_equal(back.training_arrays()[0], buf.training_arrays(n)[0])
        x, y = buf.training_arrays(n)
        assert x.shape == (n * 3 * factor**2, 1, 4, 4) and len(y) == len(x)
        assert np.abs(x - _torch_decode(buf, n)).max() <= 1e-6
        assert memory_for(buf, n) >= x.nbytes
    assert ipc_for_bytes(buf, buf.bytes_for(3)).n == 3
    # slicing a slice, the streamed slice, deltas
    assert buf.subset(3).to_bytes(2) == buf.to_bytes(2)
    out = io.BytesIO()
    assert slice_file(io.BytesIO(buf.to_bytes()), out, 2) == buf.bytes_for(2)
    assert out.getvalue() == buf.to_bytes(2)
    lean2 = MultisizeBuffer.from_bytes(buf.to_bytes(2, provenance=False))
    grown = MultisizeBuffer.append_ranks(lean2, buf.ranks(2, 4))
    assert grown.to_bytes() == buf.to_bytes(provenance=False)
    assert read_meta(io.BytesIO(buf.to_bytes())).formation == SDC_FORMATION


def test_slimmed_images_are_not_a_cut_of_the_full_decode():
    buf = _sdc_buffer()
    x2 = buf.training_arrays(2)[0]
    x4 = buf.training_arrays(4)[0]
    assert not np.allclose(x2, x4[: len(x2)])  # the n-prefix drops components from every image
    for slot in range(3):
        xs = buf.class_training_images(slot, 2)
        np.testing.assert_array_equal(xs, x2.reshape(2, 3, 1, 4, 4)[:, slot])
    np.testing.assert_array_equal(buf.images_class_major(2), x2.reshape(2, 3, 1, 4, 4).transpose(1, 0, 2, 3, 4))
    x, y = buf.training_arrays(2, decode=False)
    assert x.shape == (6, 1, 4, 4) and len(y) == 6


def _forge(buf: MultisizeBuffer, edit) -> bytes:
    """Re-encode ``buf`` with its metadata/tensors edited and a *valid* digest chain."""
    lay = buf._layout
    md = dict(lay.meta.raw)
    order = list(lay.meta.tensors)
    ranks = [[bytearray(buf._rank_view(t.name, r, r + 1)) for t in order] for r in range(buf.ipc)]
    md, order, ranks = edit(md, order, ranks)
    return MultisizeBuffer._assemble(md, tuple(order), ranks, len(ranks)).to_bytes()


def test_reader_rejects_inconsistent_sdc_files():
    from edgecond.buffer import TensorSpec

    buf = _sdc_buffer(coef_dtype="float32")
    ci = [t.name for t in buf._layout.meta.tensors].index("coefficients")

    def nan_coefficient(md, order, ranks):
        ranks[1][ci][0:4] = struct.pack("<f", float("nan"))
        return md, order, ranks

    bad = MultisizeBuffer.from_bytes(_forge(buf, nan_coefficient))  # the chain is valid: a writer's bug
    bad.training_arrays(1)  # rank 0 is fine
    with pytest.raises(BufferFormatError, match="coefficients"):
        bad.training_arrays(2)

    def drop_formation(md, order, ranks):
        md.pop("formation")
        return md, order, ranks

    def other_version(md, order, ranks):
        md["formation"] = "sdc/2"
        return md, order, ranks

    def drop_coefficients(md, order, ranks):
        return md, [t for t in order if t.name != "coefficients"], [[p for j, p in enumerate(r) if j != ci]
                                                                    for r in ranks]

    def short_coefficients(md, order, ranks):  # M = 2 < N = 4
        order = [t if t.name != "coefficients" else TensorSpec("coefficients", "F32", (3, 2)) for t in order]
        return md, order, [[p if j != ci else p[:24] for j, p in enumerate(r)] for r in ranks]

    for edit, what in ((drop_formation, "coefficients"), (other_version, "formation"),
                       (drop_coefficients, "coefficients"), (short_coefficients, "coefficients")):
        with pytest.raises(BufferFormatError, match=what):
            MultisizeBuffer.from_bytes(_forge(buf, edit))
    with pytest.raises(ConfigError):
        _sdc_buffer(m=3)  # M < N
    with pytest.raises(ConfigError):
        _sdc_buffer(coef_dtype="uint8")
    with pytest.raises(ConfigError):
        _sdc_buffer(soft_labels=np.zeros((3, 4, 1, 3), np.float32))


def test_fuzz_mutated_sdc_buffers_and_deltas(tmp_path):
    """Damaged component or coefficient data never yields silently wrong images."""
    rng = np.random.default_rng(16)
    bases = [_sdc_buffer(), _sdc_buffer(dtype="float16", factor=2, coef_dtype="float32", m=6).lean(),
             _sdc_buffer(dtype="float32", seed=3, accuracy={1: 0.5})]
    raws = [b.to_bytes() for b in bases]
    outcomes = {"rejected": 0, "identical": 0}
    path = tmp_path / "m.safetensors"
    for i in range(600):
        j = i % len(bases)
        if i % 5 == 4:
            bad = mutate(bases[j].ranks(2, 4), rng)
            try:
                grown = MultisizeBuffer.append_ranks(bases[j].subset(2), bad)
            except BufferFormatError:
                outcomes["rejected"] += 1
                continue
            assert grown.to_bytes() == bases[j].to_bytes(), f"mutant {i}: delta accepted with different content"
            outcomes["identical"] += 1
            continue
        bad = mutate(raws[j], rng)
        try:
            if i % 2:
                got = MultisizeBuffer.from_bytes(bad)
            else:
                path.write_bytes(bad)
                got = MultisizeBuffer.load(path, mmap=True)
                got.training_arrays()
        except BufferFormatError as exc:
            assert str(exc)
            outcomes["rejected"] += 1
            continue
        assert _same(got, bases[j]), f"mutant {i}: accepted with different content"
        np.testing.assert_array_equal(got.training_arrays()[0], bases[j].training_arrays()[0])
        outcomes["identical"] += 1
    assert outcomes["rejected"] > 0.8 * 600


# --------------------------------------------------------------------------- client decoders


def test_edge_flower_and_avalanche_decoders_agree_with_torch(tmp_path):
    buf = _sdc_buffer(factor=2, dtype="float16", coef_dtype="float32")
    want = {n: _torch_decode(buf, n) for n in range(1, 5)}
    # edge trainer (numpy + safetensors only)
    from clients.edge.train import load_training_arrays

    buf.slice_to(tmp_path / "b.safetensors", 3, provenance=False)
    manifest = {"dir": tmp_path, "files": {"buffer": "b.safetensors"}, "mean": list(buf.meta.mean), "std": list(buf.meta.std),
                "num_classes": buf.num_classes,
                "training": {"augment": {}}}  # the fields the trainer checks the slice against
    x, y = load_training_arrays(manifest)
    assert np.abs(x - want[3]).max() <= 1e-6 and len(y) == len(x)
    # Flower client: the prefix cache (full prefix, then a delta) and the arrays client_round trains on
    from edgecond.federated import PrefixCache, buffer_identity

    cache = PrefixCache()
    ident = buffer_identity(buf)
    cache.apply({"kind": "full", "target": 2, "digest": ident}, buf.to_bytes(2, provenance=False))
    assert np.abs(cache.buffer.training_arrays(cache.buffer.ipc)[0] - want[2]).max() <= 1e-6
    cache.apply({"kind": "delta", "have": 2, "target": 4, "digest": cache.digest}, buf.ranks(2, 4))
    assert np.abs(cache.buffer.training_arrays(cache.buffer.ipc)[0] - want[4]).max() <= 1e-6
    # Avalanche storage policy: per class, the n-rank decode (not a cut of the full decode)
    pytest.importorskip("avalanche")
    from clients.avalanche_replay import CondensedBuffer

    policy = CondensedBuffer(3 * 2 * 4, buffers=[buf], normalize=False)
    for budget in (3 * 2 * 4, 3 * 1 * 4 + 4, 48):
        policy.resize(None, budget)
        for c, n in policy.counts.items():
            got = torch.stack([policy.buffer[i][0] for i in range(len(policy.buffer))
                               if int(policy.buffer[i][1]) == c]).numpy()
            ref = want[n].reshape(n, 3, 4, 1, 4, 4)[:, c].reshape(-1, 1, 4, 4) if n else got
            assert got.shape == ref.shape and np.abs(got - ref).max() <= 1e-6


# --------------------------------------------------------------------------- condensation and CLI


def _tiny_sdc(base: str, **over):
    from edgecond.condense import condense_preset

    base_cfg = {"idc": {"inner_steps": 2, "net_samples": 16, "net_batch": 8},
                "idm": {"queue_init": 2, "queue_max": 3, "push_interval": 1, "train_steps": 1, "train_batch": 8},
                "dm": {}}[base]
    mc = {"base": base, "base_config": base_cfg, "coefficient_dtype": "float32", **over.pop("method_config", {})}
    kw = dict(ipc=3, iterations=3, model_kwargs={"width": 8}, batch_real=8, dtype="float32")
    kw.update(over)
    return condense_preset("sdc", "quick", TINY_FACTS, method_config=mc, **kw)


@pytest.mark.parametrize("base,slim", [("idm", 0.0), ("dm", 1.0), ("idc", 0.5)])
def test_sdc_condenses_over_each_base(base, slim):
    from edgecond.condense import condense

    ds = tiny_dataset()
    cfg = _tiny_sdc(base, method_config={"slim_weight": slim})
    res = condense(ds, cfg, progress=False)
    buf = res.buffer
    assert buf.meta.formation == SDC_FORMATION and buf.meta.method == "sdc" and buf.ipc == 3
    assert buf.meta.config["method_config"]["base"] == base and len(res.history["loss"]) == 3
    sig = buf.meta.extra["sdc"]["significance"]
    assert all(a >= b for row in sig for a, b in zip(row, row[1:]))  # stored in significance order
    # the buffer's full decode is the condensed set (coefficients float32, components float32)
    np.testing.assert_allclose(buf.images_class_major(), res.images.numpy(), atol=1e-5)


def test_sdc_resume_is_bitwise_identical(tmp_path):
    from edgecond.condense import EngineHooks, condense

    class Crash(EngineHooks):
        def begin_outer(self, t):
            if t == 3:
                raise KeyboardInterrupt

    ds = tiny_dataset()
    cfg = _tiny_sdc("dm", iterations=4, method_config={"slim_weight": 1.0})
    full = condense(ds, cfg, progress=False)
    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        condense(ds, cfg, checkpoint=ckpt, checkpoint_every=2, hooks=Crash(), progress=False)
    resumed = condense(ds, cfg, checkpoint=ckpt, checkpoint_every=2, resume=True, progress=False)
    assert torch.equal(full.images, resumed.images) and full.buffer.digest == resumed.buffer.digest


def test_sdc_rejects_hooks_and_bad_settings():
    from edgecond.condense import condense, condense_preset

    ds = tiny_dataset()
    with pytest.raises(ConfigError, match="hooks"):
        condense(ds, _tiny_sdc("dm", hooks="mdc"), progress=False)
    with pytest.raises(ConfigError, match="base"):
        condense_preset("sdc", "quick", TINY_FACTS, base="random")
    with pytest.raises(ConfigError):
        condense(ds, _tiny_sdc("dm", method_config={"skew_weight": -1.0}), progress=False)


def test_cli_condense_sdc_lists_and_evaluates(tmp_path):
    env_cmd = [sys.executable, "-m", "edgecond"]
    listed = subprocess.run(env_cmd + ["condense", "--list"], capture_output=True, text=True, cwd=ROOT, check=True)
    assert "sdc" in listed.stdout
    out = tmp_path / "d.safetensors"
    subprocess.run(env_cmd + ["condense", "--dataset", "digits", "--method", "sdc", "--base", "dm", "--ipc", "2",
                              "--iterations", "1", "--threads", "1", "--no-progress", "-o", str(out)],
                   capture_output=True, text=True, cwd=ROOT, check=True)
    buf = MultisizeBuffer.load(out)
    assert buf.meta.formation == SDC_FORMATION and buf.meta.config["method_config"]["base"] == "dm"
    res = subprocess.run(env_cmd + ["evaluate", str(out), "--sizes", "all", "--seeds", "1", "--epochs", "1",
                                    "--threads", "1", "--no-progress", "--json", str(tmp_path / "t.json")],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    info = subprocess.run(env_cmd + ["info", str(out)], capture_output=True, text=True, cwd=ROOT, check=True)
    assert "formation  sdc/1" in info.stdout
    table = json.loads((tmp_path / "t.json").read_text())
    assert "1" in res.stdout and len(json.dumps(table)) > 0


def test_subset_degradation_benchmark_runs_sdc_lfs(tmp_path):
    from benchmarks.subset_protocol import SubsetDegradationConfig, run_subset_degradation, sdc_config

    ds = tiny_dataset()
    tiny = dict(iterations=2, factor=1, batch_real=8, model_kwargs={"width": 8}, inner_steps=2, net_samples=16,
                net_batch=8)
    cfg = SubsetDegradationConfig(dataset="tiny", base="idc", ipc=3, seeds=(0,), methods=("SDC-LFS",),
                                  condense_overrides=tiny, sdc={"slim_weight": 0.5},
                                  eval_overrides={"epochs": 1, "model_kwargs": {"width": 8}})
    c = sdc_config(cfg, ds)
    assert c.method == "sdc" and c.iterations == 2 and c.method_config["slim_weight"] == 0.5
    assert c.method_config["lbs_steps"] == 0 and sdc_config(cfg, ds, lbs=True).method_config["lbs_steps"] > 0
    assert c.method_config["base"] == "idc" and c.method_config["base_config"]["inner_steps"] == 2
    res = run_subset_degradation(ds, cfg, progress=False, out_dir=tmp_path, save_buffers=True)
    m = res.methods["SDC-LFS"]
    buf = MultisizeBuffer.load(tmp_path / "SDC.safetensors")
    assert m["sizes"] == [1, 2, 3] and m["bytes"] == [buf.bytes_for(n) for n in (1, 2, 3)]
    assert "SDC-LFS" in res.to_markdown() and (tmp_path / "subset_degradation.png").exists()


def test_nested_lbs_keeps_smaller_sizes_bit_identical():
    from edgecond.condense import condense
    from edgecond.condense.engine import METHODS, RealData, method_config
    from edgecond.condense.sdc import SlimmableSet, lbs_stage
    from edgecond.utils import make_generator

    ds = tiny_dataset()
    cfg = _tiny_sdc("dm", ipc=3)
    real = RealData(ds, torch.device("cpu"))
    base = METHODS.get("dm")(real, cfg, method_config(METHODS.get("dm"), {}), device=torch.device("cpu"),
                             generator=make_generator(0))
    g = torch.Generator().manual_seed(0)
    syn = SlimmableSet(torch.rand(3, 3, 1, 8, 8, generator=g), factor=1, mean=ds.mean, std=ds.std)
    with torch.no_grad():
        syn.s[:, 0] *= 0.1  # out of order: freezing the order must sort first
    syn.freeze_order_()
    sig = syn.significance().detach()
    assert torch.all(sig[:, :-1] >= sig[:, 1:])
    for n in (1, 2, 3):
        before = {m: torch.stack([syn.pixels(c, m) for c in range(3)]).detach().clone() for m in (1, 2, 3)}
        lbs_stage(syn, base, n, steps=2, lr=0.05)
        after = {m: torch.stack([syn.pixels(c, m) for c in range(3)]).detach() for m in (1, 2, 3)}
        for m in range(1, n):
            assert torch.equal(before[m], after[m]), (n, m)  # smaller sizes untouched
        assert not torch.equal(before[n], after[n])
    # through the engine: the buffer keeps the fine-tuned order and decodes to the result
    res = condense(ds, _tiny_sdc("dm", method_config={"lbs_steps": 2}), progress=False)
    np.testing.assert_allclose(res.buffer.images_class_major(), res.images.numpy(), atol=1e-5)
    with pytest.raises(ConfigError):
        condense(ds, _tiny_sdc("dm", method_config={"lbs_steps": -1}), progress=False)


def test_continual_condense_classes_keeps_the_sdc_formation(tmp_path):
    from edgecond.continual import ExperienceCondenseConfig, condense_classes

    ds = tiny_dataset(classes=4)
    cfg = ExperienceCondenseConfig(method="sdc", hooks="none", ipc=3, seed=1, overrides={
        "iterations": 1, "model_kwargs": {"width": 8}, "batch_real": 8, "base": "dm"})
    buf = condense_classes(ds, [2, 3], cfg, cache_dir=tmp_path, progress=False)
    assert buf.meta.formation == SDC_FORMATION and list(buf.labels) == [2, 3] and buf.ipc == 3
    for n in (1, 3):
        x, y = buf.training_arrays(n)
        assert np.abs(x - _torch_decode(buf, n)).max() <= 1e-6 and sorted(set(y.tolist())) == [2, 3]
