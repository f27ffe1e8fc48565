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


def test_recipe_plugin_trains_avalanche_random_exemplars_by_the_recipe(monkeypatch):
    """Fairness (issue 15): Avalanche's own random-exemplar buffer trains under the same recipe
    as a condensed memory — every training batch goes through augment_batch with the recipe,
    and CutMix batches mix the loss of both label sets (dropping either fails)."""
    from avalanche.training import Naive
    from avalanche.training.plugins import ReplayPlugin
    from avalanche.training.storage_policy import ParametricBuffer, RandomExemplarsSelectionStrategy

    from clients.avalanche_replay import GDumbStylePlugin, RecipePlugin

    calls = _spy_aug(monkeypatch)
    mixed = Recipe(augment="crop_cutout", flips=False, cutmix_prob=1.0)
    policy = ParametricBuffer(8, groupby="class", selection_strategy=RandomExemplarsSelectionStrategy())
    plugin = RecipePlugin(mixed, seed=0)
    seen = []

    def criterion(out, y):
        seen.append(y.clone())
        return torch.nn.functional.cross_entropy(out, y)

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), criterion=criterion,
                     train_mb_size=4, train_epochs=1, evaluator=None,
                     plugins=[GDumbStylePlugin(policy), plugin])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for exp in _stream().train_stream:
            strategy.train(exp)
    assert plugin.batches > 0 and len(calls) == plugin.batches and all(c == mixed for c in calls)
    assert plugin.cutmixed == plugin.batches  # cutmix_prob 1: every batch mixed
    assert len(seen) == 2 * plugin.batches  # lam * CE(y) + (1 - lam) * CE(y[perm]) per step
    assert strategy._criterion is criterion  # restored after training
    with pytest.raises(Exception, match="Recipe"):
        RecipePlugin("crop")
    _ = ReplayPlugin  # the same plugin works beside ReplayPlugin (benchmarks/continual.py)


def test_continual_benchmark_trains_every_arm_by_one_shared_recipe():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "continual.py"
    import sys

    spec = importlib.util.spec_from_file_location("bench_continual_i15", path)
    cont = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = cont  # its dataclasses resolve annotations through sys.modules
    try:
        spec.loader.exec_module(cont)
    finally:
        del sys.modules[spec.name]
    a, b = _buffer(), _buffer(classes=(4, 5, 6, 7))
    assert cont.shared_recipe({"mdc": [a], "herding": [b]}, flips=False) == RECIPE
    other = _buffer(recipe=Recipe(augment="crop", flips=False))
    with pytest.raises(Exception, match="different training recipes"):
        cont.shared_recipe({"mdc": [a], "herding": [other]}, flips=False)
    assert set(cont.ARMS) <= set(cont.default_arms())
    assert all(m not in cont.extra_arms() for m in ("random", "herding", "idc", "idm", "dm"))
