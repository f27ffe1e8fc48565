"""IDM / DM's chunked no-grad real branch is the same algorithm as the one-pass original.

The original match (kept here as the specification, written from the algorithm): one siamese
augmentation draw for the concatenated real and synthetic batches, ONE forward of all real
images, per-class squared distance of mean embeddings (+ IDM's accuracy-weighted CE). The new
path must give the same losses, image gradients, features and generator state.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgecond.condense import SyntheticSet, condense_preset
from edgecond.condense import idm as idm_mod
from edgecond.condense.engine import METHODS, RealData, initial_images, method_config
from edgecond.data import from_arrays
from edgecond.utils import make_generator


def _dataset(n_per_class: int = 20, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    def make(n):
        x = rng.random((n * classes, 3, 16, 16)).astype(np.float32)
        y = np.repeat(np.arange(classes), n)
        for c in range(classes):  # a class-specific colour bias
            x[y == c, c % 3] = np.clip(x[y == c, c % 3] + 0.3, 0, 1)
        return x, y
    xtr, ytr = make(n_per_class)
    xte, yte = make(4)
    return from_arrays("rgb16", xtr, ytr, xte, yte)


def _setup(method: str, ce_weight: float, seed: int = 3):
    ds = _dataset()
    cfg = condense_preset(method, "quick", ds, ipc=2, iterations=2, batch_real=16, factor=2 if method == "idm" else 1,
                          model_kwargs={"width": 16, "depth": 2, "norm": "instance"},
                          method_config={"ce_weight": ce_weight, **({"queue_init": 2, "train_steps": 1, "train_batch": 8}
                                                                      if method == "idm" else {})})
    cls = METHODS.get(method)
    real = RealData(ds, torch.device("cpu"))
    gen = make_generator(seed)
    matcher = cls(real, cfg, method_config(cls, cfg.method_config), device=torch.device("cpu"), generator=gen)
    pixels = initial_images(ds, cfg.ipc, cfg.factor, seed=0)
    syn = SyntheticSet(ds.normalize(pixels), factor=cfg.factor, mean=ds.mean, std=ds.std)
    matcher.begin_outer(0)
    return matcher, syn, gen


def _original(matcher, syn, classes):
    """The former one-pass match: losses[c] (full set) and the features."""
    model = matcher.model
    xr, counts = matcher.real.sample_classes(classes, matcher.config.batch_real, matcher.gen)
    parts, owners = zip(*(syn.decoded(c) for c in classes))
    xr, xs = matcher.aug.siamese(xr, torch.cat(parts), generator=matcher.gen)
    with torch.no_grad():
        fr = model.embed(xr)
        yr = torch.repeat_interleave(torch.tensor(list(classes)), torch.tensor(counts))
        acc = float((model.classifier(fr).argmax(1) == yr).float().mean())
    fs = model.embed(xs)
    logits = model.classifier(fs)
    weight = matcher.mc.ce_weight * matcher.mc.acc_scale * acc
    losses, r0, s0 = [], 0, 0
    for c, nr, o in zip(classes, counts, owners):
        loss = ((fr[r0:r0 + nr].mean(0) - fs[s0:s0 + len(o)].mean(0)) ** 2).sum()
        if weight > 0:
            loss = loss + weight * F.cross_entropy(logits[s0:s0 + len(o)], torch.full((len(o),), c))
        losses.append(loss)
        r0, s0 = r0 + nr, s0 + len(o)
    return losses, fr, fs.detach()


@pytest.mark.parametrize("method,ce_weight,chunk_bytes", [
    ("dm", 0.0, None), ("dm", 0.0, 1), ("idm", 0.5, 4096), ("idm", 0.0, None),
])
def test_chunked_real_branch_matches_one_pass(monkeypatch, method, ce_weight, chunk_bytes):
    if chunk_bytes is not None:  # force several chunks (1 byte: one image per chunk)
        monkeypatch.setattr(idm_mod, "REAL_CHUNK_BYTES", chunk_bytes)
    matcher, syn, gen = _setup(method, ce_weight)
    classes = list(range(3))
    state = gen.get_state()
    outs = matcher.match(syn, classes)
    new_losses = [o.losses[None] for o in outs]
    torch.stack(new_losses).sum().backward()
    g_new = syn.images.grad.clone()
    state_after = gen.get_state()
    syn.images.grad = None
    if chunk_bytes is not None:
        assert idm_mod._chunk_rows(matcher.model, torch.zeros(1, 3, 16, 16)) < matcher.config.batch_real

    gen.set_state(state)
    params = list(matcher.model.parameters())
    assert not any(p.requires_grad for p in params)  # the matching net is not differentiated
    for p in params:
        p.requires_grad_(True)  # the original path differentiated the parameters too
    old_losses, fr_old, fs_old = _original(matcher, syn, classes)
    torch.stack(old_losses).sum().backward()
    assert torch.equal(gen.get_state(), state_after)  # same random draws, same order
    torch.testing.assert_close(torch.stack(new_losses).detach(), torch.stack(old_losses).detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_new, syn.images.grad, rtol=1e-4, atol=1e-6)
    assert g_new.abs().sum() > 0
    torch.testing.assert_close(torch.cat([o.real_features for o in outs]), fr_old, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([o.syn_features for o in outs]), fs_old, rtol=1e-5, atol=1e-5)


def test_idm_queue_models_train_and_stay_frozen_for_matching():
    matcher, syn, _ = _setup("idm", 0.5)
    before = [p.detach().clone() for p in matcher.queue.models[0].parameters()]
    for m in matcher.queue.models:
        assert not any(p.requires_grad for p in m.parameters())
    matcher.mc.train_models = len(matcher.queue.models)
    matcher.between_inner(0)
    after = list(matcher.queue.models[0].parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))  # training still updates them
    for m in matcher.queue.models:
        assert not any(p.requires_grad for p in m.parameters())


@pytest.mark.parametrize("shape,depth", [((3, 32, 32), 3), ((1, 8, 8), 2), ((3, 16, 16), 2)])
def test_nograd_embed_equals_model_embed(shape, depth):
    from edgecond.models import build_model

    model = build_model("convnet", shape, 4, seed=1, width=16, depth=depth, norm="instance")
    with torch.no_grad():  # non-trivial affine parameters
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    x = torch.randn(37, *shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model.embed(x)
    got = idm_mod.real_embeddings(model, x)
    assert got.shape == want.shape and not got.requires_grad
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert not torch.equal(got, torch.zeros_like(got))


def test_real_data_is_normalised_in_place_with_the_same_numbers():
    ds = _dataset()
    real = RealData(ds, torch.device("cpu"))
    assert torch.equal(real.x, ds.normalize(ds.x_train.float()))
    assert real.x.data_ptr() != ds.x_train.data_ptr()  # a copy: the dataset is untouched
