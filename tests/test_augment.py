"""edgecond.augment: differentiable DSA ops, per-sample vs siamese draws, single-op mode, CutMix."""
from __future__ import annotations

import pytest
import torch

from edgecond.augment import OPS, AugmentParams, DiffAugment, cutmix
from edgecond.errors import ConfigError




def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("op", ["color", "crop", "cutout", "flip", "scale", "rotate",
                                "color_crop_cutout_flip_scale_rotate"])
def test_each_op_differentiable_shape_and_deterministic(op):
    x = torch.rand(8, 3, 12, 12, requires_grad=True)
    aug = DiffAugment(op)
    y = aug(x, generator=gen(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    (y * torch.arange(y.numel()).view_as(y)).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert torch.equal(aug(x, generator=gen(0)), y)  # same seed → same result
    assert not torch.equal(aug(x, generator=gen(1)), y)  # other seed → different result


def test_none_is_identity_and_unknown_op():
    x = torch.rand(2, 1, 4, 4)
    assert DiffAugment("none")(x) is x
    with pytest.raises(ConfigError, match="unknown augmentation op"):
        DiffAugment("color_jpeg")
    assert set(OPS) >= {"color", "crop", "cutout", "flip", "scale", "rotate"}


def test_per_sample_draws_differ():
    x = torch.rand(1, 1, 8, 8).expand(6, 1, 8, 8).contiguous()
    y = DiffAugment("brightness")(x, generator=gen(0))
    offsets = (y - x).flatten(1)
    assert torch.allclose(offsets, offsets[:, :1].expand_as(offsets), atol=1e-6)  # constant per image
    assert len(torch.unique(offsets[:, 0])) == 6  # different per sample
    assert float(offsets.abs().max()) <= 0.5 + 1e-6


def test_siamese_shares_one_draw():
    aug = DiffAugment()
    a = torch.rand(5, 3, 10, 10)
    ra, rb = aug.siamese(a, a.clone(), generator=gen(3))
    assert torch.equal(ra, rb)
    # one parameter set for the whole call: identical inputs in a batch stay identical
    same = torch.rand(1, 3, 10, 10).expand(4, 3, 10, 10).contiguous()
    ra, rb = aug.siamese(same, same[:2].clone(), generator=gen(4))
    assert torch.equal(ra[0], ra[3]) and torch.equal(ra[0], rb[1])
    # per-sample pairing: a[i] and b[i] share, samples differ
    ra, rb = aug.siamese(same, same.clone(), generator=gen(5), per_sample=True)
    assert torch.equal(ra, rb) and not torch.equal(ra[0], ra[1])
    with pytest.raises(ConfigError, match="equal size"):
        aug.siamese(a, a[:2], per_sample=True)


def test_siamese_gradients_flow_to_both():
    a = torch.rand(3, 3, 8, 8, requires_grad=True)
    b = torch.rand(2, 3, 8, 8, requires_grad=True)
    ra, rb = DiffAugment("color_crop_cutout").siamese(a, b, generator=gen(0))
    (ra.sum() + rb.sum()).backward()
    assert a.grad is not None and b.grad is not None


def test_single_op_picks_one_op_per_call():
    aug = DiffAugment("color_crop_cutout_flip_scale_rotate", single_op=True)
    seen = set()
    for s in range(40):
        d = aug.sample_draw(2, generator=gen(s))
        seen.add(d.ops)
        assert d.ops in {("brightness", "saturation", "contrast"), ("crop",), ("cutout",), ("flip",),
                         ("scale",), ("rotate",)}
    assert len(seen) >= 5
    full = DiffAugment("color_crop").sample_draw(2, generator=gen(0))
    assert full.ops == ("brightness", "saturation", "contrast", "crop")


def test_draw_reuse_and_batch_mismatch():
    aug = DiffAugment("crop_flip")
    x = torch.rand(4, 1, 8, 8)
    d = aug.sample_draw(4, generator=gen(0))
    assert torch.equal(aug(x, draw=d), aug(x, draw=d))
    with pytest.raises(ConfigError, match="batch of 4 but applied to a batch of 3"):
        aug(x[:3], draw=d)


def test_crop_is_integer_shift_with_zero_fill():
    x = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8) + 1
    y = DiffAugment("crop")(x, generator=gen(2))
    # every non-zero output pixel is an input pixel, all from one integer shift
    vals = y[y != 0]
    assert torch.all(torch.isin(vals, x.flatten()))
    nz = (y[0, 0] != 0).nonzero()
    r, c = nz[0].tolist()
    dy, dx = (int(y[0, 0, r, c]) - 1) // 8 - r, (int(y[0, 0, r, c]) - 1) % 8 - c
    assert abs(dy) <= 1 and abs(dx) <= 1  # crop_pad 0.125 * 8 = 1 pixel


def test_cutout_zeroes_a_square_and_flip():
    x = torch.ones(3, 2, 8, 8)
    y = DiffAugment("cutout")(x, generator=gen(0))
    for img in y:
        zeros = int((img[0] == 0).sum())
        assert 0 < zeros <= 16 and torch.equal(img[0], img[1])  # 4x4 square (clipped at borders)
    x = torch.rand(2, 1, 5, 5)
    assert torch.equal(DiffAugment("flip", AugmentParams(flip=1.0))(x), x.flip(3))
    assert torch.equal(DiffAugment("flip", AugmentParams(flip=0.0))(x), x)


def test_scale_rotate_identity_at_zero_magnitude():
    x = torch.rand(2, 3, 8, 8)
    p = AugmentParams(scale=1.0, rotate=0.0)
    assert torch.allclose(DiffAugment("scale_rotate", p)(x, generator=gen(0)), x, atol=1e-5)


def test_cutmix_label_mixing_and_gradients():
    x = torch.stack([torch.full((1, 8, 8), float(i)) for i in range(6)]).requires_grad_(True)
    y = torch.arange(6)
    xm, ya, yb, lam = cutmix(x, y, generator=gen(1))
    assert torch.equal(ya, y) and sorted(yb.tolist()) == list(range(6))
    for i in range(6):
        own = float((xm[i] == i).float().mean())
        if yb[i] != i:
            assert own == pytest.approx(lam)  # lam = fraction of pixels that kept their image
        assert torch.all((xm[i] == i) | (xm[i] == float(yb[i])))
    xm.sum().backward()
    assert x.grad is not None
    xm2, _, yb2, lam2 = cutmix(x.detach(), y, generator=gen(1))
    assert torch.equal(xm2, xm.detach()) and torch.equal(yb2, yb) and lam2 == lam
    # soft targets are permuted the same way
    soft = torch.eye(6)
    _, sa, sb, _ = cutmix(x.detach(), soft, generator=gen(1))
    assert torch.equal(sb.argmax(1), yb)
    with pytest.raises(ConfigError, match="beta"):
        cutmix(x, y, beta=0.0)
