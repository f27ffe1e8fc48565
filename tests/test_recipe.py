"""The training recipe (docs/buffer-format.md §3.1, edgecond.recipe): essential metadata that
survives lean slices and deltas, strict parsing, defaults for older buffers, and a numpy
augmentation that matches the torch DSA ops it stands for."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from edgecond.buffer import MultisizeBuffer
from edgecond.errors import BufferFormatError, ConfigError
from edgecond.recipe import (
    Recipe,
    augment_batch,
    cutmix_batch,
    recipe_batches,
    recipe_from_eval,
    recipe_of,
    targets_of,
)

RECIPE = Recipe(augment="color_crop_cutout_flip_scale_rotate", flips=False, cutmix_prob=0.5)


def make(recipe=RECIPE, k=3, n=4, soft=False):
    rng = np.random.default_rng(0)
    x = rng.random((k, n, 1, 8, 8), dtype=np.float32)
    s = rng.normal(size=(k, n, 1, k)).astype(np.float32) if soft else None
    return MultisizeBuffer.from_class_major(x, class_names=[f"c{i}" for i in range(k)], dataset="toy",
                                            mean=[0.5], std=[0.25], method="random", dtype="uint8",
                                            recipe=recipe, soft_labels=s)


def _header(raw: bytes) -> dict:
    (h,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + h])


def _with_meta(raw: bytes, key: str, value: str) -> bytes:
    (h,) = struct.unpack("<Q", raw[:8])
    hdr = json.loads(raw[8:8 + h])
    hdr["__metadata__"][key] = value
    js = json.dumps(hdr, separators=(",", ":")).encode()
    js += b" " * ((-len(js)) % 8)
    return struct.pack("<Q", len(js)) + js + raw[8 + h:]


def test_recipe_is_essential_and_survives_lean_slices_and_deltas():
    buf = make()
    assert buf.meta.recipe == RECIPE
    assert "flip" not in RECIPE.augment  # the data's flip policy is applied at construction
    lean = MultisizeBuffer.from_bytes(buf.to_bytes(2, provenance=False))
    assert not lean.meta.has_provenance and lean.meta.recipe == RECIPE
    grown = MultisizeBuffer.append_ranks(lean, buf.ranks(2, 4))
    assert grown.meta.recipe == RECIPE and grown.ipc == 4
    md = _header(buf.to_bytes(1, provenance=False))["__metadata__"]
    assert json.loads(md["recipe"]) == {"v": 1, "aug": "color_crop_cutout_scale_rotate", "flip": 0,
                                        "ep": 300, "lr": 0.01, "bs": 64, "mix": 0.5}
    assert buf.meta.to_dict()["recipe"]["aug"] == RECIPE.augment


def test_with_recipe_changes_the_chain_and_old_buffers_get_defaults():
    old = make(recipe=None)
    assert old.meta.recipe is None
    default = recipe_of(old)
    assert default.cutmix_prob == 0.5 and default.single_op and "flip" not in default.augment
    assert "flip" in recipe_of(old, flips=True).augment
    new = old.with_recipe(RECIPE)
    assert new.meta.recipe == RECIPE and new.meta.digests[0] != old.meta.digests[0]
    assert new.with_recipe(None).meta.digests == old.meta.digests


@pytest.mark.parametrize("value, pattern", [
    ("[1]", "expected a JSON object"),
    ('{"v":2,"aug":"crop","flip":0,"ep":1,"lr":0.1,"bs":8}', "version"),
    ('{"v":1,"aug":"crop","flip":0,"ep":1,"lr":0.1}', "lacks"),
    ('{"v":1,"aug":"crop","flip":0,"ep":1,"lr":0.1,"bs":8,"zz":1}', "unknown keys"),
    ('{"v":1,"aug":"warp","flip":0,"ep":1,"lr":0.1,"bs":8}', "unknown augmentation op"),
    ('{"v":1,"aug":"crop_flip","flip":0,"ep":1,"lr":0.1,"bs":8}', "flips do not keep labels"),
    ('{"v":1,"aug":"crop","flip":0,"ep":1,"lr":-1,"bs":8}', "lr"),
    ('{"v":1,"aug":"crop","flip":0,"ep":1.5,"lr":0.1,"bs":8}', "integer"),
    ('{"v":1,"aug":"crop","flip":0,"ep":1,"lr":0.1,"bs":8,"mix":2}', "cutmix_prob"),
    ("{not json", "not valid JSON"),
])
def test_bad_recipes_are_rejected_by_the_reader(value, pattern):
    raw = _with_meta(make(recipe=None).to_bytes(provenance=False), "recipe", value)
    with pytest.raises(BufferFormatError, match=pattern):
        MultisizeBuffer.from_bytes(raw, verify=False)


def test_recipe_from_eval_follows_the_protocol_and_for_size_caps_the_batch():
    from edgecond.evaluate import eval_preset

    cfg = eval_preset("quick")
    r = recipe_from_eval(cfg, flips=True)
    assert (r.epochs, r.lr, r.batch_size, r.cutmix_prob, r.single_op) == (
        cfg.epochs, cfg.lr, cfg.batch_size, cfg.cutmix_prob, cfg.single_op)
    assert "flip" in r.augment and "flip" not in recipe_from_eval(cfg, flips=False).augment
    assert r.for_size(10).batch_size == 10 and r.for_size(1000).batch_size == cfg.batch_size
    assert r.lr_at(0) == cfg.lr and r.lr_at(cfg.epochs - 1) == pytest.approx(cfg.lr * 0.01)
    with pytest.raises(ConfigError):
        Recipe(epochs=0)


@pytest.mark.parametrize("op", ["brightness", "saturation", "contrast", "crop", "cutout", "flip", "scale", "rotate"])
def test_numpy_ops_match_the_torch_dsa_family(op):
    """Each numpy op changes images the way its torch DSA op does (same magnitude scale)."""
    torch = pytest.importorskip("torch")
    from edgecond.augment import DiffAugment

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 3, 8, 8)).astype(np.float32)
    ours = augment_batch(x, Recipe(augment=op, flips=True, single_op=False), rng)
    ref = DiffAugment(op)(torch.from_numpy(x), generator=torch.Generator().manual_seed(0)).numpy()
    assert ours.shape == x.shape and ours.dtype == np.float32
    d_ours, d_ref = np.abs(ours - x).mean(), np.abs(ref - x).mean()
    assert d_ref * 0.7 <= d_ours <= d_ref * 1.3 + 1e-6, (op, d_ours, d_ref)


def test_affine_sampling_equals_torch_grid_sample():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from edgecond.recipe import _affine

    rng = np.random.default_rng(1)
    x = rng.random((4, 2, 8, 6)).astype(np.float32)
    theta = rng.normal(size=(4, 2, 3)) * 0.3 + np.array([[1, 0, 0], [0, 1, 0]])
    grid = F.affine_grid(torch.tensor(theta, dtype=torch.float32), list(x.shape), align_corners=False)
    ref = F.grid_sample(torch.from_numpy(x), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    assert np.abs(_affine(x, theta) - ref.numpy()).max() < 1e-5


def test_no_flip_ever_when_the_data_forbids_it():
    x = np.zeros((64, 1, 4, 4), dtype=np.float32)
    x[..., 0] = 1.0  # left column lit: a flip would light the right column
    r = Recipe(augment="flip", flips=False, single_op=False)
    assert r.augment == "none"
    assert np.array_equal(augment_batch(x, r, np.random.default_rng(0)), x)
    flipped = augment_batch(x, Recipe(augment="flip", flips=True, single_op=False), np.random.default_rng(0))
    assert flipped[..., -1].sum() > 0


def test_training_stream_normalises_augments_and_mixes_targets():
    buf = make(soft=True)
    x, y = buf.training_arrays()
    soft = buf.soft_targets()
    t = targets_of(y, 3, soft, soft_kind="logits")
    assert np.allclose(t.sum(1), 1) and not np.allclose(t, targets_of(y, 3))
    r = Recipe(augment="none", cutmix_prob=0.0)
    batches = list(recipe_batches(x, t, r, np.random.default_rng(0), mean=[0.5], std=[0.25]))
    assert sum(len(b[0]) for b in batches) == len(x) == 12 and len(batches) == 1
    xs = np.concatenate([b[0] for b in batches])
    assert np.allclose(np.sort(xs.ravel()), np.sort(((x - 0.5) / 0.25).ravel()), atol=1e-5)
    steps = list(recipe_batches(x, t, r, np.random.default_rng(0), mean=[0.5], std=[0.25], batch_size=5, steps=7))
    assert len(steps) == 7 and all(len(b[0]) <= 5 for b in steps)
    xm, tm = cutmix_batch(x, t, np.random.default_rng(3))
    assert xm.shape == x.shape and np.allclose(tm.sum(1), 1)
