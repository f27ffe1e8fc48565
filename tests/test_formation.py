"""Multi-formation decode (edgecond.formation): numpy == torch to 1e-5, image-major order,
bilinear align_corners=False per tile, labels, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgecond.errors import ConfigError
from edgecond.formation import check_factor, decode_labels, decode_numpy, decode_torch


@pytest.mark.parametrize("factor, shape", [(1, (3, 3, 8, 8)), (2, (4, 3, 8, 8)), (2, (2, 1, 4, 6)),
                                           (3, (2, 3, 9, 12)), (4, (1, 3, 32, 32)), (2, (1, 1, 2, 2))])
def test_numpy_and_torch_agree(factor, shape):
    rng = np.random.default_rng(factor)
    x = rng.random(shape, dtype=np.float32)
    a = decode_numpy(x, factor)
    b = decode_torch(torch.from_numpy(x), factor).numpy()
    m, c, h, w = shape
    assert a.shape == b.shape == (m * factor * factor, c, h, w)
    assert a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_image_major_order_and_row_major_tiles():
    f = 2
    x = np.random.default_rng(0).random((3, 2, 4, 4), dtype=np.float32)
    out = decode_numpy(x, f)
    for i in range(3):
        for ty in range(f):
            for tx in range(f):
                tile = torch.from_numpy(x[i:i + 1, :, ty * 2:(ty + 1) * 2, tx * 2:(tx + 1) * 2].copy())
                want = F.interpolate(tile, size=(4, 4), mode="bilinear", align_corners=False)[0].numpy()
                np.testing.assert_allclose(out[i * f * f + ty * f + tx], want, atol=1e-6)


def test_prefix_of_stored_images_is_prefix_of_decoded():
    x = np.random.default_rng(1).random((5, 3, 8, 8), dtype=np.float32)
    full = decode_numpy(x, 2)
    for m in range(1, 6):
        np.testing.assert_array_equal(decode_numpy(x[:m], 2), full[:m * 4])


def test_factor_one_is_identity_copy_and_constants_stay_constant():
    x = np.random.default_rng(2).random((2, 3, 4, 4)).astype(np.float64)
    y = decode_numpy(x, 1)
    assert y.dtype == np.float32 and np.array_equal(y, x.astype(np.float32))
    y[0, 0, 0, 0] = 99
    assert x[0, 0, 0, 0] != 99
    const = np.full((1, 3, 8, 8), 0.25, dtype=np.float32)
    np.testing.assert_allclose(decode_numpy(const, 4), 0.25, atol=1e-7)
    # bilinear upsampling stays in the input range (pixel space [0, 1] stays [0, 1])
    z = decode_numpy(np.random.default_rng(3).random((4, 3, 8, 8), dtype=np.float32), 2)
    assert z.min() >= 0 and z.max() <= 1


def test_decode_torch_is_differentiable():
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    decode_torch(x, 2).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    # each input pixel's weights sum to f*f (bilinear weights are a partition of unity per output)
    assert torch.allclose(x.grad.sum(), torch.tensor(2 * 3 * 8 * 8 * 4.0))


def test_decode_labels_numpy_and_torch():
    assert decode_labels(np.array([3, 1]), 2).tolist() == [3, 3, 3, 3, 1, 1, 1, 1]
    assert decode_labels([0, 5], 1).tolist() == [0, 5]
    t = decode_labels(torch.tensor([2, 7]), 3)
    assert t.tolist() == [2] * 9 + [7] * 9


@pytest.mark.parametrize("factor", [0, -1, 1.5, True, "2", None])
def test_bad_factor_raises(factor):
    with pytest.raises(ConfigError, match="positive integer"):
        check_factor(factor, 8, 8)
    with pytest.raises(ConfigError):
        decode_numpy(np.zeros((1, 1, 8, 8), np.float32), factor)


def test_factor_must_divide_size_and_shape_must_be_4d():
    with pytest.raises(ConfigError, match="does not divide the image size 8x6"):
        decode_numpy(np.zeros((1, 1, 8, 6), np.float32), 4)
    with pytest.raises(ConfigError, match="does not divide"):
        decode_torch(torch.zeros(1, 1, 8, 6), 4)
    with pytest.raises(ConfigError, match=r"\[M, C, H, W\]"):
        decode_numpy(np.zeros((1, 8, 8), np.float32), 2)
    with pytest.raises(ConfigError, match=r"\[M, C, H, W\]"):
        decode_torch(torch.zeros(8, 8), 2)
    assert check_factor(np.int64(2), 4, 4) == 2
