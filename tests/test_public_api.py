"""The public API (issue 20): lazy top-level names, torch-free imports, py.typed, pictures,
progress lines, file modes."""
from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgecond
from edgecond.buffer import MultisizeBuffer
from edgecond.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def test_import_edgecond_and_buffer_stay_torch_free():
    code = ("import sys, edgecond, edgecond.buffer, edgecond.budget, edgecond.show, edgecond.progress\n"
            "from edgecond import MultisizeBuffer, ipc_for_bytes, parse_bytes, image_grid, EdgecondError\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    r = _run(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout


def test_top_level_names_resolve_to_the_library_objects():
    r = _run("from edgecond import MultisizeBuffer, load_dataset, condense; print('ok')")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    from edgecond.buffer import MultisizeBuffer as B
    from edgecond.data import load_dataset
    from edgecond.evaluate import evaluate_buffer

    assert edgecond.MultisizeBuffer is B
    assert edgecond.load_dataset is load_dataset
    assert edgecond.evaluate_buffer is evaluate_buffer
    for name in edgecond.__all__:  # every advertised name exists
        assert getattr(edgecond, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        edgecond.nope  # noqa: B018
    assert (ROOT / "edgecond" / "py.typed").is_file()


def test_condense_and_deploy_are_callable_and_still_modules():
    import edgecond.condense.engine as engine  # module paths keep working after the top-level import
    from edgecond import condense, deploy, load_dataset, condense_preset

    assert callable(condense) and callable(deploy)
    assert condense.engine is engine and hasattr(deploy, "DeployConfig")
    data = load_dataset("digits")
    r = condense(data, condense_preset("random", "quick", "digits", ipc=2), progress=False)
    assert r.buffer.ipc == 2 and r.buffer.num_classes == 10


def _toy(k=3, n=4, seed=0) -> MultisizeBuffer:
    rng = np.random.default_rng(seed)
    x = rng.random((k, n, 3, 8, 8), dtype=np.float32)
    return MultisizeBuffer.from_class_major(x, class_names=[f"c{i}" for i in range(k)], dataset="toy",
                                            mean=[0.5] * 3, std=[0.25] * 3, factor=1, method="random",
                                            config={}, dtype="uint8")


def test_image_grid_layout_and_columns_differ_per_rank():
    from edgecond.show import image_grid

    buf = _toy()
    g = image_grid(buf)
    assert g.shape == (3 * 9 - 1, 4 * 9 - 1, 3) and g.dtype == np.uint8
    tiles = [g[0:8, j * 9: j * 9 + 8] for j in range(4)]
    assert all(not np.array_equal(tiles[0], t) for t in tiles[1:])
    want = (np.clip(buf.images_class_major()[1, 2], 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)
    assert np.array_equal(g[9:17, 18:26], want)  # row = class 1, column = rank 2
    assert image_grid(buf, n=2).shape[1] == 2 * 9 - 1


def test_show_command_writes_a_png_that_grows_and_changes_with_sizes(tmp_path):
    from edgecond.cli import main

    buf = _toy(k=4, n=10)
    path = tmp_path / "b.safetensors"
    buf.save(path)
    outs = {}
    for sizes in ("1", "1,2", "1,2,10"):
        out = tmp_path / f"grid-{sizes.replace(',', '_')}.png"
        assert main(["show", str(path), "--sizes", sizes, "-o", str(out)]) == 0
        data = out.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        outs[sizes] = (data, width, height)
    assert outs["1"][0] != outs["1,2"][0] != outs["1,2,10"][0]
    assert outs["1,2,10"][1] > outs["1"][1]  # more ranks, wider picture
    assert main(["show", str(path), "--sizes", "0,11", "-o", str(tmp_path / "x.png")]) == 2


def test_saved_buffer_mode_respects_umask(tmp_path):
    old = os.umask(0o022)
    try:
        _toy().save(tmp_path / "a.safetensors")
        os.umask(0o077)
        _toy().save(tmp_path / "b.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.safetensors").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.safetensors").stat().st_mode) == 0o600


def test_progress_logs_periodic_lines_when_not_a_terminal(monkeypatch, caplog):
    from edgecond.progress import LogProgress, progress_bar

    monkeypatch.setenv("EDGECOND_PROGRESS", "log")
    monkeypatch.setenv("EDGECOND_PROGRESS_INTERVAL", "0")
    with caplog.at_level(logging.INFO, logger="edgecond.progress"):
        bar = progress_bar(total=4, desc="work", unit="step")
        assert isinstance(bar, LogProgress)
        for _ in range(4):
            bar.set_postfix(loss=0.5)
            bar.update(1)
        bar.close()
        inner = progress_bar(range(3), desc="inner", leave=False)
        assert list(inner) == [0, 1, 2]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("work: 1/4 step (25%)") and "left" in lines[0] and "loss=0.5" in lines[0]
    assert lines[-1].startswith("work: 4/4 step (100%)") and "done" in lines[-1]
    assert len(lines) == 4 and not any("inner" in line for line in lines)  # inner bars are silent in logs
    monkeypatch.setenv("EDGECOND_PROGRESS_INTERVAL", "3600")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edgecond.progress"):
        bar = progress_bar(total=1000, desc="long")
        for _ in range(1000):
            bar.update(1)
        bar.close()
    assert len(caplog.records) == 1  # one line at the end, not one per step
