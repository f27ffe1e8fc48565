"""One reader for every client (issue 22 item, issue 15): prefix_arrays gives the per-class
prefix arrays, their targets (soft labels when present) and the normalisation."""
from __future__ import annotations

import numpy as np
import pytest

from edgecond.buffer import MultisizeBuffer
from edgecond.errors import ConfigError
from edgecond.prefix import prefix_arrays
from edgecond.recipe import Recipe, targets_of

RECIPE = Recipe(augment="crop", flips=False, temperature=2.0)


def _buffer(*, soft=True, factor=1, labels=(3, 5, 7)):
    rng = np.random.default_rng(0)
    images = rng.random((len(labels), 4, 1, 8, 8), dtype=np.float32)
    s = rng.normal(size=(len(labels), 4, factor * factor, 10)).astype(np.float32) if soft else None
    return MultisizeBuffer.from_class_major(images, labels=list(labels), class_names=[f"c{c}" for c in labels],
                                            dataset="toy", mean=[0.4], std=[0.2], method="random", factor=factor,
                                            dtype="float32", soft_labels=s, recipe=RECIPE)


def test_uniform_prefix_matches_training_arrays_and_soft_targets():
    buf = _buffer()
    p = prefix_arrays(buf, 2)
    x, y = buf.training_arrays(2)
    assert np.array_equal(p.x, x) and np.array_equal(p.y, y) and p.soft and len(p) == 6
    want = targets_of(y, 10, buf.soft_targets(2), soft_kind="logits", temperature=2.0)
    assert np.allclose(p.targets, want) and p.recipe == RECIPE and p.ranks == {3: 2, 5: 2, 7: 2}
    assert p.mean == (0.4,) and p.std == (0.2,)
    assert np.allclose(p.normalized(), (x - 0.4) / 0.2)


@pytest.mark.parametrize("factor", [1, 2])
def test_per_class_prefix_is_each_class_own_ranks(factor):
    buf = _buffer(factor=factor)
    p = prefix_arrays(buf, {5: 1, 3: 3})
    f2 = factor * factor
    assert list(p.y) == [5] * f2 + [3] * 3 * f2
    assert np.allclose(p.x[:f2], buf.class_training_images(1, 1))
    assert np.allclose(p.x[f2:], buf.class_training_images(0, 3))
    s = buf.soft_targets(3, decode=False)  # [n*K, f², L] rank-major
    assert np.allclose(p.targets[:f2], targets_of(np.zeros(f2, np.int64), 10, s[1].reshape(f2, -1),
                                                   temperature=2.0))


def test_one_hot_targets_without_soft_labels_and_bad_requests():
    buf = _buffer(soft=False)
    p = prefix_arrays(buf, {7: 2}, num_classes=12)
    assert not p.soft and p.targets.shape == (2, 12) and (p.targets.argmax(1) == 7).all()
    with pytest.raises(ConfigError, match="not in the buffer"):
        prefix_arrays(buf, {4: 1})
    with pytest.raises(ConfigError, match="ranks"):
        prefix_arrays(buf, 9)
    with pytest.raises(ConfigError, match="num_classes"):
        prefix_arrays(buf, 1, num_classes=5)


def test_every_client_reads_prefixes_through_prefix_arrays(monkeypatch):
    """The Flower task, the Avalanche memory and the edge trainer all call prefix_arrays."""
    import edgecond.prefix as prefix_mod

    calls = []
    real = prefix_mod.prefix_arrays
    monkeypatch.setattr(prefix_mod, "prefix_arrays", lambda *a, **k: calls.append("x") or real(*a, **k))
    buf = _buffer()
    from clients import task

    assert len(task.condensed_set(buf, 10)) == 12 and len(calls) == 1
    pytest.importorskip("avalanche")
    from clients import avalanche_replay

    assert np.allclose(avalanche_replay._prefix(buf, 2, 3).x, buf.class_training_images(2, 3)) and len(calls) == 2
    pytest.importorskip("onnxruntime")
    from clients.edge import train as edge

    bundle = {"dir": "b", "num_classes": 10, "mean": [0.4], "std": [0.2],
              "training": {"augment": {"enabled": True, "flip": False}}}
    p = edge.load_prefix(bundle, buf)
    assert len(calls) == 3 and np.array_equal(p.x, buf.training_arrays()[0])
    with pytest.raises(ConfigError, match="differs from its buffer"):
        edge.load_prefix({**bundle, "std": [0.3]}, buf)
