"""Multi-formation decode (IDC): each stored image holds ``factor × factor`` tiles.

A stored image of size H×W is cut into a ``factor × factor`` grid of tiles of size
(H/factor)×(W/factor); every tile is upsampled bilinearly (``align_corners=False``) back to H×W.
One stored image therefore trains as ``factor**2`` images.

Order is **image-major**: the decoded images of stored image ``i`` are rows
``i*f² .. (i+1)*f² - 1``, tiles in row-major order over the grid. (IDC's reference code is
tile-major; image-major keeps every prefix of stored images a prefix of decoded images, which
is what the multisize buffer's prefix rule needs.)

``decode_numpy`` needs only numpy (torch-free clients); ``decode_torch`` is differentiable and
imports torch lazily. They agree to 1e-5.
"""
from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["decode_numpy", "decode_torch", "decode_labels", "check_factor", "SDC_KIND", "SDC_VERSION",
           "decode_sdc_numpy", "decode_sdc_torch"]


def check_factor(factor: int, height: int, width: int) -> int:
    """Validate a formation factor for an image size; returns it as an int."""
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ConfigError(f"formation factor must be a positive integer, got {factor!r}.")
    factor = int(factor)
    if height % factor or width % factor:
        raise ConfigError(
            f"formation factor {factor} does not divide the image size {height}x{width}; "
            f"use a factor that divides both (e.g. 1 or 2)."
        )
    return factor


@lru_cache(maxsize=64)
def _interp_matrix(size_in: int, factor: int) -> np.ndarray:
    """``[size_in*factor, size_in]`` weights of 1-D linear upsampling (align_corners=False)."""
    size_out = size_in * factor
    out = np.arange(size_out, dtype=np.float64)
    src = np.maximum((out + 0.5) / factor - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
    i1 = np.minimum(i0 + 1, size_in - 1)
    w1 = src - i0
    mat = np.zeros((size_out, size_in), dtype=np.float64)
    np.add.at(mat, (np.arange(size_out), i0), 1.0 - w1)
    np.add.at(mat, (np.arange(size_out), i1), w1)
    mat.setflags(write=False)
    return mat


def _tiles_numpy(images: np.ndarray, factor: int) -> np.ndarray:
    m, c, h, w = images.shape
    th, tw = h // factor, w // factor
    # [M, C, f, th, f, tw] -> [M, f, f, C, th, tw] -> [M*f*f, C, th, tw]
    t = images.reshape(m, c, factor, th, factor, tw).transpose(0, 2, 4, 1, 3, 5)
    return t.reshape(m * factor * factor, c, th, tw)


def decode_numpy(images: np.ndarray, factor: int) -> np.ndarray:
    """Decode ``[M, C, H, W]`` stored images to ``[M*factor², C, H, W]`` float32 (image-major)."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ConfigError(f"decode expects images of shape [M, C, H, W], got shape {images.shape}.")
    factor = check_factor(factor, images.shape[2], images.shape[3])
    x = images.astype(np.float32, copy=False)
    if factor == 1:
        return x.copy()
    tiles = _tiles_numpy(x, factor).astype(np.float64)
    ah = _interp_matrix(tiles.shape[2], factor)
    aw = _interp_matrix(tiles.shape[3], factor)
    up = np.einsum("oh,nchw,pw->ncop", ah, tiles, aw, optimize=True)
    return up.astype(np.float32)


def decode_torch(images: "torch.Tensor", factor: int) -> "torch.Tensor":
    """Differentiable torch version of :func:`decode_numpy` (same order, same values)."""
    import torch.nn.functional as F

    if images.dim() != 4:
        raise ConfigError(f"decode expects images of shape [M, C, H, W], got shape {tuple(images.shape)}.")
    factor = check_factor(factor, images.shape[2], images.shape[3])
    if factor == 1:
        return images
    m, c, h, w = images.shape
    th, tw = h // factor, w // factor
    t = images.reshape(m, c, factor, th, factor, tw).permute(0, 2, 4, 1, 3, 5)
    t = t.reshape(m * factor * factor, c, th, tw)
    return F.interpolate(t, scale_factor=factor, mode="bilinear", align_corners=False)


def decode_labels(labels: Any, factor: int):
    """Repeat each label ``factor**2`` times (numpy arrays or torch tensors)."""
    reps = int(factor) ** 2
    if hasattr(labels, "repeat_interleave"):
        return labels.repeat_interleave(reps)
    return np.repeat(np.asarray(labels), reps)


# ----------------------------------------------------------------------------- SDC (slimmable)
#
# Formation kind ``sdc/1`` (docs/buffer-format.md §5.1, docs/multisize.md "SDC"): stored rank ``r``
# of class ``k`` is *component* ``r`` of that class, not an image. ``components[r, k]`` holds
# the component's basis image coded in [0, 1] (the value rules of ordinary images: U8/F16/F32),
# read as ``v = 2·code − 1 ∈ [−1, 1]``; ``coefficients[r, k, i]`` is the weight of component
# ``r`` in decoded image ``i`` (U·Σ of X = UΣV, with the component's scale folded in). The
# first ``n`` ranks decode to ``n`` images per class (then the usual ``factor²`` tiles each):
#
#     X_k(n) = clip( A_k(n) · V_k(n), 0, 1 ),   A_k(n)[i, j] = coefficients[j, k, i],  i, j < n
#
# i.e. the first n rows of the rank-n truncation (the least significant components dropped).
# Decoded order: rank (row i) major, then class slot, then the factor² tiles (as for images).

SDC_KIND = "sdc"
SDC_VERSION = 1


def check_sdc_shapes(codes_shape: tuple, coef_shape: tuple) -> tuple[int, int]:
    """``(n, K)`` of an SDC prefix; raises :class:`ConfigError` on inconsistent shapes."""
    if len(codes_shape) != 5 or len(coef_shape) != 3 or tuple(coef_shape[:2]) != tuple(codes_shape[:2]) \
            or coef_shape[2] < codes_shape[0]:
        raise ConfigError(
            f"SDC decode expects components [n, K, C, H, W] and coefficients [n, K, M] with M >= n; "
            f"got {tuple(codes_shape)} and {tuple(coef_shape)}."
        )
    return int(codes_shape[0]), int(codes_shape[1])


def decode_sdc_numpy(codes: np.ndarray, coefficients: np.ndarray, factor: int = 1) -> np.ndarray:
    """Decode the first ``n`` SDC ranks (``codes [n, K, C, H, W]`` in [0, 1], ``coefficients
    [n, K, M]``) to ``[n*K*factor², C, H, W]`` float32 pixel images (rank-major, then class, then
    tiles). Computed in float64; numpy only."""
    codes = np.asarray(codes)
    coefficients = np.asarray(coefficients)
    n, k = check_sdc_shapes(codes.shape, coefficients.shape)
    c, h, w = codes.shape[2:]
    v = 2.0 * codes.astype(np.float64).reshape(n, k, c * h * w) - 1.0      # [j, k, d]
    a = coefficients[:, :, :n].astype(np.float64)                           # [j, k, i]
    x = np.einsum("jki,jkd->ikd", a, v)                                     # [i, k, d]
    x = np.clip(x, 0.0, 1.0).astype(np.float32).reshape(n * k, c, h, w)
    return decode_numpy(x, factor) if factor != 1 else x


def decode_sdc_torch(codes: "torch.Tensor", coefficients: "torch.Tensor", factor: int = 1) -> "torch.Tensor":
    """Torch version of :func:`decode_sdc_numpy` (differentiable; computes in the input dtype)."""
    import torch

    n, k = check_sdc_shapes(tuple(codes.shape), tuple(coefficients.shape))
    c, h, w = codes.shape[2:]
    v = 2.0 * codes.reshape(n, k, c * h * w) - 1.0
    a = coefficients[:, :, :n].to(v.dtype)
    x = torch.einsum("jki,jkd->ikd", a, v).clamp(0.0, 1.0).reshape(n * k, c, h, w)
    return decode_torch(x, factor) if factor != 1 else x
