"""Stored values <-> pixel space (spec §5, §5.1) and the decoding memory budget."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import BufferFormatReason, ConfigError
from ..errors import EdgecondError as EdgecondErrorBase
from ..formation import decode_sdc_numpy
from .spec import _NP_TO_ST, _ST_TO_NP, DECODE_BUDGET_ENV, DEFAULT_DECODE_BUDGET, _err

def encode_images(x: Any, dtype: str) -> np.ndarray:
    """Convert images (float pixel space or uint8) to the storage dtype (spec §5).

    float input: NaN/inf raise :class:`ConfigError`, values are clipped to ``[0, 1]``;
    ``uint8`` storage is ``clip(rint(x*255), 0, 255)``; ``float16`` rounds to nearest even.
    uint8 input is stored as is for ``uint8`` and divided by 255 otherwise.
    """
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    name = _storage_name(dtype)
    if x.dtype == np.uint8:
        if name == "uint8":
            return x
        x = x.astype(np.float32) / np.float32(255.0)
    elif not np.issubdtype(x.dtype, np.floating):
        raise ConfigError(
            f"images have dtype {x.dtype}; expected float pixel values in [0, 1] or uint8 0..255."
        )
    if x.size and not np.isfinite(x).all():
        raise ConfigError("images contain NaN or infinite values; a buffer stores finite pixels in [0, 1].")
    x = np.clip(x, 0.0, 1.0)
    if name == "uint8":
        return np.clip(np.rint(x.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return x.astype(_ST_TO_NP[_NP_TO_ST[name]])


def decode_images(q: np.ndarray, *, src: str = "buffer") -> np.ndarray:
    """Stored images -> float32 pixel space; float storage is checked to be finite in ``[0, 1]``."""
    if q.dtype == np.uint8:
        return q.astype(np.float32) / np.float32(255.0)
    x = q.astype(np.float32)
    if x.size and not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
        bad = int(np.count_nonzero(~(np.isfinite(x) & (x >= 0) & (x <= 1))))
        raise _err(src, f"{bad} stored pixel values are NaN/inf or outside [0, 1] (expected pixel space "
                        "[0, 1]); the file was not written by a conforming writer.", BufferFormatReason.VALUES)
    return x


def _storage_name(dtype: Any) -> str:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in _NP_TO_ST:
        raise ConfigError(f"storage dtype {dtype!r} is not supported; expected one of uint8, float16, float32.")
    return name



def _sdc_decode(src: str, codes: np.ndarray, coefficients: np.ndarray, factor: int) -> np.ndarray:
    """Checked SDC decode (spec §5.1): codes must be valid images, coefficients finite."""
    codes = decode_images(codes, src=src)
    coef = coefficients.astype(np.float32)
    if not np.isfinite(coef).all():
        raise _err(src, "SDC coefficients contain NaN or infinite values; expected finite numbers. The file is damaged.",
                   BufferFormatReason.VALUES)
    return decode_sdc_numpy(codes, coef, factor)



def decode_budget(max_bytes: Any = None) -> int:
    """The decoding memory budget in bytes: ``max_bytes`` if given, else ``$EDGECOND_DECODE_BUDGET``,
    else :data:`DEFAULT_DECODE_BUDGET` (2 GiB). Accepts ``"8GiB"``-style strings."""
    from ..units import parse_bytes

    source = "argument max_bytes"
    if max_bytes is None:
        source = f"${DECODE_BUDGET_ENV}"
        max_bytes = os.environ.get(DECODE_BUDGET_ENV) or DEFAULT_DECODE_BUDGET
    try:
        return parse_bytes(max_bytes)
    except EdgecondErrorBase as exc:
        raise ConfigError(f"decode budget {max_bytes!r} ({source}) is not a byte quantity: {exc}") from None


def _check_decode_budget(src: str, need: int, max_bytes: Any, what: str) -> None:
    budget = decode_budget(max_bytes)
    if need > budget:
        raise _err(src, f"{what} would need about {need} bytes ({need / 2**30:.2f} GiB), above the decoding "
                        f"budget of {budget} bytes. Pass a smaller n, max_bytes={need} (or more), or set "
                        f"{DECODE_BUDGET_ENV}={need} if this buffer is trusted.", BufferFormatReason.DECODE_BUDGET)
