"""Issue 15 on the phone: the edge trainer augments by the recipe its buffer slice carries (the
same numpy function as the Flower/Avalanche clients), trains soft labels (and CutMix) through
soft-target ORT artifacts, and says what class-id artifacts cannot do."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from edgecond.buffer import MultisizeBuffer  # noqa: E402
from edgecond.data import load_dataset  # noqa: E402
from edgecond.deploy import DeployConfig, deploy  # noqa: E402
from edgecond.recipe import Recipe  # noqa: E402

RECIPE = Recipe(augment="color_crop_cutout_scale_rotate", flips=False, cutmix_prob=0.5)


@pytest.mark.parametrize("with_recipe, soft", [(True, True), (False, False)])
def test_edge_trainer_augments_by_the_buffer_recipe(tmp_path, monkeypatch, with_recipe, soft):
    import edgecond.recipe as recipe_mod
    from clients.edge import train as edge

    ds = load_dataset("digits")
    x = np.stack([ds.x_train.numpy()[ds.y_train.numpy() == k][:3] for k in range(10)])
    s = np.random.default_rng(0).normal(size=(10, 3, 1, 10)).astype(np.float32) if soft else None
    buf = MultisizeBuffer.from_class_major(x, class_names=ds.class_names, dataset="digits", mean=ds.mean,
                                           std=ds.std, method="test", dtype="uint8", soft_labels=s,
                                           recipe=RECIPE if with_recipe else None)
    buf.save(tmp_path / "b.safetensors")
    r = deploy(tmp_path / "b.safetensors", tmp_path / "bundle", DeployConfig(
        max_bytes=10**6, model="mlp", model_kwargs={"hidden": [32]}, batch_size=8, check=False))
    calls, crops = [], []
    real = recipe_mod.augment_batch
    monkeypatch.setattr(recipe_mod, "augment_batch", lambda xb, rec, rng: calls.append(rec) or real(xb, rec, rng))
    real_crop = edge.augment_batch
    monkeypatch.setattr(edge, "augment_batch", lambda *a, **k: crops.append(1) or real_crop(*a, **k))
    m = edge.train_bundle(r.directory, edge.EdgeTrainConfig(epochs=1, threads=1, save=False))
    if with_recipe:
        assert calls and all(c == RECIPE for c in calls) and not crops
        assert m["recipe"]["aug"] == RECIPE.augment and m["loss"] == "soft"  # soft buffer -> soft artifacts
        assert m["recipe"]["cutmix"].startswith("applied") and m["soft_labels"].startswith("used")
    else:  # older slices: the manifest's crop (+flip) augmentation
        assert crops and not calls and m["recipe"] is None and m["soft_labels"] is None
    off = edge.train_bundle(r.directory, edge.EdgeTrainConfig(epochs=1, threads=1, save=False, augment=False))
    assert off["recipe"] is None


def _soft_bundle(tmp_path, *, loss=None, recipe=None):
    ds = load_dataset("digits")
    x = np.stack([ds.x_train.numpy()[ds.y_train.numpy() == k][:3] for k in range(10)])
    s = np.random.default_rng(1).normal(size=(10, 3, 1, 10)).astype(np.float32) * 3
    buf = MultisizeBuffer.from_class_major(x, class_names=ds.class_names, dataset="digits", mean=ds.mean,
                                           std=ds.std, method="test", dtype="uint8", soft_labels=s, recipe=recipe)
    buf.save(tmp_path / "b.safetensors")
    r = deploy(tmp_path / "b.safetensors", tmp_path / "bundle", DeployConfig(
        max_bytes=10**6, model="mlp", model_kwargs={"hidden": [16]}, batch_size=8, check=False, loss=loss,
        eval_samples=20))
    return buf, r


def test_edge_trainer_soft_labels_reach_the_loss(tmp_path, monkeypatch):
    """Soft-target artifacts get the buffer's soft labels as targets (dropping them — one-hot or
    class ids — fails), and the artifacts' loss is the soft cross-entropy of those targets."""
    from clients.edge import train as edge
    from edgecond.recipe import targets_of

    no_mix = Recipe(augment="crop", flips=False, cutmix_prob=0.0)
    buf, r = _soft_bundle(tmp_path, recipe=no_mix)
    assert r.manifest["loss"] == "soft" and r.manifest["label_name"] == "targets"
    seen = []
    real = edge._Session.train_step

    def spy(self, x, y):
        loss = real(self, x, y)
        seen.append((np.array(y), loss, np.array(self.logits(x, y))))
        return loss

    monkeypatch.setattr(edge._Session, "train_step", spy)
    m = edge.train_bundle(r.directory, edge.EdgeTrainConfig(epochs=2, threads=1, save=False, lr=1e-6))
    assert m["loss"] == "soft" and m["soft_labels"].startswith("used") and m["accuracy"] is not None
    want = targets_of(np.zeros(30, np.int64), 10, buf.soft_targets(), soft_kind="logits")
    for t, loss, logits in seen:
        assert t.dtype == np.float32 and t.shape == (8, 10), "class ids reached the loss, not distributions"
        assert (t.max(1) < 0.999).all(), "one-hot targets: the soft labels were dropped"
        assert all(np.abs(want - row).max(1).min() < 1e-5 for row in t)  # each row: a soft-label row
        z = logits - logits.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        # lr 1e-6: the logits after the step are those of the step, to rounding
        assert abs(float(-(t * logp).sum(1).mean()) - loss) < 1e-3


def test_edge_trainer_with_class_id_artifacts_says_soft_labels_are_not_used(tmp_path):
    from clients.edge import train as edge

    _, r = _soft_bundle(tmp_path, loss="ce", recipe=RECIPE)
    assert r.manifest["loss"] == "ce" and r.manifest["label_name"] == "labels"
    m = edge.train_bundle(r.directory, edge.EdgeTrainConfig(epochs=1, threads=1, save=False))
    assert m["loss"] == "ce" and "not used" in m["soft_labels"] and "not applied" in m["recipe"]["cutmix"]


def test_export_soft_target_loss_matches_torch(tmp_path):
    """The soft-target artifacts' loss, gradients and SGD step equal torch's soft cross-entropy
    (the export's own self-check; it raises when they differ)."""
    from edgecond.export import ExportConfig, export_model

    res = export_model("mlp", (1, 8, 8), 10, tmp_path / "a", model_kwargs={"hidden": [16]},
                       config=ExportConfig(batch_size=4, loss="soft", optimizer="sgd", inference=False),
                       progress=False)
    assert res.check is not None and abs(res.check.train_loss_ort - res.check.train_loss_torch) < 1e-4
    import json

    info = json.loads((tmp_path / "a" / "export.json").read_text())
    assert info["loss"] == "soft" and info["label_name"] == "targets"
