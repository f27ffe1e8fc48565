"""The dataset object: :class:`ImageDataset` (pixel-space tensors, labels, class names, mean/std),
:func:`from_arrays` (numpy arrays in, checked), and :func:`holdout_split` (a validation split
carved from TRAIN, for tuning). The registry of named datasets is :mod:`edgecond.data`, which
re-exports these names.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .errors import ConfigError, DatasetError
from .facts import DataFacts

__all__ = ["ImageDataset", "from_arrays", "holdout_split", "MAX_CLASSES", "STATS_SIGNIFICANT_DIGITS"]


@dataclass
class ImageDataset:
    """A labelled image dataset in pixel space with a fixed train/test split."""

    name: str
    x_train: torch.Tensor  # float32 [N, C, H, W] in [0, 1]
    y_train: torch.Tensor  # int64 [N]
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: list[str]
    mean: tuple[float, ...]  # per channel, of the training split in pixel space
    std: tuple[float, ...]
    source: str = ""  # where it was read from
    #: a horizontal flip keeps every label (CIFAR: yes; digits, MNIST, SVHN: no; your own data:
    #: the ``flips=`` flag of :func:`load_dataset`, default no). Read by every augmentation.
    flips: bool = False

    @property
    def facts(self) -> DataFacts:
        """The :class:`~edgecond.facts.DataFacts` presets are resolved from (no names)."""
        counts = torch.bincount(self.y_train, minlength=self.num_classes)
        return DataFacts(image_shape=self.image_shape, num_classes=self.num_classes,
                         train_per_class=int(counts.min()) if len(counts) else 0,
                         train_size=int(len(self.y_train)), flips=bool(self.flips))

    def digest(self) -> str:
        """Content digest of the training split (pixels, labels, class names): 32 hex digits of
        BLAKE2b. A buffer records it, so a moved or changed dataset file is detected."""
        cached = self.__dict__.get("_digest")
        if cached is not None:
            return cached
        h = hashlib.blake2b(digest_size=16)
        h.update(repr((tuple(self.x_train.shape), self.class_names)).encode())
        h.update(self.x_train.contiguous().numpy().tobytes())
        h.update(self.y_train.contiguous().numpy().tobytes())
        out = h.hexdigest()
        self.__dict__["_digest"] = out
        return out

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_indices(self) -> list[torch.Tensor]:
        """For each class ``c``, the (sorted) indices of its training images."""
        return [torch.nonzero(self.y_train == c, as_tuple=False).flatten() for c in range(self.num_classes)]

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1, 1, 1) if x.dim() == 4 else (-1, 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return mean, std

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel space → model input: ``(x - mean) / std`` per channel (differentiable)."""
        mean, std = self._stats(x)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Model input → pixel space (inverse of :meth:`normalize`)."""
        mean, std = self._stats(x)
        return x * std + mean

    def subset_per_class(self, ipc: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``ipc`` random training images of every class (class-major order), and their labels.

        The draw depends only on ``seed`` (a local generator; the global RNG is untouched).
        """
        ipc = int(ipc)
        if ipc < 1:
            raise ConfigError(f"ipc={ipc} is not a valid images-per-class count; expected an integer >= 1.")
        gen = torch.Generator().manual_seed(int(seed))
        picks = []
        for c, idx in enumerate(self.class_indices()):
            if len(idx) < ipc:
                raise ConfigError(
                    f"class {c} ({self.class_names[c]!r}) of dataset {self.name!r} has only {len(idx)} "
                    f"training images but ipc={ipc} was requested; pass ipc <= {len(idx)} or use the "
                    "full training set (ipc 0 / 'all' on the CLI)."
                )
            picks.append(idx[torch.randperm(len(idx), generator=gen)[:ipc]])
        sel = torch.cat(picks)
        return self.x_train[sel].clone(), self.y_train[sel].clone()

    def summary(self) -> dict:
        """Small JSON-able description (no tensors)."""
        return {
            "name": self.name,
            "source": self.source,
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "train": int(len(self.y_train)),
            "test": int(len(self.y_test)),
            "mean": [round(m, 6) for m in self.mean],
            "std": [round(s, 6) for s in self.std],
        }

    def __repr__(self) -> str:  # tensors would flood the terminal
        c, h, w = self.image_shape
        return (
            f"ImageDataset(name={self.name!r}, train={len(self.y_train)}, test={len(self.y_test)}, "
            f"shape=({c}, {h}, {w}), classes={self.num_classes}, source={self.source!r})"
        )


def _to_float_nchw(images: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8/float, [N,H,W] | [N,H,W,C] | [N,C,H,W] → float32 [N,C,H,W] in [0,1], and the
    contiguous uint8 NCHW array when the input was uint8 (else None)."""
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim == 4:
        chan = (1, 3, 4)
        if arr.shape[1] in chan:
            pass  # NCHW (also chosen when both axes could be channels)
        elif arr.shape[3] in chan:
            arr = arr.transpose(0, 3, 1, 2)
        else:
            raise DatasetError(
                f"{what} has shape {arr.shape}; expected [N, C, H, W] or [N, H, W, C] with C in "
                "{1, 3, 4}, or [N, H, W] for grey images."
            )
    else:
        raise DatasetError(
            f"{what} has shape {arr.shape} ({arr.ndim} dims); expected [N, C, H, W], [N, H, W, C] or [N, H, W]."
        )
    if arr.dtype == np.uint8:
        u8 = np.ascontiguousarray(arr)
        return torch.from_numpy(u8).to(torch.float32).div_(255.0).numpy(), u8  # multi-threaded
    elif np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32)
        if out.size:
            lo, hi = float(np.nanmin(out)), float(np.nanmax(out))
            if np.isnan(out).any() or lo < -1e-3 or hi > 1.0 + 1e-3:
                raise DatasetError(
                    f"{what} is float with values in [{lo:g}, {hi:g}]; expected pixel values in [0, 1] "
                    "(store uint8 0..255, or divide float images by 255)."
                )
            out = np.clip(out, 0.0, 1.0)
    else:
        raise DatasetError(f"{what} has dtype {arr.dtype}; expected uint8 (0..255) or float in [0, 1].")
    return np.ascontiguousarray(out), None


def _labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or len(arr) != n:
        raise DatasetError(f"{what} has shape {arr.shape}; expected [{n}] (one integer label per image).")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DatasetError(f"{what} has dtype {arr.dtype}; expected integer class ids.")
    if arr.size and np.issubdtype(arr.dtype, np.floating) and not (np.isfinite(arr).all() and arr.max() < 2**31):
        raise DatasetError(f"{what} contains non-finite or huge labels (max {float(arr.max())}); expected class ids 0..K-1.")
    if not (np.issubdtype(arr.dtype, np.integer) or (arr.size and np.all(np.mod(arr, 1) == 0))):
        raise DatasetError(f"{what} has dtype {arr.dtype} with non-integer values; expected integer class ids.")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise DatasetError(f"{what} contains negative label {int(arr.min())}; expected class ids 0..K-1.")
    return arr


MAX_CLASSES = 1 << 17  # class ids are < 131072 (ImageNet-21k has 21,841 classes)


def _check_label_values(name: str, ytr: np.ndarray, yte: np.ndarray, class_names) -> None:
    """Labels beyond the class cap are refused before anything proportional to them is built."""
    top = int(max(ytr.max(initial=0), yte.max(initial=0)))
    if top >= MAX_CLASSES:
        raise DatasetError(f"{name}: label {top} is beyond the cap of {MAX_CLASSES} classes; expected class ids "
                           "0..K-1 (relabel the data to consecutive ids).")


def _check_no_empty_class(name: str, ytr: np.ndarray, class_names: Sequence[str]) -> None:
    """Every class must have at least one training image (condensation draws from each class)."""
    counts = np.bincount(ytr, minlength=len(class_names))
    empty = np.flatnonzero(counts[:len(class_names)] == 0)
    if empty.size:
        c = int(empty[0])
        raise DatasetError(f"{name}: class {c} ({class_names[c]!r}) has no training images"
                           f"{f' (and {empty.size - 1} more classes)' if empty.size > 1 else ''}; expected at least "
                           "one per class. Drop the class or relabel the data to consecutive ids.")


STATS_SIGNIFICANT_DIGITS = 4


def _round_sig(v: float, digits: int = STATS_SIGNIFICANT_DIGITS) -> float:
    """Round to ``digits`` significant digits (mean/std are written into every buffer header,
    where 4 digits, as in the usual ``(0.4914, 0.4822, 0.4465)``, keep lean slices small)."""
    return float(f"{v:.{digits}g}")


def _channel_stats(u8: np.ndarray | None, x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std (population) of ``x`` [N, C, H, W]; exact and fast from a histogram
    of the uint8 pixels ``u8`` when given, else accumulated in float64 by torch."""
    means, stds = [], []
    if u8 is not None:
        levels = np.arange(256, dtype=np.float64) / 255.0
        for c in range(x.shape[1]):
            hist = np.bincount(u8[:, c].reshape(-1), minlength=256).astype(np.float64)
            n = hist.sum()
            m = float((hist * levels).sum() / n)
            v = float((hist * (levels - m) ** 2).sum() / n)
            means.append(m)
            stds.append(max(v ** 0.5, 1e-6))
    else:
        t = torch.from_numpy(x)
        for c in range(x.shape[1]):
            ch = t[:, c].double()
            means.append(float(ch.mean()))
            stds.append(max(float(ch.std(unbiased=False)), 1e-6))
    return tuple(means), tuple(stds)


def from_arrays(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    class_names: Sequence[str] | None = None,
    source: str = "",
    stats: np.ndarray | None = None,
) -> ImageDataset:
    """Build an :class:`ImageDataset` from numpy arrays (uint8 or float [0,1]; NHWC/NCHW/NHW).

    Mean and std are computed per channel on the training split (``stats`` = precomputed
    ``[[mean...], [std...]]`` skips that, e.g. from a cache).
    """
    xtr, xtr_u8 = _to_float_nchw(x_train, f"{name}: x_train")
    xte, _ = _to_float_nchw(x_test, f"{name}: x_test")
    ytr = _labels(y_train, len(xtr), f"{name}: y_train")
    yte = _labels(y_test, len(xte), f"{name}: y_test")
    if len(xtr) == 0:
        raise DatasetError(f"{name}: the training split is empty; expected at least one image per class.")
    if xtr.shape[1:] != xte.shape[1:]:
        raise DatasetError(
            f"{name}: train images have shape {xtr.shape[1:]} but test images {xte.shape[1:]}; "
            "expected the same (C, H, W) for both splits."
        )
    _check_label_values(name, ytr, yte, class_names)
    k = int(max(ytr.max(initial=0), yte.max(initial=0))) + 1
    if class_names is None:
        class_names = [str(i) for i in range(k)]
    class_names = [str(c) for c in class_names]
    if len(class_names) < k:
        raise DatasetError(
            f"{name}: labels go up to {k - 1} but only {len(class_names)} class names were given; "
            f"expected {k} names."
        )
    _check_no_empty_class(name, ytr, class_names)
    if stats is not None and np.shape(stats) == (2, xtr.shape[1]):
        mean, std = tuple(float(v) for v in stats[0]), tuple(float(v) for v in stats[1])
    else:
        mean, std = _channel_stats(xtr_u8, xtr)
    # 4 significant digits (relative change < 1e-4): mean/std go into every buffer header.
    mean, std = tuple(_round_sig(m) for m in mean), tuple(_round_sig(v) for v in std)
    return ImageDataset(
        name=name,
        x_train=torch.from_numpy(xtr),
        y_train=torch.from_numpy(ytr),
        x_test=torch.from_numpy(xte),
        y_test=torch.from_numpy(yte),
        class_names=list(class_names),
        mean=mean,
        std=std,
        source=source,
    )


def holdout_split(dataset, *, per_class: int = 30, seed: int = 0):
    """A copy of ``dataset`` whose *test* split is ``per_class`` images per class carved from
    TRAIN (and removed from its train split). Use it to tune settings; the real test split is
    not touched."""
    gen = torch.Generator().manual_seed(int(seed))
    keep, hold = [], []
    for c, idx in enumerate(dataset.class_indices()):
        if len(idx) <= per_class:
            raise ConfigError(
                f"class {c} of {dataset.name!r} has {len(idx)} training images; cannot hold out "
                f"{per_class} for validation. Pass a smaller per_class."
            )
        perm = idx[torch.randperm(len(idx), generator=gen)]
        hold.append(perm[:per_class])
        keep.append(perm[per_class:])
    keep_i, hold_i = torch.cat(keep).sort().values, torch.cat(hold).sort().values
    return ImageDataset(
        name=f"{dataset.name}-val",
        x_train=dataset.x_train[keep_i].clone(),
        y_train=dataset.y_train[keep_i].clone(),
        x_test=dataset.x_train[hold_i].clone(),
        y_test=dataset.y_train[hold_i].clone(),
        class_names=list(dataset.class_names),
        mean=tuple(dataset.mean),
        std=tuple(dataset.std),
        source=f"{dataset.source} (validation: {per_class}/class held out of train, seed {seed})",
        flips=bool(getattr(dataset, "flips", False)),
    )


# --------------------------------------------------------------------------------------------
# the protocol

