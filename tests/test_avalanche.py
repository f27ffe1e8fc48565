"""Continual learning: allocation, budget schedules, the Avalanche storage policy and the
per-experience condensation cache.

The stream tests build tiny multisize buffers directly from random real images
(``MultisizeBuffer.from_class_major``) so they run in seconds.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from edgecond.continual import (
    ConstantSchedule,
    ExperienceCondenseConfig,
    ListSchedule,
    TraceSchedule,
    allocate,
    cache_key,
    class_subset,
    condense_classes,
    make_schedule,
    memory_used,
)
from edgecond.errors import BudgetError, ConfigError

# Avalanche's own noise: ReplayPlugin calls the deprecated ExemplarsBuffer.update (which forwards
# to our post_adapt), and strategies built with evaluator=None warn that nothing is logged.
pytestmark = [
    pytest.mark.filterwarnings("ignore:No loggers specified"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

# --------------------------------------------------------------------------- allocation


def test_allocate_is_class_balanced_and_fills_the_budget():
    got = allocate({0: 50, 1: 50, 2: 50, 3: 50}, 10)
    assert got == {0: 3, 1: 3, 2: 2, 3: 2}
    assert sum(got.values()) == 10


def test_allocate_caps_at_what_a_class_has_and_gives_the_rest_to_others():
    got = allocate({0: 50, 1: 50, 2: 3}, 20)
    assert got == {0: 9, 1: 8, 2: 3}
    assert allocate({0: 2, 1: 3}, 100) == {0: 2, 1: 3}  # everything fits


def test_allocate_counts_the_cost_of_each_stored_image():
    # factor-2 images cost 4 items each
    got = allocate({0: 10, 1: 10}, 20, cost_per_image={0: 4, 1: 1})
    assert memory_used(got, {0: 4, 1: 1}) <= 20
    assert got == {0: 4, 1: 4}
    assert allocate({0: 10, 1: 10}, 7, cost_per_image=4) == {0: 1, 1: 0}


@pytest.mark.parametrize("budget", range(0, 60, 7))
def test_allocate_never_exceeds_and_is_monotone(budget):
    avail = {3: 9, 1: 4, 7: 12}
    cost = {3: 1, 1: 4, 7: 1}
    got = allocate(avail, budget, cost_per_image=cost)
    assert list(got) == [3, 1, 7]  # keys keep the caller's order
    assert memory_used(got, cost) <= budget
    assert all(0 <= got[c] <= avail[c] for c in avail)
    bigger = allocate(avail, budget + 1, cost_per_image=cost)
    assert all(bigger[c] >= got[c] for c in avail)


def test_allocate_tiny_budget_and_empty():
    assert allocate({5: 10, 2: 10, 9: 10}, 2) == {5: 1, 2: 1, 9: 0}
    assert allocate({}, 10) == {}
    assert allocate({0: 0, 1: 4}, 3) == {0: 0, 1: 3}


def test_allocate_rejects_bad_input_with_domain_errors():
    with pytest.raises(BudgetError, match="budget_items"):
        allocate({0: 3}, -1)
    with pytest.raises(ConfigError, match="ipc_available"):
        allocate({0: -3}, 5)
    with pytest.raises(ConfigError, match="cost_per_image"):
        allocate({0: 3, 1: 3}, 5, cost_per_image={0: 1})


# --------------------------------------------------------------------------- schedules


def test_schedules():
    assert ConstantSchedule(7).values(3) == [7, 7, 7]
    s = ListSchedule([40, 20, 30])
    assert s.values(5) == [40, 20, 30, 30, 30]
    assert ListSchedule([1, 2], after="cycle").values(4) == [1, 2, 1, 2]
    with pytest.raises(BudgetError, match="past the end"):
        ListSchedule([1, 2], after="error")(2)
    assert make_schedule(5).values(2) == [5, 5]
    assert make_schedule([3, 1]).values(2) == [3, 1]

    class Trace:  # the edgecond.budget trace protocol: budget(client, round) -> bytes
        def budget(self, client, rnd):
            return 1000 * (rnd + 1) + client

    assert make_schedule(Trace()).values(2) == [1000, 2000]
    assert TraceSchedule(Trace(), client=2, scale=0.5).values(2) == [501, 1001]
    with pytest.raises(BudgetError):
        make_schedule("200")
    with pytest.raises(BudgetError):
        ListSchedule([])


# --------------------------------------------------------------------------- Avalanche stream

avalanche = pytest.importorskip("avalanche")


def _fixture_buffer(classes, ipc, *, seed, factor=1, size=8):
    """A small multisize buffer of random 'real' images whose slots are ``classes``."""
    from edgecond.buffer import MultisizeBuffer

    rng = np.random.default_rng(seed)
    images = rng.random((len(classes), ipc, 1, size, size), dtype=np.float32)
    # make classes separable so a model can learn something
    for k, c in enumerate(classes):
        images[k, :, :, c % size, :] = 1.0
    return MultisizeBuffer.from_class_major(
        images, labels=list(classes), class_names=[f"c{c}" for c in classes], dataset="toy",
        mean=[0.5], std=[0.3], factor=factor, method="random", config={"seed": seed}, dtype="float32",
    )


def _stream(num_classes=4, per_class=12, size=8, seed=0):
    from torch.utils.data import TensorDataset

    from avalanche.benchmarks import nc_benchmark

    g = torch.Generator().manual_seed(seed)
    y = torch.arange(num_classes).repeat_interleave(per_class)
    x = torch.rand(len(y), 1, size, size, generator=g)
    for c in range(num_classes):
        x[y == c, :, c % size, :] = 1.0
    yt = torch.arange(num_classes).repeat_interleave(4)
    xt = torch.rand(len(yt), 1, size, size, generator=g)
    return nc_benchmark(
        TensorDataset(x, y), TensorDataset(xt, yt), n_experiences=2, task_labels=False,
        fixed_class_order=list(range(num_classes)),
    )


class _Tiny(torch.nn.Module):
    def __init__(self, num_classes=4, size=8):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(size * size, num_classes))

    def forward(self, x):
        return self.net(x)


def _class_items(policy, c):
    xs = [policy.buffer[i][0] for i in range(len(policy.buffer)) if int(policy.buffer[i][1]) == c]
    return torch.stack(xs) if xs else torch.zeros(0)


def _assert_prefixes(policy, buffers_by_class):
    """Every class in memory holds exactly the first n stored images of its buffer."""
    for c, n in policy.counts.items():
        buf = buffers_by_class[c]
        x_all, y_all = buf.training_arrays(buf.ipc)
        want = torch.from_numpy(x_all[y_all == c])[: n * buf.factor**2]
        got = _class_items(policy, c)
        assert got.shape[0] == n * buf.factor**2
        if n:
            assert torch.allclose(got, want, atol=1e-6)


def test_condensed_buffer_shrinks_then_grows_with_naive_and_replay_plugin():
    from avalanche.training import Naive
    from avalanche.training.plugins import ReplayPlugin

    from clients.avalanche_replay import CondensedBuffer, MemoryBudgetPlugin

    bm = _stream()
    bufs = [_fixture_buffer([0, 1], 10, seed=1), _fixture_buffer([2, 3], 6, seed=2, factor=2)]
    by_class = {0: bufs[0], 1: bufs[0], 2: bufs[1], 3: bufs[1]}
    schedule = [12, 9]  # budget while training exp 0, exp 1 (shrinks); grows by resize below
    policy = CondensedBuffer(12, buffers=bufs, augment=False)  # raw items: prefixes are compared below
    budget = MemoryBudgetPlugin(policy, schedule)
    replay = ReplayPlugin(mem_size=12, storage_policy=policy, batch_size_mem=4)
    model = _Tiny()
    strategy = Naive(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), train_mb_size=8, train_epochs=1,
        eval_mb_size=16, plugins=[replay, budget], evaluator=None,
    )
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t, exp in enumerate(bm.train_stream):
            strategy.train(exp)
            assert len(policy.buffer) <= policy.max_size == schedule[t]
            _assert_prefixes(policy, by_class)
            seen.append(dict(policy.counts))
            item = policy.buffer[0]
            ref = exp.dataset[0]
            assert [type(v) for v in item] == [type(v) for v in ref]  # same item types
        strategy.eval(bm.test_stream)
    assert seen[0] == {0: 6, 1: 6}
    # exp 1 trained under budget 9; the memory then added classes 2, 3 (4 items per image)
    # factor-2 images cost 4 items: level 0 + one image each while it fits, in class order
    assert seen[1] == {0: 1, 1: 1, 2: 1, 3: 0}
    # grow: resize takes longer prefixes again (nothing was lost)
    policy.resize(strategy, 30)
    assert len(policy.buffer) <= 30
    assert policy.counts[0] >= 3 and policy.counts[2] >= 3
    _assert_prefixes(policy, by_class)
    # shrink to zero and back
    policy.resize(strategy, 0)
    assert len(policy.buffer) == 0
    policy.resize(strategy, 8)
    assert len(policy.buffer) <= 8
    _assert_prefixes(policy, by_class)
    # the replay loader consumed memory items next to stream items of the same types
    assert policy.history[-1]["used"] <= 8


def test_condensed_buffer_mirrors_tensor_labels_and_gdumb_style():
    from avalanche.benchmarks.scenarios.supervised import class_incremental_benchmark
    from avalanche.benchmarks.utils.utils import as_classification_dataset
    from avalanche.training import Naive
    from torch.utils.data import TensorDataset

    from clients.avalanche_replay import CondensedBuffer, GDumbStylePlugin

    g = torch.Generator().manual_seed(3)
    y = torch.arange(4).repeat_interleave(6)
    tr = TensorDataset(torch.rand(len(y), 1, 8, 8, generator=g), y)
    tr.targets = y.tolist()
    te = TensorDataset(torch.rand(len(y), 1, 8, 8, generator=g), y)
    te.targets = y.tolist()
    bm = class_incremental_benchmark(
        {"train": as_classification_dataset(tr), "test": as_classification_dataset(te)},
        class_order=[0, 1, 2, 3], num_experiences=2,
    )
    whole = _fixture_buffer([0, 1, 2, 3], 5, seed=4)  # one buffer covering all classes
    policy = CondensedBuffer(16, buffers=whole, normalize=True, augment=False)  # raw items compared below
    model = _Tiny()
    strategy = Naive(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), train_mb_size=8, train_epochs=1,
        plugins=[GDumbStylePlugin(policy)], evaluator=None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for exp in bm.train_stream:
            strategy.train(exp)
            item = policy.buffer[0]
            ref = exp.dataset[0]
            assert len(item) == len(ref) == 2
            assert isinstance(item[1], torch.Tensor) and item[1].dtype == ref[1].dtype
            assert len(policy.buffer) <= 16
    assert policy.counts == {0: 4, 1: 4, 2: 4, 3: 4}
    # normalize=True: (x - mean) / std of the buffer's statistics
    x_all, y_all = whole.training_arrays(4)
    want = (torch.from_numpy(x_all[y_all == 2]) - 0.5) / 0.3
    assert torch.allclose(_class_items(policy, 2), want, atol=1e-5)


def test_condensed_buffer_byte_budget_and_errors():
    from clients.avalanche_replay import CondensedBuffer

    bm = _stream()
    buf = _fixture_buffer([0, 1, 2, 3], 10, seed=5)  # float32 1x8x8 = 256 bytes per image
    policy = CondensedBuffer(256 * 6, buffers=buf, unit="bytes")
    for exp in bm.train_stream:
        policy.post_adapt(None, exp)
        assert policy.used() <= policy.max_size
    assert policy.counts == {0: 2, 1: 2, 2: 1, 3: 1}
    shifted = CondensedBuffer(4, buffers=buf, transform=lambda x: x + 10.0, augment=False)  # an Avalanche transform
    shifted.post_adapt(None, bm.train_stream[0])
    assert float(shifted.buffer[0][0].min()) >= 10.0
    with pytest.raises(ConfigError, match="unit"):
        CondensedBuffer(10, buffers=buf, unit="kilos")
    with pytest.raises(BudgetError):
        CondensedBuffer(-1, buffers=buf)
    wrong = CondensedBuffer(10, buffers=[_fixture_buffer([5, 6], 3, seed=0)])
    with pytest.raises(ConfigError, match="holds classes"):
        wrong.post_adapt(None, bm.train_stream[0])
    short = CondensedBuffer(10, buffers=[buf])
    short.post_adapt(None, bm.train_stream[0])
    with pytest.raises(ConfigError, match="no buffer for experience 1"):
        short.post_adapt(None, bm.train_stream[1])


def test_memory_budget_plugin_works_with_avalanche_buffers():
    from avalanche.training import Naive
    from avalanche.training.plugins import ReplayPlugin
    from avalanche.training.storage_policy import ClassBalancedBuffer

    from clients.avalanche_replay import MemoryBudgetPlugin

    bm = _stream()
    policy = ClassBalancedBuffer(max_size=8, adaptive_size=True)
    replay = ReplayPlugin(mem_size=8, storage_policy=policy)
    budget = MemoryBudgetPlugin(policy, [8, 4])
    model = _Tiny()
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), train_mb_size=8,
                     train_epochs=1, plugins=[budget, replay], evaluator=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for exp in bm.train_stream:
            strategy.train(exp)
    assert budget.applied == [(0, 8), (1, 4)]
    assert len(policy.buffer) <= 4 and replay.mem_size == 4


# --------------------------------------------------------------------------- cache


def test_condense_classes_caches_by_content_key(tmp_path):
    pytest.importorskip("edgecond.condense")
    from edgecond.data import from_arrays

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 10)
    x = rng.random((len(y), 1, 8, 8), dtype=np.float32)
    ds = from_arrays("toy", x, y, x[:8], y[:8])
    cfg = ExperienceCondenseConfig(method="random", hooks="none", ipc=3, seed=1)
    a = condense_classes(ds, [2, 3], cfg, cache_dir=tmp_path, progress=False)
    files = sorted(tmp_path.glob("*.safetensors"))
    assert len(files) == 1
    from clients.avalanche_replay import buffer_class_labels

    assert buffer_class_labels(a) == [2, 3] and a.ipc == 3
    mtime = files[0].stat().st_mtime_ns
    b = condense_classes(ds, [2, 3], cfg, cache_dir=tmp_path, progress=False)  # cache hit
    assert files[0].stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(a.images_class_major(), b.images_class_major())
    # the selected images are images of classes 2 and 3 of the dataset
    sub = class_subset(ds, [2, 3])
    assert sub.class_names == ["2", "3"] and int(sub.y_train.max()) == 1
    # another seed, other classes or other data -> another key
    k0 = cache_key(ds, [2, 3], cfg)
    assert cache_key(ds, [2, 3], ExperienceCondenseConfig(method="random", hooks="none", ipc=3, seed=2)) != k0
    assert cache_key(ds, [1, 3], cfg) != k0
    x2 = x.copy()
    x2[y == 2] *= 0.5
    assert cache_key(from_arrays("toy", x2, y, x[:8], y[:8]), [2, 3], cfg) != k0
    condense_classes(ds, [0, 1], cfg, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    with pytest.raises(ConfigError, match="hooks"):
        condense_classes(ds, [0, 1], ExperienceCondenseConfig(method="random", hooks="weird"),
                         cache_dir=tmp_path, progress=False)
