"""Pictures of a multisize buffer: one row per class, one column per rank, prefix boundaries marked.

:func:`image_grid` turns stored images ``[K, N, C, H, W]`` (pixel space) into one ``[H', W', 3]``
uint8 mosaic; :func:`save_grid` writes it as a PNG with class names, rank numbers and a vertical
line after each requested prefix size (``sizes=[1, 2, 10]``: "the first 1 / 2 / 10 images per
class"). ``edgecond show BUFFER --sizes 1,2,10 -o grid.png`` is the command; the condensation
engine logs the same grid to TensorBoard. numpy (+ matplotlib for the PNG); no torch.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import ConfigError

__all__ = ["image_grid", "save_grid", "parse_sizes"]

PAD = 1  # pixels between tiles


def _to_rgb(images: np.ndarray) -> np.ndarray:
    """``[..., C, H, W]`` float pixels in [0, 1] → ``[..., H, W, 3]`` uint8."""
    x = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
    c = x.shape[-3]
    if c == 1:
        x = np.repeat(x, 3, axis=-3)
    elif c != 3:
        x = np.repeat(x.mean(axis=-3, keepdims=True), 3, axis=-3)
    return np.moveaxis((x * 255.0 + 0.5).astype(np.uint8), -3, -1)


def image_grid(images: Any, *, n: int | None = None, classes: Sequence[int] | None = None,
               pad: int = PAD) -> np.ndarray:
    """A ``[K*(H+pad)-pad, n*(W+pad)-pad, 3]`` uint8 mosaic: row = class, column = rank.

    ``images``: a :class:`~edgecond.buffer.MultisizeBuffer` or an array ``[K, N, C, H, W]`` in
    pixel space [0, 1] (e.g. a torch tensor's ``.numpy()``). ``n``: the first ``n`` ranks (default
    all); ``classes``: class rows to show (default all).
    """
    if hasattr(images, "images_class_major"):
        images = images.images_class_major(n)
    x = np.asarray(images)
    if x.ndim != 5:
        raise ConfigError(f"images have shape {x.shape}; expected [classes, ranks, C, H, W] (pixel space).")
    if n is not None:
        x = x[:, : int(n)]
    if classes is not None:
        x = x[[int(c) for c in classes]]
    k, m, _, h, w = x.shape
    rgb = _to_rgb(x)
    grid = np.full((k * (h + pad) - pad, m * (w + pad) - pad, 3), 255, dtype=np.uint8)
    for i in range(k):
        for j in range(m):
            grid[i * (h + pad): i * (h + pad) + h, j * (w + pad): j * (w + pad) + w] = rgb[i, j]
    return grid


def parse_sizes(text: str | None, ipc: int) -> list[int]:
    """``"1,2,10"`` → ``[1, 2, 10]`` (each in 1..ipc); ``None`` → ``[ipc]``."""
    if text is None or not str(text).strip():
        return [int(ipc)]
    try:
        sizes = sorted({int(s) for s in str(text).split(",") if s.strip()})
    except ValueError:
        raise ConfigError(f"--sizes {text!r}: expected a comma list of integers such as 1,2,10.") from None
    bad = [s for s in sizes if not 1 <= s <= int(ipc)]
    if bad or not sizes:
        raise ConfigError(f"--sizes {text!r}: sizes must be in 1..{ipc} (the buffer's images per class); "
                          f"got {bad or 'none'}.")
    return sizes


def save_grid(buffer: Any, path: str | os.PathLike, *, sizes: Sequence[int] | None = None,
              classes: Sequence[int] | None = None, scale: float = 0.35, dpi: int = 100,
              title: str | None = None) -> Path:
    """Write the grid of ``buffer`` (all ranks up to ``max(sizes)``) as a PNG with class names,
    rank numbers and a red line after every prefix size in ``sizes``; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ipc = int(buffer.ipc)
    sizes = sorted({int(s) for s in (sizes or [ipc])})
    bad = [s for s in sizes if not 1 <= s <= ipc]
    if bad:
        raise ConfigError(f"sizes {bad} are outside the buffer's 1..{ipc} images per class.")
    n = max(sizes)
    grid = image_grid(buffer, n=n, classes=classes)
    _, h, w = buffer.image_shape
    rows = list(range(int(buffer.num_classes))) if classes is None else [int(c) for c in classes]
    names = list(buffer.class_names)
    fig_w = max(3.0, n * scale + 1.2)
    fig_h = max(2.0, len(rows) * scale + 0.8)
    fig, ax = plt.subplots(figsize=(fig_w, fig_h), dpi=dpi)
    ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([j * (w + PAD) + w / 2 for j in range(n)])
    ax.set_xticklabels([str(j + 1) for j in range(n)], fontsize=7)
    ax.set_yticks([i * (h + PAD) + h / 2 for i in range(len(rows))])
    ax.set_yticklabels([str(names[c]) if c < len(names) else str(c) for c in rows], fontsize=7)
    ax.set_xlabel("rank (a prefix of n ranks is the buffer at size n)", fontsize=8)
    for s in sizes:
        if s < n or len(sizes) > 1:
            x = s * (w + PAD) - PAD / 2 - 0.5
            ax.axvline(x, color="red", linewidth=1.5)
            ax.text(x, -1.0, f"n={s}", color="red", fontsize=7, ha="right", va="bottom")
    meta = buffer.meta
    ax.set_title(title or f"{meta.dataset} · {meta.method or 'buffer'} · IPC{ipc} · sizes {sizes}", fontsize=8,
                 pad=12)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
