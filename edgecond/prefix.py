"""What a client trains on: the per-class prefix arrays of a buffer and their normalisation.

Every client of a multisize buffer — the Flower ClientApp (``clients.task.condensed_set``), the
Avalanche memory (``clients.avalanche_replay.CondensedBuffer``) and the ONNX edge trainer
(``clients.edge.train``) — asks one function, :func:`prefix_arrays`, for the same thing: the
first ``n`` ranks of some classes, decoded to training images, with their labels, their
target distributions (the buffer's soft labels when it has them, one-hot otherwise), the
buffer's normalisation and its training recipe (:mod:`edgecond.recipe`). Torch-free (numpy),
so a phone needs nothing more.

::

    p = prefix_arrays(buf, 3)                  # 3 ranks of every class
    p = prefix_arrays(buf, {4: 2, 7: 5})       # class 4: 2 ranks, class 7: 5 ranks
    x = p.normalized()                         # (x - mean) / std, what the model sees
    for xb, tb in recipe_batches(p.x, p.targets, p.recipe, rng, mean=p.mean, std=p.std): ...
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .errors import ConfigError
from .recipe import Recipe, recipe_of, targets_of

__all__ = ["PrefixArrays", "prefix_arrays"]


@dataclass(frozen=True)
class PrefixArrays:
    """Training arrays of a buffer prefix (one row per decoded training image).

    Attributes:
        x: float32 [M, C, H, W] pixel space (formation decoded: ``factor²`` images per stored one).
        y: int64 [M] class ids (the buffer's ``labels``).
        targets: float32 [M, L] target distributions: soft labels (softmax of stored logits at
            the recipe's temperature, or renormalised probabilities) or one-hot of ``y``.
        soft: whether ``targets`` are the buffer's soft labels.
        mean, std: the buffer's normalisation (per channel).
        recipe: the buffer's training recipe (protocol defaults for buffers without one).
        ranks: ``{class id: ranks taken}``.
    """

    x: np.ndarray
    y: np.ndarray
    targets: np.ndarray
    soft: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    recipe: Recipe
    ranks: dict[int, int]

    def __len__(self) -> int:
        return int(len(self.x))

    def normalized(self) -> np.ndarray:
        """``(x - mean) / std`` as float32 (what the model is trained and evaluated on)."""
        mu = np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1)
        sd = np.asarray(self.std, np.float32).reshape(1, -1, 1, 1)
        return ((self.x - mu) / sd).astype(np.float32)


def prefix_arrays(buf: Any, ranks: int | Mapping[int, int] | None = None, *, num_classes: int | None = None,
                  flips: bool | None = None) -> PrefixArrays:
    """The training arrays of a prefix of ``buf`` (a :class:`edgecond.buffer.MultisizeBuffer`).

    ``ranks``: ``None`` (all ranks of every class), an int ``n`` (the first ``n`` ranks of every
    class: rank-major order, as :meth:`MultisizeBuffer.training_arrays`) or ``{class id: n}``
    (per class; classes absent or with ``n = 0`` are left out; class order as given).
    ``num_classes``: width of one-hot targets (default ``max(labels) + 1``); soft labels keep
    their own width (the model's outputs). ``flips``: the data's flip policy for a buffer
    without a recipe (default: the facts recorded in it; :func:`edgecond.recipe.recipe_of` —
    pass ``edgecond.data.flips_of_buffer(buf.meta)`` to consult the dataset registry too).
    """
    labels = [int(v) for v in buf.labels]
    width = int(num_classes) if num_classes is not None else max(labels) + 1
    if width < max(labels) + 1:
        raise ConfigError(f"num_classes={num_classes}; the buffer has class id {max(labels)} "
                          f"(expected num_classes >= {max(labels) + 1}).")
    recipe = recipe_of(buf, flips=flips)  # flips None: the buffer's recipe / recorded facts (no torch)
    soft_kind = (buf.meta.soft or {}).get("kind", "logits") if buf.has_soft_labels else "logits"
    if ranks is None or isinstance(ranks, (int, np.integer)):
        n = buf.ipc if ranks is None else int(ranks)
        if not 1 <= n <= buf.ipc:
            raise ConfigError(f"ranks={ranks}; expected 1..{buf.ipc} (the buffer's ranks per class).")
        x, y = buf.training_arrays(n)
        soft = buf.soft_targets(n)
        taken = {c: n for c in labels}
    else:
        slot = {c: i for i, c in enumerate(labels)}
        want = {int(c): int(k) for c, k in dict(ranks).items() if int(k) > 0}
        bad = sorted(c for c in want if c not in slot)
        over = sorted(c for c, k in want.items() if k > buf.ipc)
        if bad or over:
            raise ConfigError(f"ranks={dict(ranks)}: classes {bad} are not in the buffer (it holds {labels}); "
                              f"classes {over} ask for more than its {buf.ipc} ranks.")
        if not want:
            raise ConfigError(f"ranks={dict(ranks)}: no class asks for a rank; expected at least one n >= 1.")
        top = max(want.values())
        f = int(buf.factor)
        # per class: the k-rank prefix's own decode (SDC images depend on k; never cut a larger one)
        x = np.concatenate([buf.class_training_images(slot[c], k) for c, k in want.items()])
        y = np.concatenate([np.full(k * f * f, c, np.int64) for c, k in want.items()])
        s = buf.soft_targets(top, decode=False)  # [top*K, f², L], rank-major
        soft = None if s is None else np.concatenate(
            [s[slot[c]::len(labels)][:k].reshape(k * f * f, -1) for c, k in want.items()])
        taken = want
    t = targets_of(y, width, soft, soft_kind=soft_kind, temperature=recipe.temperature)
    return PrefixArrays(x=np.ascontiguousarray(x, dtype=np.float32), y=np.asarray(y, dtype=np.int64),
                        targets=np.ascontiguousarray(t, dtype=np.float32), soft=soft is not None,
                        mean=tuple(float(v) for v in buf.meta.mean), std=tuple(float(v) for v in buf.meta.std),
                        recipe=recipe, ranks=dict(taken))
