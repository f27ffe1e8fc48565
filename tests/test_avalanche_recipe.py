"""Issue 15 in Avalanche: CondensedBuffer items carry their buffer's augmentation (recipe), and
the buffer's soft labels reach the loss (SoftLabelPlugin)."""
from __future__ import annotations

import types
import warnings

import numpy as np
import pytest
import torch

from edgecond.buffer import MultisizeBuffer
from edgecond.recipe import Recipe, recipe_of

avalanche = pytest.importorskip("avalanche")

RECIPE = Recipe(augment="color_crop_cutout_scale_rotate", flips=False, cutmix_prob=0.0)


def _buffer(classes=(0, 1, 2, 3), ipc=4, *, soft=False, recipe=RECIPE):
    rng = np.random.default_rng(0)
    images = rng.random((len(classes), ipc, 1, 8, 8), dtype=np.float32)
    s = rng.normal(size=(len(classes), ipc, 1, len(classes))).astype(np.float32) * 3 if soft else None
    return MultisizeBuffer.from_class_major(images, labels=list(classes), class_names=[f"c{c}" for c in classes],
                                            dataset="toy", mean=[0.5], std=[0.3], method="random",
                                            dtype="float32", soft_labels=s, recipe=recipe)


def _stream():
    from avalanche.benchmarks import nc_benchmark
    from torch.utils.data import TensorDataset

    g = torch.Generator().manual_seed(0)
    y = torch.arange(4).repeat_interleave(8)
    x = torch.rand(len(y), 1, 8, 8, generator=g)
    return nc_benchmark(TensorDataset(x, y), TensorDataset(x, y), n_experiences=2, task_labels=False,
                        fixed_class_order=[0, 1, 2, 3])


def _spy_aug(monkeypatch):
    import edgecond.recipe as recipe_mod

    calls = []
    real = recipe_mod.augment_batch

    def spy(x, recipe, rng):
        calls.append(recipe)
        return real(x, recipe, rng)

    monkeypatch.setattr(recipe_mod, "augment_batch", spy)
    return calls


@pytest.mark.parametrize("normalize", [False, True])
def test_memory_items_carry_the_buffer_augmentation(monkeypatch, normalize):
    from clients.avalanche_replay import CondensedBuffer

    calls = _spy_aug(monkeypatch)
    buf = _buffer()
    policy = CondensedBuffer(16, buffers=buf, normalize=normalize)
    policy.post_adapt(None, _stream().train_stream[0])
    a, b = policy.buffer[0][0], policy.buffer[0][0]
    assert calls and all(r == RECIPE for r in calls), "memory items were not augmented by the buffer's recipe"
    assert not torch.allclose(a, b)  # a fresh view on every access
    raw = CondensedBuffer(16, buffers=buf, normalize=normalize, augment=False)
    raw.post_adapt(None, _stream().train_stream[0])
    n = len(calls)
    assert torch.allclose(raw.buffer[0][0], raw.buffer[0][0]) and len(calls) == n


def test_buffers_without_recipe_use_the_protocol_defaults(monkeypatch):
    from clients.avalanche_replay import CondensedBuffer

    calls = _spy_aug(monkeypatch)
    buf = _buffer(recipe=None)
    policy = CondensedBuffer(8, buffers=buf)
    policy.post_adapt(None, _stream().train_stream[0])
    policy.buffer[0]
    assert calls == [recipe_of(buf, flips=False)] and "flip" not in calls[0].augment


def test_soft_labels_reach_the_loss(monkeypatch):
    import clients.avalanche_replay as ar
    from edgecond.recipe import targets_of

    buf = _buffer(soft=True)
    policy = ar.CondensedBuffer(16, buffers=buf)
    bm = _stream()
    policy.post_adapt(None, bm.train_stream[0])
    policy.post_adapt(None, bm.train_stream[1])
    seen = []
    real = ar._soft_ce

    def spy(logits, targets):
        seen.append(targets.detach().numpy().copy())
        return real(logits, targets)

    monkeypatch.setattr(ar, "_soft_ce", spy)
    calls = _spy_aug(monkeypatch)
    plugin = ar.SoftLabelPlugin(policy)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    strategy = types.SimpleNamespace(model=model, loss=torch.tensor(0.0), device="cpu")
    plugin.before_backward(strategy)
    assert seen and strategy.loss.item() > 0 and strategy.loss.requires_grad
    assert calls and calls[0] == RECIPE  # the memory batch is augmented by the recipe too
    want = targets_of(np.zeros(16, np.int64), 4, buf.soft_targets(4), soft_kind="logits")
    rows = seen[0]
    assert (rows.max(1) < 0.999).any(), "one-hot targets: the soft labels were dropped"
    for r in rows:
        assert np.abs(want - r).sum(1).min() < 1e-5


def test_soft_label_plugin_trains_beside_replay():
    from avalanche.training import Naive
    from avalanche.training.plugins import ReplayPlugin

    from clients.avalanche_replay import CondensedBuffer, SoftLabelPlugin

    policy = CondensedBuffer(8, buffers=_buffer(soft=True))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), train_mb_size=8,
                     train_epochs=1, plugins=[ReplayPlugin(mem_size=8, storage_policy=policy, batch_size_mem=4),
                                               SoftLabelPlugin(policy, weight=0.5)], evaluator=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for exp in _stream().train_stream:
            strategy.train(exp)
    assert len(policy.buffer) <= 8 and policy.counts
