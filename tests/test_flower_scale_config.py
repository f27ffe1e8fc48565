"""The documented 100-client federation (docs/federated.md, *Many clients*) as Flower reads it:
``options.num-supernodes`` and ``options.backend.client-resources`` reach the Ray backend's
settings. No SuperLink or Ray is started (the 3-client Ray run is tests/test_flower_sim.py)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("flwr")
pytest.importorskip("psutil")

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("flower_scale", REPO / "benchmarks" / "flower_scale.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_documented_federation_config_reaches_the_ray_backend(tmp_path, monkeypatch):
    from flwr.cli.flower_config import read_superlink_connection

    text = _bench().flower_config(100, 1, 0.25)
    docs = (REPO / "docs" / "federated.md").read_text()
    for line in ("options.num-supernodes = 100", "options.backend.client-resources.num-cpus = 1"):
        assert line in text and line in docs
    monkeypatch.setenv("FLWR_HOME", str(tmp_path))
    (tmp_path / "config.toml").write_text(text)
    conn = read_superlink_connection("sim")
    assert conn.address == ":local:"
    assert conn.options.num_supernodes == 100
    res = conn.options.backend.client_resources
    assert (res.num_cpus, res.num_gpus) == (1, 0.25)
