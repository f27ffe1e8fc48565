"""Deploy bundles (edgecond.deploy) and the torch-free edge trainer (clients.edge.train).

The trainer runs once in a subprocess (module fixture); its metrics serve the no-torch test and
the parity test against a torch run of the same model, init, slice, batch order and epochs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from clients.edge.train import augment_batch, epoch_batches, load_eval_arrays, lr_at, normalize  # noqa: E402
from edgecond.buffer import MultisizeBuffer  # noqa: E402
from edgecond.data import load_dataset  # noqa: E402
from edgecond.deploy import DeployConfig, deploy, read_manifest  # noqa: E402
from edgecond.errors import BudgetError, ConfigError  # noqa: E402
from edgecond.models import build_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL, KWARGS = "mlp", {"hidden": [64]}
EPOCHS, LR, BATCH, IPC = 15, 0.05, 16, 20
TRAINING = {"epochs": EPOCHS, "lr": LR, "schedule": "step", "optimizer": "sgd",
            "augment": {"enabled": False, "crop_pad": 1, "flip": False}}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def buffer_path(digits, tmp_path_factory):
    """A real-image digits buffer (IPC 20, random per class, float16)."""
    x, y = digits.x_train.numpy(), digits.y_train.numpy()
    rng = np.random.default_rng(0)
    images = np.stack([x[rng.permutation(np.flatnonzero(y == c))[:IPC]] for c in range(10)])
    buf = MultisizeBuffer.from_class_major(images, class_names=digits.class_names, dataset="digits",
                                           mean=digits.mean, std=digits.std, method="random", config={})
    path = tmp_path_factory.mktemp("buf") / "digits.safetensors"
    buf.save(path)
    return path


@pytest.fixture(scope="module")
def bundle(buffer_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "b"
    result = deploy(buffer_path, out, DeployConfig(
        max_bytes=10**6, model=MODEL, model_kwargs=KWARGS, batch_size=BATCH, optimizer="sgd",
        eval_samples=450, seed=0, training=TRAINING))
    return result


TORCH_GUARD = """
import atexit, json, os, sys

attempts = []


class _TorchGuard:
    \"\"\"Records (and refuses) every import of torch that reaches the import machinery.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            attempts.append(name)
            raise ImportError("torch is not allowed in the edge trainer (test guard)")
        return None


sys.meta_path.insert(0, _TorchGuard())
atexit.register(lambda: open(os.environ["TORCH_GUARD_OUT"], "w").write(json.dumps(attempts)))
"""


@pytest.fixture(scope="module")
def edge_run(bundle, tmp_path_factory):
    """The trainer in a fresh interpreter whose sitecustomize refuses and records torch imports.

    (The trainer hides torch while onnxruntime initialises, so imports it blocks itself never
    reach the guard; any other torch import on its path would.)
    """
    guard_dir = tmp_path_factory.mktemp("guard")
    (guard_dir / "sitecustomize.py").write_text(TORCH_GUARD)
    out = guard_dir / "attempts.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(guard_dir), str(ROOT)]), OMP_NUM_THREADS="1",
               TORCH_GUARD_OUT=str(out))
    proc = subprocess.run(
        [sys.executable, "-m", "clients.edge.train", str(bundle.directory), "--seed", "0", "--threads", "1", "-q"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((bundle.directory / "metrics.json").read_text())
    return metrics, json.loads(out.read_text())


# ---------------------------------------------------------------------------- deploy


def test_bundle_fits_budget_and_manifest_is_consistent(bundle, buffer_path):
    d = bundle.directory
    sizes = {p.name: p.stat().st_size for p in d.iterdir() if p.name not in ("metrics.json",)
             and not p.name.startswith("trained_")}
    m = read_manifest(d)
    assert sum(sizes.values()) == m["bytes"]["total"] <= 10**6
    assert bundle.ipc == IPC == m["ipc"]  # everything fits 1 MB
    assert m["train_images"] == IPC * 10 and m["batch_size"] == BATCH and m["training"] == TRAINING
    assert m["files"]["eval"] == "eval.safetensors" and m["eval_samples"] == 450
    assert MultisizeBuffer.load(d / m["files"]["buffer"]).ipc == IPC


def test_budget_picks_largest_slice(buffer_path, bundle, tmp_path):
    artifacts = sum(bundle.files[f] for f in ("training_model.onnx", "eval_model.onnx",
                                               "optimizer_model.onnx", "checkpoint"))
    buf = MultisizeBuffer.load(buffer_path)
    budget = artifacts + buf.bytes_for(7, provenance=False) + 100  # the ~1.4 kB manifest does not fit next to a 7-slice
    r = deploy(buffer_path, tmp_path / "b", DeployConfig(max_bytes=budget, model=MODEL, model_kwargs=KWARGS,
                                                        batch_size=BATCH, optimizer="sgd", check=False))
    assert r.total_bytes <= budget and 1 <= r.ipc < 7
    assert r.total_bytes == sum(p.stat().st_size for p in r.directory.iterdir())
    assert r.total_bytes + buf.bytes_for(r.ipc + 1, provenance=False) - buf.bytes_for(r.ipc, provenance=False) > budget  # n+1 would not fit
    fixed = artifacts + r.files["manifest.json"]
    with pytest.raises(BudgetError, match="fix"):
        deploy(buffer_path, tmp_path / "c", DeployConfig(max_bytes=fixed, model=MODEL, model_kwargs=KWARGS,
                                                         check=False))
    assert not (tmp_path / "c").exists()
    with pytest.raises(ConfigError, match="not empty"):
        deploy(buffer_path, tmp_path / "b", DeployConfig(max_bytes=budget, model=MODEL, check=False))


def test_memory_budget_limits_the_slice(buffer_path, tmp_path):
    from edgecond.budget import MemoryModel, memory_for

    model = MemoryModel(num_params=sum(p.numel() for p in build_model(MODEL, (1, 8, 8), 10, **KWARGS).parameters()),
                        batch_size=BATCH)
    mem = memory_for(buffer_path, 4, model=model)
    r = deploy(buffer_path, tmp_path / "b", DeployConfig(max_bytes=10**6, memory_bytes=mem, model=MODEL,
                                                        model_kwargs=KWARGS, batch_size=BATCH, check=False))
    assert r.ipc == 4 and r.reason == "memory budget" and r.manifest["budget"]["limited_by"] == "memory budget"


def test_read_manifest_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(ConfigError, match="not an edgecond bundle"):
        read_manifest(tmp_path)


# ---------------------------------------------------------------------------- numpy helpers


def test_epoch_batches_wrap_fill():
    rng = np.random.default_rng(0)
    b = epoch_batches(10, 4, rng)
    assert b.shape == (3, 4) and set(b.ravel()) == set(range(10))
    assert list(b.ravel()[10:]) == list(b.ravel()[:2])  # last batch completed from the same permutation
    assert epoch_batches(3, 8, rng).shape == (1, 8)
    assert epoch_batches(8, 4, rng).shape == (2, 4)


def test_augment_and_schedule():
    rng = np.random.default_rng(0)
    x = rng.random((5, 3, 8, 8), dtype=np.float32)
    np.testing.assert_array_equal(augment_batch(x, rng, crop_pad=0, flip=False), x)
    y = augment_batch(x, rng, crop_pad=2, flip=True)
    assert y.shape == x.shape and y.dtype == np.float32
    assert [lr_at(e, 6, 1.0, "step") for e in range(6)] == pytest.approx([1, 1, 1, 1, 0.1, 0.01])
    with pytest.raises(ConfigError):
        lr_at(0, 6, 1.0, "cosine")


# ---------------------------------------------------------------------------- the trainer


def test_trainer_never_imports_torch(edge_run, bundle):
    metrics, attempts = edge_run
    assert metrics["torch_imported"] is False
    assert attempts == []
    assert len(metrics["loss_per_epoch"]) == EPOCHS and metrics["loss_per_epoch"][-1] < metrics["loss_per_epoch"][0]
    assert metrics["steps"] == EPOCHS * -(-IPC * 10 // BATCH)
    assert metrics["seconds_per_step"] > 0 and metrics["peak_rss_bytes"] > 0
    for name in metrics["files"].values():
        assert (bundle.directory / name).exists()


def _torch_reference(bundle, digits):
    """The same run in torch: same init (registry seed), slice, normalisation, batch order, SGD, LR."""
    m = read_manifest(bundle.directory)
    buf = MultisizeBuffer.load(bundle.directory / m["files"]["buffer"])
    x, y = buf.training_arrays()
    xe, ye = load_eval_arrays(m)
    assert xe.dtype == np.float32 and 0.0 <= xe.min() and xe.max() <= 1.0  # pixel space
    model = build_model(MODEL, (1, 8, 8), 10, seed=0, **KWARGS)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    rng = np.random.default_rng(0)
    for epoch in range(EPOCHS):
        for group in opt.param_groups:
            group["lr"] = lr_at(epoch, EPOCHS, LR, "step")
        for idx in epoch_batches(len(x), BATCH, rng):
            xb = torch.from_numpy(normalize(x[idx], m["mean"], m["std"]))
            loss = torch.nn.functional.cross_entropy(model(xb), torch.from_numpy(y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        pred = model(torch.from_numpy(normalize(xe, m["mean"], m["std"]))).argmax(1).numpy()
    return float((pred == ye).mean()), model


def test_parity_with_torch(edge_run, bundle, digits):
    metrics, _ = edge_run
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread is fastest, and deterministic
    try:
        acc_torch, model = _torch_reference(bundle, digits)
    finally:
        torch.set_num_threads(threads)
    assert abs(metrics["accuracy"] - acc_torch) <= 0.02, (metrics["accuracy"], acc_torch)
    assert metrics["accuracy"] > 0.8  # measured 0.922 for both
    # the trained checkpoint is (up to float rounding) the torch model's weights
    from onnxruntime.capi import _pybind_state as C

    state = C.load_checkpoint(str(bundle.directory / metrics["files"]["checkpoint"]))
    for name, p in model.named_parameters():
        np.testing.assert_allclose(state.get_parameter(name).data.numpy(), p.detach().numpy(), atol=1e-3)


def test_trained_inference_model_runs(edge_run, bundle):
    import onnxruntime

    metrics, _ = edge_run
    sess = onnxruntime.InferenceSession(str(bundle.directory / metrics["files"]["inference_model"]),
                                        providers=["CPUExecutionProvider"])
    m = read_manifest(bundle.directory)
    x = normalize(np.zeros((BATCH, 1, 8, 8), np.float32), m["mean"], m["std"])
    (logits,) = sess.run(["logits"], {"input": x})
    assert logits.shape == (BATCH, 10) and np.isfinite(logits).all()


def test_importing_clients_edge_is_torch_free():
    code = "import sys, clients.edge.train; print(any(k == 'torch' or k.startswith('torch.') for k in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_formation_factor_is_decoded(digits, tmp_path):
    """A factor-2 buffer trains on 4 decoded images per stored image (in-process run)."""
    from clients.edge.train import EdgeTrainConfig, train_bundle

    x = digits.x_train.numpy()[:30].reshape(10, 3, 1, 8, 8)
    buf = MultisizeBuffer.from_class_major(x, class_names=digits.class_names, dataset="digits", factor=2,
                                           mean=digits.mean, std=digits.std, method="test", config={})
    buf.save(tmp_path / "f2.safetensors")
    r = deploy(tmp_path / "f2.safetensors", tmp_path / "b", DeployConfig(
        max_bytes=10**6, model=MODEL, model_kwargs=KWARGS, batch_size=BATCH, check=False))
    assert r.manifest["factor"] == 2 and r.manifest["train_images"] == 3 * 10 * 4
    m = train_bundle(r.directory, EdgeTrainConfig(epochs=2, threads=1, save=False))
    assert m["train_images"] == 120 and m["steps"] == 2 * -(-120 // BATCH) and m["accuracy"] is None
    assert m["augment"] == {"enabled": True, "crop_pad": 1, "flip": False}  # digits: no flip
