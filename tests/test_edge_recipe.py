"""Issue 15 on the phone: the edge trainer augments by the recipe its buffer slice carries (the
same numpy function as the Flower/Avalanche clients) and says what the ORT artifacts cannot do."""
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
        assert m["recipe"]["aug"] == RECIPE.augment and "not applied" in m["recipe"]["cutmix"]
        assert "not used" in m["soft_labels"]
    else:  # older slices: the manifest's crop (+flip) augmentation
        assert crops and not calls and m["recipe"] is None and m["soft_labels"] is None
    off = edge.train_bundle(r.directory, edge.EdgeTrainConfig(epochs=1, threads=1, save=False, augment=False))
    assert off["recipe"] is None
