"""Pictures and progress of a condensation run (issue 20): TensorBoard image grids at the log
interval, and the demo's plot with its random-real line, in a log of a few lines."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_condense_logs_image_grids_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from edgecond.condense import condense, condense_preset
    from edgecond.data import load_dataset

    data = load_dataset("digits")
    cfg = condense_preset("dm", "quick", "digits", ipc=3, iterations=4)
    result = condense(data, cfg, progress=False, tensorboard_dir=tmp_path / "tb")
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    assert "images" in acc.Tags()["images"] and "loss" in acc.Tags()["scalars"]
    events = acc.Images("images")
    assert [e.step for e in events] == [0, 1, 2, 3]  # ceil(4 / 10) = every iteration
    # 10 classes x 3 ranks of 8x8 digits with 1-pixel gaps
    assert {(e.height, e.width) for e in events} == {(10 * 9 - 1, 3 * 9 - 1)}
    assert events[0].encoded_image_string != events[-1].encoded_image_string  # the images moved
    from edgecond.show import image_grid
    import io

    from PIL import Image

    last = np.asarray(Image.open(io.BytesIO(events[-1].encoded_image_string)).convert("RGB"))
    assert np.abs(last.astype(int) - image_grid(result.buffer).astype(int)).max() <= 1  # the final images


@pytest.mark.slow
def test_demo_writes_a_random_real_line_and_a_short_log(tmp_path):
    """`make demo` redirected to a file: progress becomes a few log lines (tiny settings here)."""
    out = tmp_path / "demo"
    log = tmp_path / "demo.log"
    with open(log, "w") as fh:
        r = subprocess.run([sys.executable, "-m", "edgecond.demo", "--out", str(out), "--base", "dm", "--seeds", "2",
                            "--ipc", "2", "--iterations", "3", "--epochs", "3"],
                           cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, timeout=600,
                           env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    text = log.read_text()
    assert r.returncode == 0, text[-3000:]
    assert "\r" not in text and len(text.splitlines()) < 40, text  # no bar redraws in a file
    assert "random real images" in text
    report = json.loads((out / "demo.json").read_text())
    assert report["random"]["sizes"] == [1, 2] and len(report["random"]["accuracies"][0]) == 2
    assert report["MDC"]["sizes"] == [1, 2]
    png = (out / "demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # the plot has two lines: drawing MDC alone gives a different picture
    from edgecond.report import SubsetDegradationResult

    alone = SubsetDegradationResult.from_dict(report)
    del alone.methods["random"]
    assert alone.plot(tmp_path / "alone.png").read_bytes() != png
