"""Real training data on the device (per-class samplers) and the initial stored images."""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..errors import CondenseError, ConfigError
from ..utils import make_generator

__all__ = ["RealData", "mosaic", "initial_images"]


class RealData:
    """The training split on the device, normalised, with per-class indices and samplers.

    Indices are drawn with a CPU generator (reproducible on every device) and moved over.
    During :func:`condense` the engine sets ``class_stream`` (``c -> generator``): a class's
    indices then come from its own stream, whichever worker owns the class, and ``shard``
    (a :class:`~edgecond.condense.distributed.Shard`) for :meth:`global_mean`.
    """

    class_stream: Any = None
    shard: Any = None

    def __init__(self, dataset, device: torch.device) -> None:
        self.dataset = dataset
        self.device = device
        # dataset.normalize's (x - mean) / std in place on one copy: the same numbers without a
        # second full-size temporary (it set the peak RSS of a CIFAR-10 condensation)
        x = dataset.x_train.to(device=device, dtype=torch.float32, copy=True)
        mean = torch.tensor(dataset.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(dataset.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        self.x = x.sub_(mean).div_(std)
        self.y = dataset.y_train.long().to(device)
        self.class_idx = [idx.cpu() for idx in dataset.class_indices()]
        self.num_classes = dataset.num_classes
        self.image_shape = dataset.image_shape
        for c, idx in enumerate(self.class_idx):
            if len(idx) == 0:
                raise CondenseError(
                    f"class {c} ({dataset.class_names[c]!r}) of {dataset.name!r} has no training images; "
                    "every class needs at least one."
                )

    def class_indices(self, c: int, n: int, generator: torch.Generator) -> torch.Tensor:
        idx = self.class_idx[c]
        if self.class_stream is not None:
            generator = self.class_stream(c)
        perm = torch.randperm(len(idx), generator=generator)[: min(n, len(idx))]
        return idx[perm]

    def sample_class(self, c: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """``min(n, |class c|)`` random normalised images of class ``c`` (no replacement)."""
        return self.x[self.class_indices(c, n, generator).to(self.device)]

    def sample_classes(self, classes: Sequence[int], n: int, generator: torch.Generator) -> tuple[torch.Tensor, list[int]]:
        """Real batches of several classes concatenated, and the batch size of each class."""
        parts = [self.class_indices(c, n, generator) for c in classes]
        idx = torch.cat(parts).to(self.device)
        return self.x[idx], [len(p) for p in parts]

    def global_mean(self, values: torch.Tensor) -> torch.Tensor:
        """Mean of ``values`` over the rows of every worker (a matcher sees only its own classes'
        rows of a class group when classes are sharded); ``values.mean()`` in one process."""
        if self.shard is None:
            return values.float().mean()
        return self.shard.global_mean(values)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch of ``n`` images of all classes (no replacement) and their labels."""
        idx = torch.randperm(len(self.y), generator=generator)[: min(n, len(self.y))].to(self.device)
        return self.x[idx], self.y[idx]


def mosaic(images: torch.Tensor, factor: int) -> torch.Tensor:
    """IDC init: ``[M*f², C, H, W]`` → ``[M, C, H, W]``, each f×f grid of downsampled images.

    Tile ``(a, b)`` of output ``i`` is input ``i*f² + a*f + b`` area-downsampled, so
    :func:`~edgecond.formation.decode_torch` gives back (blurred) the input images in order.
    """
    if factor == 1:
        return images
    n, c, h, w = images.shape
    m = n // (factor * factor)
    th, tw = h // factor, w // factor
    small = F.interpolate(images, size=(th, tw), mode="area")
    t = small.reshape(m, factor, factor, c, th, tw).permute(0, 3, 1, 4, 2, 5)
    return t.reshape(m, c, h, w).contiguous()


def initial_images(dataset, ipc: int, factor: int = 1, *, seed: int = 0, offset: int = 0,
                   init: str = "real") -> torch.Tensor:
    """Initial stored images ``[K, ipc, C, H, W]`` in pixel space.

    ``real``: per class, a permutation of its training images drawn from ``seed``; stored image
    ``i`` uses permutation positions ``offset*ipc*f² + i*f² ...`` (wrapping around when the class
    is small), mosaicked for ``f > 1``. Different ``offset`` with the same ``seed`` → disjoint
    initial images (as long as the class is large enough). ``noise``: N(0.5, 0.25²) clamped.
    """
    c, h, w = dataset.image_shape
    gen = make_generator(seed)
    k = dataset.num_classes
    if init == "noise":
        return (0.5 + 0.25 * torch.randn(k, ipc, c, h, w, generator=gen)).clamp(0, 1)
    need = ipc * factor * factor
    out = []
    for idx in dataset.class_indices():
        perm = idx[torch.randperm(len(idx), generator=gen)]
        pos = (torch.arange(need) + int(offset) * need) % len(perm)
        imgs = dataset.x_train[perm[pos]].float()
        out.append(mosaic(imgs, factor))
    return torch.stack(out)
