"""The MDC/IDM reference-parity harness's own pieces (benchmarks/reference_parity_methods.py):
the checkout patches apply exactly once, the displacement agreement and the accuracy meter."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import reference_parity_methods as rpm  # noqa: E402


def test_patches_apply_once_and_are_idempotent(tmp_path):
    (tmp_path / "a.py").write_text("x = np.int(3)\n        ''' training '''\ny = 'cuda'\n")
    patches = [("a.py", "np.int(", "int("),
               ("a.py", "        ''' training '''\n", "        pass  # hook\n        ''' training '''\n")]
    for _ in range(3):  # a patch whose new text keeps its old text must not stack up
        rpm._patch(tmp_path, patches, device_files=["a.py"])
    s = (tmp_path / "a.py").read_text()
    assert s.count("pass  # hook") == 1
    assert "np.int(" not in s and "x = int(3)" in s
    assert "'cpu'" in s and "'cuda'" not in s
    with pytest.raises(SystemExit):
        rpm._patch(tmp_path, [("a.py", "text that is not there", "new")])


def test_displacements_norm_ratio_and_cosine(tmp_path):
    imgs = tmp_path / "images"
    init = torch.rand(2, 1, 3, 4, 4)
    d = torch.randn_like(init)
    rpm.rp._save_images(imgs / "init.safetensors", init)
    rpm.rp._save_images(imgs / "ref-b5-s1.safetensors", init + 0.01 * d)
    rpm.rp._save_images(imgs / "ec-b5-s1.safetensors", init - 0.02 * d)
    cond = [{"arm": "ref", "budget": "5", "seed": 1}, {"arm": "ec", "budget": "5", "seed": 1}]
    (m,) = rpm._displacements(tmp_path, cond)
    assert m["norm_ratio"] == pytest.approx(2.0, rel=1e-4)
    assert m["cosine"] == pytest.approx(-1.0, abs=1e-5)
    assert m["dpix_ec"] == pytest.approx(2 * m["dpix_ref"], rel=1e-4)
    assert rpm._displacements(tmp_path, [{"arm": "ref", "budget": "9", "seed": 1}]) == []  # no files: no row


def test_class_accuracy_meter_reads_like_torchnet():
    m = rpm._ClassAccuracy(accuracy=True)
    assert m.n == 0
    m.add(torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]]), torch.tensor([0, 1, 1]))
    assert m.n == 3 and m.value()[0] == pytest.approx(200.0 / 3)
    m.reset()
    assert m.n == 0
