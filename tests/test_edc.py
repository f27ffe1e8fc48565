"""EDC: observers cached by content hash, the matcher does what it says, soft labels end to end."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgecond.buffer import MultisizeBuffer
from edgecond.data import load_dataset

OBS = [{"model": "convnet-bn", "model_kwargs": {"width": 8}}]


def _arrays(seed: int = 0, classes: int = 3, n: int = 16, m: int = 6):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:8, 0:8]

    def make(k):
        xs, ys = [], []
        for c in range(classes):
            blob = np.exp(-((yy - 2 - 2 * c) ** 2 + (xx - 6 + 2 * c) ** 2) / 4.0)
            x = blob[None] * rng.uniform(0.6, 1.0, (k, 1, 1)) + 0.15 * rng.random((k, 8, 8))
            xs.append((np.clip(x, 0, 1) * 255).astype(np.uint8))
            ys.append(np.full(k, c))
        return np.concatenate(xs), np.concatenate(ys)

    xtr, ytr = make(n)
    xte, yte = make(m)
    return xtr, ytr, xte, yte


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("edcdata") / "tiny8.npz"
    xtr, ytr, xte, yte = _arrays()
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return load_dataset(f"npz:{path}")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("observers"))


def _edc_config(ds, cache, **over):
    from edgecond.condense import condense_preset

    mc = {"observers": OBS, "observer_epochs": 3, "cache_dir": cache, "class_stat_images": 8}
    mc.update(over.pop("method_config", {}))
    return condense_preset("edc", "quick", ds, ipc=over.pop("ipc", 2), iterations=over.pop("iterations", 12),
                           batch_real=8, method_config=mc, **over)


def test_observer_cache_hit_by_content_hash(tiny, tmp_path):
    from edgecond import observers as O

    cfg = O.ObserverConfig(model="convnet-bn", model_kwargs={"width": 8}, epochs=2)
    first = O.get_observer(tiny, cfg, cache_dir=tmp_path, progress=False)
    assert not first.cached and first.path and first.path.endswith(".safetensors")
    assert 0.0 <= first.test_accuracy <= 1.0
    O._MEMO.clear()
    second = O.get_observer(tiny, cfg, cache_dir=tmp_path, progress=False)
    assert second.cached and second.key == first.key
    for (k, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert second.test_accuracy == pytest.approx(first.test_accuracy)
    # any change of data or settings is another key (another file, trained anew)
    assert O.observer_key(tiny, O.ObserverConfig(model="convnet-bn", model_kwargs={"width": 8}, epochs=3)) != first.key
    xtr, ytr, xte, yte = _arrays(seed=1)
    np.savez(tmp_path / "other.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    other = load_dataset(f"npz:{tmp_path / 'other.npz'}")
    assert O.observer_key(other, cfg) != first.key
    # no pickle: the file is safetensors with JSON metadata
    from safetensors import safe_open

    with safe_open(first.path, framework="pt") as fh:
        assert fh.metadata()["format"] == O.OBSERVER_FORMAT


def test_resnet18_is_registered():
    from edgecond.models import build_model

    m = build_model("resnet18", (3, 32, 32), 10, seed=0, width=4)
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert any(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())


def test_edc_matches_bn_statistics_and_writes_float16_soft_labels(tiny, cache):
    from edgecond.condense import condense

    cfg = _edc_config(tiny, cache, iterations=25)
    res = condense(tiny, cfg, progress=False)
    h = res.history
    assert h["bn_global"][-1] < h["bn_global"][0]
    assert h["bn_class"][-1] < h["bn_class"][0]
    assert h["loss"][-1] < h["loss"][0]
    buf = MultisizeBuffer.from_bytes(res.buffer.to_bytes())  # written and read back
    assert buf.has_soft_labels and buf.meta.soft["kind"] == "logits"
    spec = next(t for t in buf.meta.tensors if t.name == "soft_labels")
    assert spec.dtype == "F16" and spec.shape == (3, 1, 3)
    # read back: one label per training image, the observer's own logits on the stored images
    x, y = buf.training_arrays(2)
    soft = buf.soft_targets(2)
    assert soft.shape == (len(y), 3)
    from edgecond.condense.edc import EDCConfig, _load_observers

    obs = _load_observers(tiny, EDCConfig(**cfg.method_config), torch.device("cpu"))
    with torch.no_grad():
        logits = obs[0].model(tiny.normalize(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(soft, logits, rtol=2e-3, atol=2e-2)
    # the bytes a budget counts include them: 2 bytes × K labels of width K per rank
    assert buf.bytes_for(2) - buf.meta.header_bytes(2) == 2 * buf.meta.rank_bytes
    assert buf.meta.rank_bytes == 3 * 64 + 3 * 3 * 2
    assert buf.meta.extra["edc"]["observers"][0]["model"] == "convnet-bn"


def test_edc_alpha_mixes_global_and_per_class_forms(tiny, cache):
    """L(α) = α·(global form) + (1-α)·Σ p(c)·(class form) + CE + flatness: linear in α."""
    from edgecond.condense.base import SyntheticSet
    from edgecond.condense.edc import EDC, EDCConfig
    from edgecond.condense.engine import RealData

    cfg = _edc_config(tiny, cache)
    images = tiny.normalize(torch.rand(3, 2, 1, 8, 8))
    losses = {}
    for a in (0.0, 0.5, 1.0):
        mc = EDCConfig(**dict(cfg.method_config, alpha=a))
        m = EDC(RealData(tiny, torch.device("cpu")), cfg, mc, device=torch.device("cpu"),
                generator=torch.Generator().manual_seed(0))
        syn = SyntheticSet(images, factor=1, mean=tiny.mean, std=tiny.std)
        outs = m.match(syn, [0, 1, 2])
        losses[a] = float(sum(o.losses[None] for o in outs).detach())
        st = outs[0].stats
        assert st["bn_global"] != pytest.approx(st["bn_class"])
    assert losses[0.5] == pytest.approx(0.5 * (losses[0.0] + losses[1.0]), rel=1e-5)
    assert losses[0.0] != pytest.approx(losses[1.0])


def test_mdc_over_edc_runs(tiny, cache):
    from edgecond.condense import condense, condense_preset

    cfg = condense_preset("mdc", "quick", tiny, base="edc", ipc=3, iterations=6, batch_real=8,
                          method_config={"observers": OBS, "observer_epochs": 3, "cache_dir": cache,
                                         "class_stat_images": 8})
    buf = condense(tiny, cfg, progress=False).buffer
    mdc = buf.meta.extra["mdc"]
    assert any(h.get("selected") for h in mdc["history"])
    assert buf.has_soft_labels and buf.meta.method == "edc"


def _shifted_soft_buffer(ds):
    """Real images of every class whose stored soft labels all point at the *next* class."""
    x = ds.x_train.numpy()
    y = ds.y_train.numpy()
    k = ds.num_classes
    per = [x[y == c][:4] for c in range(k)]
    images = np.stack(per)  # [K, 4, C, H, W]
    soft = np.full((k, 4, k), -8.0, dtype=np.float32)
    for c in range(k):
        soft[c, :, (c + 1) % k] = 8.0
    return MultisizeBuffer.from_class_major(images, class_names=list(ds.class_names), dataset=ds.name,
                                            mean=list(ds.mean), std=list(ds.std), method="test",
                                            soft_labels=soft, soft_label_dtype="float16")


def test_evaluation_trains_on_stored_soft_labels(tiny):
    """Soft labels that name the wrong class must wreck the accuracy: dropping them would not."""
    from edgecond.evaluate import eval_preset, evaluate_buffer
    from edgecond.protocols import edc_eval_preset, evaluate_buffer_edc

    buf = _shifted_soft_buffer(tiny)
    ev = eval_preset("quick", epochs=40, model_kwargs={"width": 8}, cutmix_prob=0.0, augment="none")
    hard = evaluate_buffer(buf, tiny, ev, sizes=[4], seeds=[0], progress=False, use_soft_labels=False)[0].mean
    soft = evaluate_buffer(buf, tiny, ev, sizes=[4], seeds=[0], progress=False)[0].mean
    assert hard > 0.8 and soft < 0.2, (hard, soft)
    edc = edc_eval_preset("quick", epochs=40, model_kwargs={"width": 8}, cutmix_prob=0.0, augment="none",
                          lr=0.01, ema_rate=0.0)
    e_hard = evaluate_buffer_edc(buf, tiny, edc, sizes=[4], seeds=[0], labels="hard", progress=False)[0]
    e_soft = evaluate_buffer_edc(buf, tiny, edc, sizes=[4], seeds=[0], labels="stored", progress=False)[0]
    assert e_hard.mean > 0.8 and e_soft.mean < 0.2, (e_hard.mean, e_soft.mean)
    assert (e_soft.protocol, e_soft.labels) == ("edc", "stored")


def test_online_teacher_labels_every_batch(tiny):
    """labels='online' asks the teacher: a teacher that always says 'class 0' gives class 0."""
    from edgecond.protocols import edc_eval_preset, evaluate_buffer_edc

    class Zero(torch.nn.Module):
        def forward(self, x):
            out = torch.full((len(x), 3), -8.0)
            out[:, 0] = 8.0
            return out

    buf = _shifted_soft_buffer(tiny)
    edc = edc_eval_preset("quick", epochs=30, model_kwargs={"width": 8}, cutmix_prob=0.0, lr=0.01, ema_rate=0.9)
    res = evaluate_buffer_edc(buf, tiny, edc, sizes=[4], seeds=[0], labels="online", teachers=[Zero()],
                              progress=False)[0]
    assert res.mean == pytest.approx(1 / 3, abs=0.05)
    with pytest.raises(Exception):
        evaluate_buffer_edc(buf, tiny, edc, sizes=[4], seeds=[0], labels="online", progress=False)


def test_smoothing_schedule_and_add_soft_labels_to_any_buffer(tiny, cache):
    from edgecond.condense import condense, condense_preset
    from edgecond.protocols import smooth_lr
    from edgecond.soft_labels import add_soft_labels, soft_label_bytes
    from edgecond.observers import ObserverConfig, get_observer

    assert smooth_lr(0, 100, 0.1, 2.0) == pytest.approx(0.1)
    assert smooth_lr(100, 100, 0.1, 2.0) == pytest.approx(0.05)
    assert smooth_lr(100, 100, 0.1, 1.0) == pytest.approx(0.0, abs=1e-12)
    buf = condense(tiny, condense_preset("random", "quick", tiny, ipc=2), progress=False).buffer
    obs = get_observer(tiny, ObserverConfig(model="convnet-bn", model_kwargs={"width": 8}, epochs=2),
                       cache_dir=cache, progress=False)
    soft = add_soft_labels(buf, tiny, [obs.model])
    assert soft.has_soft_labels and not buf.has_soft_labels
    np.testing.assert_array_equal(soft.images_class_major(), buf.images_class_major())
    assert soft.meta.rank_bytes == buf.meta.rank_bytes + 3 * 3 * 2
    assert soft_label_bytes(soft, 2) == 2 * 3 * 3 * 2 and soft_label_bytes(buf, 2) == 0
    assert math.isfinite(float(soft.soft_targets(2).sum()))
