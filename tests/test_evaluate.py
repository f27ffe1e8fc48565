"""edgecond.evaluate: presets, LR schedule, training determinism, soft targets, seeds, buffers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgecond import evaluate as E
from edgecond.data import load_dataset
from edgecond.errors import ConfigError



TINY = dict(model="convnet", model_kwargs={"width": 8}, batch_size=16)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_presets():
    q, p = E.eval_preset("quick"), E.eval_preset("paper")
    assert q.epochs == 300 and p.epochs == 1000
    for c in (q, p):
        assert (c.lr, c.momentum, c.weight_decay, c.cutmix_prob) == (0.01, 0.9, 5e-4, 0.5)
        assert c.model == "convnet" and "crop" in c.augment
    assert E.eval_preset("quick", epochs=7, model="mlp").epochs == 7
    with pytest.raises(ConfigError, match="expected one of quick, paper"):
        E.eval_preset("slow")
    with pytest.raises(ConfigError, match=r"unknown EvalConfig field\(s\) \['epoch'\]"):
        E.eval_preset("quick", epoch=3)
    with pytest.raises(ConfigError, match="epochs=0"):
        E.eval_preset("quick", epochs=0)
    with pytest.raises(ConfigError, match="cutmix_prob"):
        E.eval_preset("quick", cutmix_prob=2.0)


def test_lr_schedule_steps_at_two_thirds_and_five_sixths():
    lrs = [E.lr_for_epoch(e, 300, 0.01) for e in range(300)]
    assert lrs[0] == lrs[199] == 0.01
    assert lrs[200] == pytest.approx(0.001) and lrs[249] == pytest.approx(0.001)
    assert lrs[250] == pytest.approx(0.0001) and lrs[299] == pytest.approx(0.0001)
    assert [E.lr_for_epoch(e, 6, 1.0) for e in range(6)] == pytest.approx([1, 1, 1, 1, 0.1, 0.01])


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_batches_are_near_equal_and_cover_every_sample():
    """No small leftover batch: 70 images at 64 are 35 + 35 (a 64 + 6 split cost accuracy)."""
    for n, size, expect in [(70, 64, [35, 35]), (130, 64, [44, 43, 43]), (64, 64, [64]), (10, 64, [10]),
                            (1, 64, [1]), (129, 64, [43, 43, 43])]:
        out = E._batches(n, size, torch.Generator().manual_seed(0))
        assert [len(b) for b in out] == expect, n
        assert sorted(torch.cat(out).tolist()) == list(range(n))


def test_train_deterministic_and_seed_dependent(digits):
    cfg = E.eval_preset("quick", epochs=2, **TINY)
    x, y = digits.subset_per_class(3, seed=0)
    a = E.train_model(x, y, digits, cfg, seed=0)
    b = E.train_model(x, y, digits, cfg, seed=0)
    c = E.train_model(x, y, digits, cfg, seed=1)
    assert torch.equal(_params(a), _params(b))
    assert not torch.equal(_params(a), _params(c))
    assert not a.training
    acc = E.test_accuracy(a, digits)
    assert 0.0 <= acc <= 1.0 and acc * len(digits.y_test) == pytest.approx(round(acc * len(digits.y_test)))


def test_global_rng_untouched(digits):
    cfg = E.eval_preset("quick", epochs=1, **TINY)
    x, y = digits.subset_per_class(1, seed=0)
    torch.manual_seed(7)
    state = torch.get_rng_state()
    E.train_and_test(x, y, digits, cfg, seed=3)
    assert torch.equal(torch.get_rng_state(), state)


def test_learns_digits(digits):
    # full digits, MLP, no augmentation: far above chance in a few epochs
    cfg = E.eval_preset("quick", epochs=6, model="mlp", augment="none", cutmix_prob=0.0, batch_size=64)
    acc = E.train_and_test(digits.x_train, digits.y_train, digits, cfg, seed=0)
    assert acc > 0.8


def test_soft_targets_one_hot_equals_hard_labels(digits):
    cfg = E.eval_preset("quick", epochs=2, **TINY)
    x, y = digits.subset_per_class(2, seed=1)
    hard = E.train_model(x, y, digits, cfg, seed=0)
    soft = E.train_model(x, y, digits, cfg, seed=0, soft_targets=torch.nn.functional.one_hot(y, 10).float())
    assert torch.allclose(_params(hard), _params(soft), atol=1e-5)
    smooth = torch.full((len(y), 10), 0.1)
    other = E.train_model(x, y, digits, cfg, seed=0, soft_targets=smooth)
    assert not torch.allclose(_params(hard), _params(other), atol=1e-5)
    with pytest.raises(ConfigError, match=r"soft_targets has shape \(20, 3\); expected \[20, 10\]"):
        E.train_model(x, y, digits, cfg, seed=0, soft_targets=torch.zeros(20, 3))


def test_input_errors(digits):
    cfg = E.eval_preset("quick", epochs=1, **TINY)
    with pytest.raises(ConfigError, match=r"expected a float tensor \[M, 1, 8, 8\]"):
        E.train_and_test(torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.long), digits, cfg, seed=0)
    with pytest.raises(ConfigError, match=r"expected 0..9"):
        E.train_and_test(torch.zeros(4, 1, 8, 8), torch.full((4,), 10), digits, cfg, seed=0)
    with pytest.raises(ConfigError, match="seeds is empty"):
        E.evaluate_seeds(torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), digits, cfg, seeds=[])


def test_evaluate_seeds(digits):
    cfg = E.eval_preset("quick", epochs=1, **TINY)
    x, y = digits.subset_per_class(1, seed=0)
    r = E.evaluate_seeds(x, y, digits, cfg, seeds=[0, 1], progress=False)
    assert r.seeds == [0, 1] and len(r.accuracies) == 2
    assert r.mean == pytest.approx(np.mean(r.accuracies)) and r.std == pytest.approx(np.std(r.accuracies))
    d = r.to_dict()
    assert d["config"]["epochs"] == 1 and "±" in str(r)


class FakeBuffer:
    """The slice of the MultisizeBuffer contract that evaluate_buffer uses."""

    def __init__(self, dataset, ipc=2):
        self.ipc, self.num_classes = ipc, dataset.num_classes
        x, y = dataset.subset_per_class(ipc, seed=0)  # class-major
        self._x = x.view(dataset.num_classes, ipc, *dataset.image_shape).numpy()
        self.calls = []

    def training_arrays(self, n=None, *, decode=True):
        self.calls.append(n)
        x = self._x[:, :n].transpose(1, 0, 2, 3, 4).reshape(-1, *self._x.shape[2:])  # rank-major
        y = np.tile(np.arange(self.num_classes), n)
        return x.astype(np.float32), y.astype(np.int64)

    def bytes_for(self, n):
        return 100 * n


def test_evaluate_buffer(digits):
    buf = FakeBuffer(digits)
    cfg = E.eval_preset("quick", epochs=1, **TINY)
    res = E.evaluate_buffer(buf, digits, cfg, sizes=[1, 2], seeds=[0], progress=False)
    assert [r.size for r in res] == [1, 2] and [r.bytes for r in res] == [100, 200]
    assert buf.calls == [1, 2] and all(0 <= r.mean <= 1 and r.std == 0 for r in res)
    assert set(res[0].to_dict()) >= {"size", "bytes", "mean", "std", "accuracies"}
    with pytest.raises(ConfigError, match="outside the buffer's 1..2"):
        E.evaluate_buffer(buf, digits, cfg, sizes=[3], seeds=[0], progress=False)


def test_evaluate_buffer_uses_soft_labels(digits):
    class SoftBuffer(FakeBuffer):
        has_soft_labels = True

        class meta:  # noqa: N801 - mimics BufferMeta.soft
            soft = {"kind": "probs"}

        def soft_targets(self, n=None, *, decode=True):
            self.calls.append(("soft", n))
            _, y = self.training_arrays(n)
            self.calls.pop()
            return np.eye(self.num_classes, dtype=np.float32)[y]

    cfg = E.eval_preset("quick", epochs=1, **TINY)
    soft_buf, hard_buf = SoftBuffer(digits), FakeBuffer(digits)
    soft = E.evaluate_buffer(soft_buf, digits, cfg, sizes=[2], seeds=[0], progress=False)
    hard = E.evaluate_buffer(hard_buf, digits, cfg, sizes=[2], seeds=[0], progress=False)
    assert ("soft", 2) in soft_buf.calls
    assert soft[0].mean == pytest.approx(hard[0].mean, abs=2.5 / len(digits.y_test))  # one-hot == hard
