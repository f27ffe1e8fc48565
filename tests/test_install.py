"""Packaging (issue 20): the core install is the device part. A fresh venv gets only numpy,
safetensors and onnxruntime-training-cpu (pinned by requirements-lock.txt) plus edgecond
installed with --no-deps; there ``import edgecond, edgecond.buffer`` works and the edge trainer
trains a bundle built here with the full environment. Also: the extras and apps namespaces."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEVICE_PACKAGES = ["numpy", "safetensors", "onnxruntime-training-cpu"]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_core_dependencies_are_the_device_part_and_test_pulls_everything():
    project = _pyproject()["project"]
    names = sorted(d.split("=")[0].split(">")[0].split("[")[0].strip() for d in project["dependencies"])
    assert names == sorted(DEVICE_PACKAGES)
    extras = project["optional-dependencies"]
    assert {"torch", "flower", "avalanche", "all", "test"} <= set(extras)
    assert any(d.startswith("torch==") for d in extras["torch"])
    assert any(d.startswith("flwr") for d in extras["flower"])
    assert any(d.startswith("avalanche-lib") for d in extras["avalanche"])
    assert extras["all"] == ["edgecond[torch,flower,avalanche]"]
    assert "edgecond[all,docs]" in extras["test"]  # `make test` installs .[test]: everything the suite needs


def test_apps_are_importable_under_the_edgecond_namespace():
    from clients.edge.train import train_bundle

    from edgecond.apps import edge

    assert edge.train_bundle is train_bundle
    r = subprocess.run([sys.executable, "-c", "import sys, edgecond.apps.edge; print('torch' in sys.modules)"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


def _device_bundle(tmp_path: Path) -> Path:
    """A tiny digits bundle (random real images, MLP, fixed batch 16) built with the full env."""
    from edgecond.buffer import MultisizeBuffer
    from edgecond.data import load_dataset
    from edgecond.deploy import DeployConfig, deploy

    digits = load_dataset("digits")
    x, y = digits.x_train.numpy(), digits.y_train.numpy()
    rng = np.random.default_rng(0)
    images = np.stack([x[rng.permutation(np.flatnonzero(y == c))[:5]] for c in range(10)])
    buf = MultisizeBuffer.from_class_major(images, class_names=digits.class_names, dataset="digits",
                                           mean=digits.mean, std=digits.std, method="random", config={})
    buf.save(tmp_path / "digits.safetensors")
    training = {"epochs": 3, "lr": 0.05, "schedule": "step", "optimizer": "sgd",
                "augment": {"enabled": False, "crop_pad": 1, "flip": False}}
    r = deploy(tmp_path / "digits.safetensors", tmp_path / "bundle", DeployConfig(
        max_bytes=10**6, model="mlp", model_kwargs={"hidden": [32]}, batch_size=16, optimizer="sgd",
        eval_samples=100, seed=0, training=training, check=False))
    return r.directory


@pytest.mark.slow
def test_device_venv_runs_edgecond_and_the_edge_trainer(tmp_path):
    bundle = _device_bundle(tmp_path)
    venv = tmp_path / "device-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    # setuptools only to build edgecond's wheel below (onnxruntime-training-cpu requires it too)
    r = subprocess.run([*pip, "-c", str(ROOT / "requirements-lock.txt"), *DEVICE_PACKAGES, "setuptools>=68"],
                       capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    # the project itself, without its dependencies and without build isolation (no download)
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "out", "runs", "build", "*.egg-info",
                                                           "__pycache__", ".pytest_cache"))
    r = subprocess.run([*pip, "--no-deps", "--no-build-isolation", str(src)], capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    work = tmp_path / "elsewhere"  # not the checkout: imports must come from the venv
    work.mkdir()
    code = ("import sys, edgecond, edgecond.buffer, edgecond.budget\n"
            "from edgecond import MultisizeBuffer, ipc_for_bytes\n"
            "import importlib.util as u\n"
            "print(edgecond.__file__); print(u.find_spec('torch') is None, 'torch' in sys.modules)")
    r = subprocess.run([str(py), "-c", code], cwd=work, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    where, flags = r.stdout.strip().splitlines()
    assert str(venv) in where and flags == "True False"  # installed copy; torch not even installable there
    r = subprocess.run([str(py), "-m", "clients.edge.train", str(bundle), "--threads", "1", "-q"], cwd=work,
                       capture_output=True, text=True, timeout=600, env={**env, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((bundle / "metrics.json").read_text())
    assert metrics["steps"] > 0 and len(metrics["loss_per_epoch"]) == 3
    assert np.isfinite(metrics["loss_per_epoch"]).all()
    r = subprocess.run([str(py), "-m", "edgecond", "info", str(tmp_path / "digits.safetensors")], cwd=work,
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and "digest ok" in r.stdout, r.stderr[-3000:]


def test_trained_inference_model_has_a_dynamic_batch_axis(tmp_path):
    """Training artifacts stay fixed-batch; the eval model and the trainer's inference model do not."""
    import onnxruntime

    bundle = _device_bundle(tmp_path)
    from clients.edge.train import EdgeTrainConfig, train_bundle

    metrics = train_bundle(bundle, EdgeTrainConfig(threads=1, verbose=False))
    sess = onnxruntime.InferenceSession(str(bundle / metrics["files"]["inference_model"]),
                                        providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[0] == "batch"
    outs = [sess.run(["logits"], {"input": np.zeros((n, 1, 8, 8), np.float32)})[0].shape for n in (1, 5, 40)]
    assert outs == [(1, 10), (5, 10), (40, 10)]
    import onnx  # the training graph keeps its fixed batch of 16

    assert onnx.load(str(bundle / "training_model.onnx")).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 16


@pytest.mark.slow
def test_make_docs_api_builds_the_reference(tmp_path):
    """The `make docs-api` command (its module list read from the Makefile) builds with pdoc."""
    pytest.importorskip("pdoc")
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    modules = next(line.split(":=", 1)[1].split() for line in text.splitlines() if line.startswith("DOCS_MODULES"))
    recipe = next(line.strip() for line in text.splitlines() if "-m pdoc" in line)
    assert "$(DOCS_MODULES)" in recipe
    r = subprocess.run([sys.executable, "-m", "pdoc", "--docformat", "restructuredtext", "-o", str(tmp_path), *modules],
                       cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    page = (tmp_path / "edgecond" / "buffer.html").read_text()
    assert "MultisizeBuffer" in page and "slice_to" in page
    assert (tmp_path / "index.html").is_file() and (tmp_path / "edgecond" / "apps" / "avalanche.html").is_file()
    assert "condensed_replay" in (tmp_path / "edgecond" / "apps" / "avalanche.html").read_text()
