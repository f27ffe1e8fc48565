"""Every entry point that can produce an MDC buffer really runs MDC.

Each one — both CLI spellings, the demo, the Flower server's start-up job, the Avalanche
``ExperienceCondenser``, the federated and continual benchmarks and the subset benchmark — is
driven on tiny data, and the buffer it writes must hold at least one Most Learnable Subset
selection made by the rate-of-change rule (an MLS-history entry with ``selected: true``). A
silent fallback to MDC's paper Δt = 100 on a short run makes no selection and fails here.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecond.buffer import MultisizeBuffer

ROOT = Path(__file__).resolve().parents[1]
#: small, fast settings for every condensation below (the MDC settings come from the resolver)
TINY = {"model_kwargs": {"width": 8, "depth": 2, "norm": "instance"}, "batch_real": 8}


def _tiny_arrays(seed: int = 0, classes: int = 3, n: int = 12):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:8, 0:8]

    def make(m):
        xs, ys = [], []
        for c in range(classes):
            blob = np.exp(-((yy - 2 - 2 * c) ** 2 + (xx - 6 + 2 * c) ** 2) / 4.0)
            x = blob[None] * rng.uniform(0.6, 1.0, (m, 1, 1)) + 0.15 * rng.random((m, 8, 8))
            xs.append((np.clip(x, 0, 1) * 255).astype(np.uint8))
            ys.append(np.full(m, c))
        return np.concatenate(xs), np.concatenate(ys)

    xtr, ytr = make(n)
    xte, yte = make(4)
    return xtr, ytr, xte, yte


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("data") / "tiny8.npz"
    xtr, ytr, xte, yte = _tiny_arrays()
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return f"npz:{path}"


def assert_ran_mdc(buf: MultisizeBuffer) -> None:
    mdc = buf.meta.extra.get("mdc")
    assert mdc, f"buffer of {buf.meta.method!r} has no MDC metadata: MDC did not run"
    selected = [h for h in mdc["history"] if h.get("selected")]
    assert selected, f"MDC ran but never selected an MLS (Δt {mdc['config']['delta_t']}): {mdc['history']}"


def _load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("spelling", [["--method", "mdc", "--base", "dm"], ["--method", "dm", "--hooks", "mdc"]])
def test_cli_both_spellings_run_mdc_and_resolve_the_same(spelling, tiny_npz, tmp_path):
    import json

    from edgecond.cli import main

    out = tmp_path / "b.safetensors"
    sets = ["--set", f"model_kwargs={json.dumps(TINY['model_kwargs'])}", "--set", "batch_real=8"]
    assert main(["condense", "--dataset", tiny_npz, *spelling, "--ipc", "3", "--iterations", "6",
                 "--threads", "1", "--no-progress", *sets, "-o", str(out)]) == 0
    buf = MultisizeBuffer.load(out)
    assert_ran_mdc(buf)
    cfg = dict(buf.meta.config)
    assert cfg["method"] == "dm" and cfg["hooks"] == "mdc" and cfg["hooks_config"]["delta_t"] == 1
    # the buffer knows its data: `evaluate` without --dataset reopens it
    data = buf.meta.extra["data"]
    assert data["name"].startswith("npz:/") and data["name"].endswith("tiny8.npz") and len(data["digest"]) == 32
    assert main(["evaluate", str(out), "--sizes", "1", "--seeds", "1", "--epochs", "1", "--no-progress",
                 "--threads", "1"]) == 0


def test_demo_runs_mdc(tiny_npz, tmp_path):
    from edgecond.demo import run_demo

    res = run_demo(tmp_path / "demo", seeds=1, ipc=3, base="dm", dataset=tiny_npz, progress=False,
                   condense_overrides=dict(TINY, iterations=6), eval_overrides={"epochs": 1})
    assert_ran_mdc(MultisizeBuffer.load(res["paths"]["buffer"]))


def test_flower_start_up_job_runs_mdc(tiny_npz, tmp_path):
    sys.path.insert(0, str(ROOT))
    from edgecond.federated import FederatedConfig
    from servers.condense_job import ensure_buffer

    cfg = FederatedConfig(buffer_path=str(tmp_path / "fl.safetensors"), dataset=tiny_npz, condense_method="dm",
                          condense_hooks="mdc", condense_preset="quick", condense_ipc=3)
    path = ensure_buffer(cfg)
    assert_ran_mdc(MultisizeBuffer.load(path))


def test_experience_condenser_runs_mdc(tiny_npz, tmp_path):
    from edgecond.continual import ExperienceCondenseConfig, ExperienceCondenser
    from edgecond.data import load_dataset

    ds = load_dataset(tiny_npz)
    cfg = ExperienceCondenseConfig(method="dm", hooks="mdc", ipc=3, overrides=dict(TINY, iterations=6))
    bufs = ExperienceCondenser(ds, cfg, cache_dir=tmp_path, progress=False).prepare([[0, 1], [2]])
    for buf in bufs:
        assert_ran_mdc(buf)


def test_federated_benchmark_builds_an_mdc_buffer(tiny_npz, tmp_path):
    fed = _load_module(ROOT / "benchmarks" / "federated.py", "bench_federated_t")
    preset = dict(fed.PRESETS["quick"], ipc=3, condense_method="dm",
                  condense_overrides=dict(TINY, iterations=6))
    built = fed.build_buffers(tiny_npz, preset, tmp_path, seed=0, device="cpu", log=lambda *a: None,
                              arms=("mdc",))
    assert_ran_mdc(MultisizeBuffer.load(built["mdc"][0]))


def test_continual_benchmark_builds_mdc_buffers(tiny_npz, tmp_path):
    cont = _load_module(ROOT / "benchmarks" / "continual.py", "bench_continual_t")
    from edgecond.data import load_dataset

    ds = load_dataset(tiny_npz)
    cfg = cont.preset("quick", tiny_npz)
    cfg.method, cfg.ipc, cfg.arms = "dm", 3, ("mdc",)
    cfg.condense_overrides = dict(TINY, iterations=6)
    sources, _ = cont.build_sources(ds, [[0, 1], [2]], cfg, seed=0, cache_dir=tmp_path, device="cpu",
                                    progress=False)
    for buf in sources["mdc"]:
        assert_ran_mdc(buf)


def test_subset_benchmark_mdc_arm_runs_mdc(tiny_npz):
    from benchmarks.subset_protocol import SubsetDegradationConfig, mdc_condense
    from edgecond.data import load_dataset

    ds = load_dataset(tiny_npz)
    cfg = SubsetDegradationConfig(dataset=tiny_npz, base="dm", ipc=3, condense_overrides=dict(TINY, iterations=6))
    ms, result = mdc_condense(ds, cfg, progress=False)
    assert_ran_mdc(result.buffer)
