"""Soft labels from teacher networks, stored in a buffer per stored image (per decoded view).

EDC takes its labels from the observer networks: for every stored image (every decoded view
when ``factor > 1``) the teachers' mean logits are stored in the buffer's optional
``soft_labels`` tensor (spec: ``[N, K, factor², L]``, rank-major, so a prefix slice carries
the soft labels of its images and :meth:`~edgecond.buffer.MultisizeBuffer.bytes_for` counts
them). They are computed on the images *as stored* (after uint8/float16 quantisation), so a
client trains on exactly the pairs the teacher saw. float16 halves their bytes (the logits of a
trained ConvNet are far inside float16's range; an overflow raises).

:func:`add_soft_labels` works on any buffer (IDC, IDM, EDC, random ...), which is how the
benchmarks compare every method with and without soft labels at equal stored images.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .errors import ConfigError

__all__ = ["teacher_logits", "add_soft_labels", "soft_label_bytes"]


@torch.no_grad()
def teacher_logits(teachers: Sequence[nn.Module], x_pixels: torch.Tensor, dataset, *,
                   batch_size: int = 512) -> torch.Tensor:
    """Mean logits of ``teachers`` (eval mode) on pixel-space images ``[M, C, H, W]``."""
    if not teachers:
        raise ConfigError("teachers is empty; expected at least one trained observer network.")
    dev = next(iter(teachers[0].parameters())).device
    out = []
    for start in range(0, len(x_pixels), batch_size):
        xb = dataset.normalize(torch.as_tensor(x_pixels[start:start + batch_size]).to(dev, torch.float32))
        out.append(torch.stack([t.eval()(xb).float() for t in teachers]).mean(0).cpu())
    return torch.cat(out)


def add_soft_labels(buffer: Any, dataset, teachers: Sequence[nn.Module], *, dtype: str = "float16",
                    extra: dict | None = None) -> Any:
    """A copy of ``buffer`` with the teachers' logits as soft labels (kind ``logits``).

    One label per decoded training image: ``[K, N, factor², K]``. ``extra`` entries are merged
    into the buffer's ``extra`` metadata (e.g. which observers labelled it)."""
    from .buffer import MultisizeBuffer
    from .formation import decode_torch

    meta = buffer.meta
    if meta.is_sdc:
        raise ConfigError("a slimmable (SDC) buffer stores no soft labels (spec §5.1); use a plain buffer.")
    if int(buffer.num_classes) != dataset.num_classes:
        raise ConfigError(f"buffer has {buffer.num_classes} classes, dataset {dataset.name!r} has "
                          f"{dataset.num_classes}; label a buffer with teachers of its own data.")
    images = torch.from_numpy(buffer.images_class_major())  # [K, N, C, H, W], as stored
    k, n = images.shape[:2]
    f = int(buffer.factor)
    decoded = decode_torch(images.reshape(k * n, *images.shape[2:]), f)  # [K*N*f², C, H, W]
    logits = teacher_logits(teachers, decoded, dataset).reshape(k, n, f * f, -1)
    ex = dict(meta.extra or {})
    ex.update(extra or {})
    return MultisizeBuffer.from_class_major(
        images.numpy(), labels=list(meta.labels), class_names=list(meta.class_names), dataset=meta.dataset,
        mean=list(meta.mean), std=list(meta.std), factor=f, method=meta.method, config=dict(meta.config or {}),
        dtype=meta.dtype, soft_labels=logits.numpy(), soft_label_kind="logits", soft_label_dtype=dtype,
        extra=ex, accuracy=meta.accuracy or None, recipe=meta.recipe,
    )


def soft_label_bytes(buffer: Any, n: int) -> int:
    """Bytes the soft labels add to the ``n``-rank slice (0 when the buffer has none)."""
    if not buffer.has_soft_labels:
        return 0
    spec = next(t for t in buffer.meta.tensors if t.name == "soft_labels")
    return int(n) * int(spec.rank_bytes)
