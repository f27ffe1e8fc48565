"""Avalanche storage policy whose replay memory is the best condensed prefix that fits.

A drop-in :class:`avalanche.training.storage_policy.ExemplarsBuffer` for stock strategies::

    from avalanche.training import Naive
    from avalanche.training.plugins import ReplayPlugin
    from clients.avalanche_replay import CondensedBuffer, MemoryBudgetPlugin

    policy = CondensedBuffer(200, buffers=["exp0.safetensors", "exp1.safetensors", ...])
    strategy = Naive(model, opt, plugins=[ReplayPlugin(mem_size=200, storage_policy=policy),
                                          MemoryBudgetPlugin(policy, [200, 120, 200])])

Content comes from multisize buffers (:class:`edgecond.buffer.MultisizeBuffer`): one per
experience (a list/dict indexed by ``experience.current_experience``), one covering every class,
or a callable ``classes -> buffer`` (e.g. :class:`edgecond.continual.ExperienceCondenser`, which
condenses on first use and caches). After each experience (:meth:`CondensedBuffer.post_adapt`)
the memory holds, for every class seen so far, the largest class-balanced prefix such that the
whole memory fits ``max_size`` (:func:`edgecond.continual.allocate`). :meth:`resize` re-allocates
prefixes: a smaller budget drops the *last* ranks of each class, a larger one brings ranks back
(the buffers hold them all) — nothing is re-condensed.

``max_size`` is counted in ``unit``:

* ``"items"`` (default) — training items, i.e. decoded images, which is what Avalanche's
  ``mem_size`` counts: ``len(policy.buffer) <= max_size`` always holds. A stored image of a
  factor-``f`` buffer yields ``f**2`` items.
* ``"images"`` — stored images.
* ``"bytes"`` — stored payload bytes (``C*H*W*itemsize`` per stored image; the unit of
  :mod:`edgecond.budget` traces). ``ReplayPlugin(mem_size=...)`` must then be given the same
  number of bytes (its constructor asserts ``storage_policy.max_size == mem_size``).

Items have the layout and types of the stream's items: the first item of each experience is
probed, so a stream yielding ``(x, int, int)`` (``nc_benchmark``) gets ``(x, int, int)``, one
yielding ``(x, tensor)`` (``class_incremental_benchmark``) gets ``(x, tensor)`` with the same
label dtype. Images are pixel space [0, 1] unless ``normalize=True`` (the buffer's mean/std).

**Training recipe.** Memory items carry their buffer's augmentation
(:mod:`edgecond.recipe`: the DSA ops, strength and flip policy the buffer was evaluated with;
older buffers get the protocol defaults): every ``memory[i]`` is a fresh augmented view
(``augment=False`` turns it off). CutMix is a batch operation and soft labels are not class ids,
so neither fits an item; :class:`SoftLabelPlugin` adds them: every training step it draws a
batch from the memory by the recipe (augmentation, CutMix, the buffer's soft labels as targets)
and adds its soft cross-entropy to the strategy's loss.

Two more plugins: :class:`MemoryBudgetPlugin` applies a budget schedule (one budget per
experience) by calling ``storage_policy.resize`` before each experience — it works with any
``ExemplarsBuffer``; :class:`GDumbStylePlugin` is GDumb's protocol (re-initialise the model and
train only on the memory) with any storage policy.
"""
from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from avalanche.benchmarks.utils import _make_taskaware_classification_dataset
from avalanche.benchmarks.utils.classification_dataset import ClassificationDataset
from avalanche.benchmarks.utils.data_attribute import DataAttribute
from avalanche.training.plugins import SupervisedPlugin
from avalanche.training.storage_policy import ExemplarsBuffer

from edgecond.buffer import MultisizeBuffer
from edgecond.continual import UNITS, allocate, make_schedule, memory_used, unit_cost
from edgecond.errors import BudgetError, ConfigError

__all__ = ["CondensedBuffer", "MemoryBudgetPlugin", "GDumbStylePlugin", "SoftLabelPlugin", "RecipePlugin",
           "buffer_class_labels"]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def buffer_class_labels(buf: MultisizeBuffer) -> list[int]:
    """The class id of each of the buffer's K class slots (its ``labels`` metadata)."""
    return [int(v) for v in buf.labels]


def _bytes_per_image(buf: MultisizeBuffer) -> int:
    """Stored bytes of one image of one class of ``buf`` (its soft labels included): one rank
    of the file (all classes) divided by the number of classes."""
    return max(int(buf.rank_bytes) // max(int(buf.num_classes), 1), 1)


def _load(source: Any, what: str) -> MultisizeBuffer:
    if isinstance(source, MultisizeBuffer):
        return source
    if isinstance(source, (str, Path)):
        return MultisizeBuffer.load(source, mmap=False)
    raise ConfigError(
        f"{what} is a {type(source).__name__}; expected an edgecond MultisizeBuffer or the path of a "
        ".safetensors buffer file."
    )


@dataclass
class _ItemFormat:
    """How the stream lays out one item (probed from the experience's dataset)."""

    fields: int = 3            # 2: (x, y); 3: (x, y, t)
    label: str = "int"         # "int" | "tensor" | "numpy"
    label_dtype: Any = None    # torch dtype / numpy dtype of tensor/numpy labels
    task: str = "int"
    task_dtype: Any = None
    image_shape: tuple[int, ...] | None = None

    @staticmethod
    def _kind(value: Any) -> tuple[str, Any]:
        if isinstance(value, torch.Tensor):
            return "tensor", value.dtype
        if isinstance(value, np.generic) or isinstance(value, np.ndarray):
            return "numpy", np.asarray(value).dtype
        return "int", None

    @classmethod
    def probe(cls, dataset: Any) -> "_ItemFormat":
        if dataset is None or len(dataset) == 0:
            return cls()
        item = dataset[0]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise ConfigError(
                f"the experience's dataset yields {type(item).__name__} items; expected (x, y) or "
                "(x, y, task_label) tuples like Avalanche classification datasets."
            )
        fmt = cls(fields=min(len(item), 3))
        fmt.label, fmt.label_dtype = cls._kind(item[1])
        if len(item) >= 3:
            fmt.task, fmt.task_dtype = cls._kind(item[-1])
        x = item[0]
        fmt.image_shape = tuple(x.shape) if hasattr(x, "shape") else None
        return fmt

    def make(self, value: int, kind: str, dtype: Any) -> Any:
        if kind == "tensor":
            return torch.tensor(value, dtype=dtype)
        if kind == "numpy":
            return np.asarray(value, dtype=dtype)[()]
        return int(value)


@dataclass
class _ItemAugment:
    """Per-item augmentation of one buffer's memory images by its recipe (numpy)."""

    recipe: Any
    mean: np.ndarray      # [1, C, 1, 1]
    std: np.ndarray
    normalized: bool      # items are already (x - mean) / std
    rng: np.random.Generator

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from edgecond import recipe as _recipe

        a = x.detach().cpu().numpy()[None].astype(np.float32)
        z = a if self.normalized else (a - self.mean) / self.std
        z = _recipe.augment_batch(z, self.recipe, self.rng)
        out = z if self.normalized else z * self.std + self.mean
        return torch.from_numpy(np.ascontiguousarray(out[0])).to(x.dtype)


class _MemoryItems(torch.utils.data.Dataset):
    """The memory's raw items ``(x, y)`` with the stream's label type (``t`` is kept for the
    task-label data attribute); ``aug[i]`` (when given) augments item ``i`` on every access."""

    def __init__(self, x: torch.Tensor, y: Sequence[int], t: Sequence[int], fmt: _ItemFormat,
                 aug: Sequence[Any] | None = None):
        self.x = x
        self.y = [int(v) for v in y]
        self.t = [int(v) for v in t]
        self.fmt = fmt
        self.aug = aug

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        # (x, y); for task-aware streams Avalanche's dataset appends the task label itself
        x = self.x[i]
        if self.aug is not None and self.aug[i] is not None:
            x = self.aug[i](x)
        return x, self.fmt.make(self.y[i], self.fmt.label, self.fmt.label_dtype)


@dataclass
class _ClassSource:
    buffer: MultisizeBuffer
    slot: int
    label: int          # the class id in the stream
    task: int
    key: int            # id of the buffer object (groups classes of one buffer)


# --------------------------------------------------------------------------------------------
# the storage policy
# --------------------------------------------------------------------------------------------


class CondensedBuffer(ExemplarsBuffer):
    """Replay memory made of prefixes of multisize buffers; see the module docstring.

    :param max_size: memory budget in ``unit`` (equal to ``ReplayPlugin(mem_size=...)``).
    :param buffers: a :class:`MultisizeBuffer` or path covering all classes; a sequence of them
        (one per experience, by ``experience.current_experience``); a mapping experience id →
        buffer; or a callable ``classes -> MultisizeBuffer``.
    :param unit: ``"items"`` (decoded images, Avalanche's unit), ``"images"`` (stored images)
        or ``"bytes"`` (stored bytes).
    :param normalize: give images as ``(x - mean) / std`` with the buffer's statistics instead of
        pixel space (use it when the stream's tensors are normalised).
    :param transform: optional Avalanche transform applied to each memory image (both the train
        and eval groups), e.g. the stream's tensor transform.
    :param label_map: buffer class id → stream class id, for streams that relabel classes.
    :param augment: items are augmented by their buffer's recipe on every access (default);
        ``False`` gives the stored images as they are.
    :param seed: seeds the item augmentation (numpy ``default_rng``; global state untouched).
    """

    def __init__(
        self,
        max_size: int,
        buffers: Any,
        *,
        unit: str = "items",
        normalize: bool = False,
        transform: Callable | None = None,
        label_map: Mapping[int, int] | None = None,
        augment: bool = True,
        seed: int = 0,
    ):
        if isinstance(max_size, bool) or not isinstance(max_size, (int, np.integer)) or max_size < 0:
            raise BudgetError(f"max_size={max_size!r}; expected a non-negative int (memory budget in {unit}).")
        if unit not in UNITS:
            raise ConfigError(f"unit={unit!r}; expected one of {', '.join(UNITS)}.")
        super().__init__(int(max_size))
        self.unit = unit
        self.normalize = bool(normalize)
        self.transform = transform
        self.label_map = {int(k): int(v) for k, v in (label_map or {}).items()}
        self.augment = bool(augment)
        self._rng = np.random.default_rng(int(seed))
        self._augs: dict[int, _ItemAugment] = {}      # id(buffer) -> its item augmentation
        self._source = buffers
        if isinstance(buffers, (MultisizeBuffer, str, Path)):
            self._single = _load(buffers, "buffers")
        else:
            self._single = None
            if not (callable(buffers) or isinstance(buffers, (Sequence, Mapping))):
                raise ConfigError(
                    f"buffers is a {type(buffers).__name__}; expected a MultisizeBuffer/path, a list of "
                    "them (one per experience), a dict experience -> buffer, or a callable classes -> buffer."
                )
        self._classes: dict[int, _ClassSource] = {}   # stream class id -> source, in order seen
        self._decoded: dict[int, torch.Tensor] = {}   # stream class id -> all items (decoded)
        self._format: _ItemFormat | None = None
        self.counts: dict[int, int] = {}               # stream class id -> stored images held
        self.history: list[dict] = []                  # one entry per (re)allocation

    # -- sources ----------------------------------------------------------------------------

    def _buffer_for(self, exp: Any, classes: Sequence[int]) -> MultisizeBuffer:
        if self._single is not None:
            return self._single
        src = self._source
        eid = int(getattr(exp, "current_experience", len(self.history)))
        if isinstance(src, Mapping):
            if eid not in src:
                raise ConfigError(
                    f"no buffer for experience {eid}; the buffers dict has experiences {sorted(src)}. "
                    "Give one buffer per experience (or one buffer covering all classes)."
                )
            return _load(src[eid], f"buffers[{eid}]")
        if isinstance(src, Sequence) and not isinstance(src, (str, bytes)):
            if eid >= len(src):
                raise ConfigError(
                    f"no buffer for experience {eid}; {len(src)} buffers were given. Give one buffer "
                    "per experience (or one buffer covering all classes)."
                )
            return _load(src[eid], f"buffers[{eid}]")
        return _load(src(list(classes)), "the buffer returned by the buffers callable")

    @staticmethod
    def _experience_classes(exp: Any) -> list[int]:
        classes = getattr(exp, "classes_in_this_experience", None)
        if classes is None:
            targets = getattr(exp.dataset, "targets", None)
            if targets is None:
                raise ConfigError(
                    "the experience has neither classes_in_this_experience nor dataset.targets; "
                    "expected an Avalanche classification experience."
                )
            classes = {int(t) for t in targets}
        return sorted(int(c) for c in classes)

    # -- ExemplarsBuffer interface -------------------------------------------------------------

    def post_adapt(self, agent_state: Any, exp: Any) -> None:
        """Add the classes of ``exp`` (prefixes of their buffer) and re-allocate the memory."""
        stream_classes = self._experience_classes(exp)
        inverse = {v: k for k, v in self.label_map.items()}
        buffer_classes = [inverse.get(c, c) for c in stream_classes]
        buf = self._buffer_for(exp, buffer_classes)
        slots = {lab: k for k, lab in enumerate(buffer_class_labels(buf))}
        missing = [c for c in buffer_classes if c not in slots]
        if missing:
            eid = getattr(exp, "current_experience", "?")
            raise ConfigError(
                f"experience {eid} has classes {missing} (buffer ids) but its buffer holds classes "
                f"{sorted(slots)}; give a buffer condensed on this experience's classes (or pass "
                "label_map if the stream relabels classes)."
            )
        fmt = _ItemFormat.probe(exp.dataset)
        shape = tuple(int(v) for v in buf.image_shape)
        if fmt.image_shape is not None and self.transform is None and tuple(fmt.image_shape) != shape:
            raise ConfigError(
                f"the stream's images have shape {fmt.image_shape} but the buffer's are {shape}; "
                "condense the same dataset/resolution or pass transform= to reshape memory images."
            )
        if self._format is None or len(exp.dataset) > 0:
            self._format = fmt
        task = int(getattr(exp, "task_label", 0) or 0)
        for bc, sc in zip(buffer_classes, stream_classes):
            self._classes[sc] = _ClassSource(buf, slots[bc], sc, task, id(buf))
            self._decoded.pop(sc, None)
        self._rebuild(reason=f"post_adapt experience {getattr(exp, 'current_experience', '?')}")

    def resize(self, strategy: Any, new_size: int) -> None:
        """Set a new budget (same unit as ``max_size``) and re-take prefixes; no re-condensation."""
        if isinstance(new_size, bool) or not isinstance(new_size, (int, np.integer)) or new_size < 0:
            raise BudgetError(f"new_size={new_size!r}; expected a non-negative int (memory budget in {self.unit}).")
        self.max_size = int(new_size)
        self._rebuild(reason="resize")

    # -- allocation and materialisation ---------------------------------------------------

    def cost_per_image(self) -> dict[int, int]:
        """Cost of one stored image of every seen class, in ``unit``."""
        return {
            c: unit_cost(self.unit, factor=int(s.buffer.factor),
                         bytes_per_image=_bytes_per_image(s.buffer) if self.unit == "bytes" else None)
            for c, s in self._classes.items()
        }

    def used(self) -> int:
        """Memory held now, in ``unit`` (always ``<= max_size``)."""
        return memory_used(self.counts, self.cost_per_image()) if self.counts else 0

    def _items_of(self, c: int, n: int | None = None) -> torch.Tensor:
        """Decoded items of class ``c`` (every rank; for a slimmable (SDC) buffer those of its
        first ``n`` ranks, which are not a cut of the full decode), pixel space or normalised."""
        s = self._classes[c]
        buf = s.buffer
        if buf.meta.is_sdc and n is not None:
            f2 = int(buf.factor) ** 2
            held_x = self._decoded.get(c)
            if held_x is None or len(held_x) != n * f2:
                self._decoded.pop(c, None)
                x = torch.from_numpy(_prefix(buf, s.slot, n).x)
                self._decoded[c] = self._normalized(x, buf)
            return self._decoded[c]
        if c not in self._decoded:  # all N ranks decoded once; prefixes are cuts of it (not SDC)
            x = torch.from_numpy(_prefix(buf, s.slot, buf.ipc).x)
            self._decoded[c] = self._normalized(x, buf)
        return self._decoded[c]

    def _normalized(self, x: torch.Tensor, buf: Any) -> torch.Tensor:
        if self.normalize:
            mean = torch.tensor(buf.meta.mean, dtype=x.dtype).view(1, -1, 1, 1)
            std = torch.tensor(buf.meta.std, dtype=x.dtype).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x

    def _rebuild(self, *, reason: str) -> None:
        order = sorted(self._classes)
        avail = {c: int(self._classes[c].buffer.ipc) for c in order}
        cost = self.cost_per_image()
        self.counts = allocate(avail, self.max_size, cost_per_image=cost) if order else {}
        xs, ys, ts, augs = [], [], [], []
        for c in order:
            n = self.counts[c]
            if n == 0:
                continue
            f2 = int(self._classes[c].buffer.factor) ** 2
            x = self._items_of(c, n)[: n * f2]
            xs.append(x)
            ys += [c] * len(x)
            ts += [self._classes[c].task] * len(x)
            augs += [self.item_augment(self._classes[c].buffer)] * len(x)
        fmt = self._format or _ItemFormat()
        if xs:
            x_all = torch.cat(xs)
        else:
            x_all = torch.zeros((0,))
        self.buffer = self._make_dataset(x_all, ys, ts, fmt, augs if self.augment else None)
        self.history.append({
            "reason": reason,
            "max_size": self.max_size,
            "unit": self.unit,
            "used": self.used(),
            "items": len(ys),
            "counts": dict(self.counts),
        })

    def item_augment(self, buf: MultisizeBuffer) -> _ItemAugment:
        """The per-item augmentation of ``buf``'s memory images: its recipe (flip policy from the
        data facts it records; :func:`edgecond.recipe.recipe_of`)."""
        key = id(buf)
        if key not in self._augs:
            from edgecond.recipe import recipe_of

            c = len(buf.meta.mean)
            self._augs[key] = _ItemAugment(
                recipe_of(buf, flips=_flips_of(buf)),
                np.asarray(buf.meta.mean, dtype=np.float32).reshape(1, c, 1, 1),
                np.asarray(buf.meta.std, dtype=np.float32).reshape(1, c, 1, 1),
                self.normalize, self._rng)
        return self._augs[key]

    def training_set(self) -> tuple[np.ndarray, np.ndarray, list]:
        """The held memory as the recipe trains on it: pixel-space images [M, C, H, W], target
        distributions [M, L] over stream class ids (soft labels where the buffer has them,
        one-hot otherwise) and the recipe of each buffer involved (for :class:`SoftLabelPlugin`)."""
        from edgecond.prefix import prefix_arrays

        xs, ts, recipes = [], [], []
        width = max([c for c in self._classes] + [0]) + 1
        for c in sorted(self._classes):
            n = self.counts.get(c, 0)
            if n == 0:
                continue
            s = self._classes[c]
            buf = s.buffer
            aug = self.item_augment(buf)
            # soft labels are over the model's outputs (spec §3): stream class ids
            p = prefix_arrays(buf, {int(buf.labels[s.slot]): n}, num_classes=max(width, max(buf.labels) + 1),
                              flips=aug.recipe.flips)
            xs.append(p.x)
            ts.append(p.targets if p.soft else np.eye(width, dtype=np.float32)[np.full(len(p), c)])
            recipes.append(aug.recipe)
        if not xs:
            return np.zeros((0,)), np.zeros((0, width), np.float32), []
        L = max(t.shape[1] for t in ts)
        ts = [np.pad(t, ((0, 0), (0, L - t.shape[1]))) for t in ts]
        return np.concatenate(xs).astype(np.float32), np.concatenate(ts), recipes

    def _make_dataset(self, x: torch.Tensor, ys: list[int], ts: list[int], fmt: _ItemFormat,
                      augs: list | None = None):
        items = _MemoryItems(x, ys, ts, fmt, augs)
        kwargs = {}
        if self.transform is not None:
            kwargs["transform"] = self.transform
        if fmt.fields == 2:
            groups = None
            if self.transform is not None:
                from avalanche.benchmarks.utils.transform_groups import TransformGroups

                groups = TransformGroups({"train": self.transform, "eval": self.transform})
            return ClassificationDataset(
                [items], data_attributes=[DataAttribute(list(ys), "targets")], transform_groups=groups
            )
        return _make_taskaware_classification_dataset(items, targets=list(ys), task_labels=list(ts), **kwargs)

    def summary(self) -> dict:
        """JSON-able state: budget, unit, use, stored images per class."""
        return {"max_size": self.max_size, "unit": self.unit, "used": self.used(),
                "items": len(self.buffer), "counts": {str(c): n for c, n in self.counts.items()}}


def _prefix(buf: MultisizeBuffer, slot: int, n: int):
    """The ``n``-rank prefix of one class slot (:func:`edgecond.prefix.prefix_arrays`, the
    reader every client shares)."""
    from edgecond.prefix import prefix_arrays

    return prefix_arrays(buf, {int(buf.labels[slot]): int(n)}, flips=_flips_of(buf))


def _flips_of(buf: MultisizeBuffer) -> bool:
    from edgecond.data import flips_of_buffer

    return flips_of_buffer(buf.meta)


# --------------------------------------------------------------------------------------------
# plugins
# --------------------------------------------------------------------------------------------


def _soft_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against target distributions."""
    return -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()


class SoftLabelPlugin(SupervisedPlugin):
    """Soft labels (and CutMix) of a :class:`CondensedBuffer` in the loss.

    Before every backward pass it draws one batch of the memory by the buffer's recipe
    (:func:`edgecond.recipe.recipe_batches`: augmentation, CutMix, soft labels as targets; the
    memory's own batch size is ``batch_size``, default the recipe's for the memory's size) and
    adds ``weight × soft-CE(model(x), targets)`` to ``strategy.loss``. Use it beside
    ``ReplayPlugin``/``GDumbStylePlugin``; it is a no-op while the memory is empty.
    """

    def __init__(self, storage_policy: "CondensedBuffer", *, weight: float = 1.0,
                 batch_size: int | None = None, seed: int = 0):
        super().__init__()
        if not isinstance(storage_policy, CondensedBuffer):
            raise ConfigError(f"storage_policy is a {type(storage_policy).__name__}; expected a CondensedBuffer.")
        if not weight >= 0:
            raise ConfigError(f"weight={weight!r}; expected a non-negative float.")
        self.storage_policy = storage_policy
        self.weight = float(weight)
        self.batch_size = batch_size
        self.rng = np.random.default_rng(int(seed))
        self._stream = None
        self._version = None

    def _next(self):
        from edgecond.recipe import recipe_batches

        policy = self.storage_policy
        version = len(policy.history)
        if self._stream is None or self._version != version:
            x, t, recipes = policy.training_set()
            if len(x) == 0:
                return None
            buf = next(iter(policy._classes.values())).buffer
            mean, std = (buf.meta.mean, buf.meta.std)
            # one recipe for the whole memory: the first buffer's (buffers of one stream share it)
            self._stream = recipe_batches(x, t, recipes[0], self.rng, mean=mean, std=std,
                                          batch_size=self.batch_size, steps=1 << 62)
            self._version = version
            self._normalized_inputs = policy.normalize
            self._mean = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
            self._std = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
        return next(self._stream)

    def before_backward(self, strategy: Any, **kwargs) -> None:
        if self.weight == 0:
            return
        batch = self._next()
        if batch is None:
            return
        xb, tb = batch  # normalised by the buffer's mean/std
        if not self._normalized_inputs:  # the stream's items are pixel space: match them
            xb = xb * self._std + self._mean
        device = getattr(strategy, "device", "cpu")
        out = strategy.model(torch.from_numpy(np.ascontiguousarray(xb)).to(device))
        t = torch.from_numpy(tb).to(device)
        if t.shape[1] < out.shape[1]:
            t = torch.nn.functional.pad(t, (0, out.shape[1] - t.shape[1]))
        strategy.loss = strategy.loss + self.weight * _soft_ce(out, t[:, : out.shape[1]])


class MemoryBudgetPlugin(SupervisedPlugin):
    """Applies a memory budget schedule to a storage policy, one budget per experience.

    Before the dataset adaptation of training experience ``t`` (before any plugin reads or fills
    the memory for that experience) it calls ``storage_policy.resize(strategy, schedule(t))``, so
    the memory never holds more than the budget in force. ``schedule`` is an int, a list (one
    budget per experience; the last one holds), an :mod:`edgecond.continual` schedule or an
    :mod:`edgecond.budget` trace. Works with any ``ExemplarsBuffer`` (Avalanche's own buffers
    can only shrink: what they dropped is gone; a :class:`CondensedBuffer` grows back).
    Other plugins sharing the policy (``ReplayPlugin``) get their ``mem_size`` updated too.
    """

    def __init__(self, storage_policy: ExemplarsBuffer, schedule: Any):
        super().__init__()
        if not isinstance(storage_policy, ExemplarsBuffer):
            raise ConfigError(
                f"storage_policy is a {type(storage_policy).__name__}; expected an Avalanche ExemplarsBuffer."
            )
        self.storage_policy = storage_policy
        self.schedule = make_schedule(schedule)
        self.applied: list[tuple[int, int]] = []  # (experience, budget)

    def before_train_dataset_adaptation(self, strategy: Any, **kwargs) -> None:
        t = int(strategy.clock.train_exp_counter)
        budget = self.schedule(t)
        if budget != self.storage_policy.max_size:
            self.storage_policy.resize(strategy, budget)
            self.storage_policy.max_size = budget
        for p in getattr(strategy, "plugins", []):
            if getattr(p, "storage_policy", None) is self.storage_policy and hasattr(p, "mem_size"):
                p.mem_size = budget
        self.applied.append((t, budget))


class GDumbStylePlugin(SupervisedPlugin):
    """GDumb's protocol with any storage policy: before each experience the memory takes in the
    new experience (``storage_policy.post_adapt``), the model is re-initialised to its initial
    weights and the strategy trains **only on the memory**.

    Avalanche's ``GDumbPlugin`` hard-codes a ``ClassBalancedBuffer``; this one takes e.g. a
    :class:`CondensedBuffer` or a ``ParametricBuffer``.
    """

    def __init__(self, storage_policy: ExemplarsBuffer):
        super().__init__()
        if not isinstance(storage_policy, ExemplarsBuffer):
            raise ConfigError(
                f"storage_policy is a {type(storage_policy).__name__}; expected an Avalanche ExemplarsBuffer."
            )
        self.storage_policy = storage_policy
        self.init_model = None

    def before_train_dataset_adaptation(self, strategy: Any, **kwargs) -> None:
        if self.init_model is None:
            self.init_model = copy.deepcopy(strategy.model)
        else:
            strategy.model = copy.deepcopy(self.init_model)
        strategy.model_adaptation(self.init_model)

    def before_eval_dataset_adaptation(self, strategy: Any, **kwargs) -> None:
        if self.init_model is not None:
            strategy.model_adaptation(self.init_model)

    def after_train_dataset_adaptation(self, strategy: Any, **kwargs) -> None:
        self.storage_policy.post_adapt(strategy, strategy.experience)
        strategy.adapted_dataset = self.storage_policy.buffer

    def before_training_exp(self, strategy: Any, **kwargs) -> None:
        # fresh weights deserve a fresh optimiser state (momentum of the old weights is stale)
        strategy.optimizer.state = defaultdict(dict)


class RecipePlugin(SupervisedPlugin):
    """Train every mini-batch by one training recipe (:class:`edgecond.recipe.Recipe`), whatever
    its items are: Avalanche's own exemplars, stream images or condensed memory items.

    Before each training forward pass the batch (``strategy.mbatch[0]``, *normalised* images —
    pass ``normalized=False`` with ``mean``/``std`` for pixel-space items) is augmented by
    :func:`edgecond.recipe.augment_batch` and, with the recipe's CutMix probability, CutMix-ed:
    the strategy's criterion then becomes ``lam · CE(y) + (1 - lam) · CE(y[perm])`` for that
    batch (CutMix's rule). With it, a random-exemplar arm and a condensed arm train under the
    *same* augmentation — the fair comparison of ``benchmarks/continual.py``. Give the
    condensed memory ``CondensedBuffer(augment=False)`` beside it, or items are augmented twice.
    """

    def __init__(self, recipe: Any, *, seed: int = 0, normalized: bool = True,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        from edgecond.recipe import Recipe

        if not isinstance(recipe, Recipe):
            raise ConfigError(f"recipe is a {type(recipe).__name__}; expected an edgecond.recipe.Recipe "
                              "(e.g. edgecond.recipe.recipe_of(buffer)).")
        if not normalized and (mean is None or std is None):
            raise ConfigError("normalized=False needs the mean and std the recipe's magnitudes assume; "
                              "pass mean=... and std=... (the buffer's meta.mean / meta.std).")
        self.recipe = recipe
        self.rng = np.random.default_rng(int(seed))
        self.normalized = bool(normalized)
        self._mean = None if mean is None else np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
        self._std = None if std is None else np.asarray(std, np.float32).reshape(1, -1, 1, 1)
        self._mix: tuple[torch.Tensor, float] | None = None  # (perm, lam) of the current batch
        self._base = None
        self.batches = 0  # augmented batches (for tests and logs)
        self.cutmixed = 0

    def before_training(self, strategy: Any, **kwargs) -> None:
        base = strategy._criterion
        if getattr(base, "_edgecond_recipe", None) is self:
            return
        plugin = self

        def criterion(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            if plugin._mix is None or not strategy.is_training:
                return base(out, y)
            perm, lam = plugin._mix
            return lam * base(out, y) + (1.0 - lam) * base(out, y[perm.to(y.device)])

        criterion._edgecond_recipe = self  # type: ignore[attr-defined]
        self._base = base
        strategy._criterion = criterion

    def after_training(self, strategy: Any, **kwargs) -> None:
        if self._base is not None:
            strategy._criterion = self._base
            self._base = None
        self._mix = None

    def before_forward(self, strategy: Any, **kwargs) -> None:
        from edgecond.recipe import augment_batch, cutmix_images

        self._mix = None
        if not strategy.is_training:
            return
        x = strategy.mbatch[0]
        a = x.detach().cpu().numpy().astype(np.float32)
        z = a if self.normalized else (a - self._mean) / self._std
        z = augment_batch(z, self.recipe, self.rng)
        if self.recipe.cutmix_prob > 0 and len(z) > 1 and self.rng.random() < self.recipe.cutmix_prob:
            z, perm, lam = cutmix_images(z, self.rng)
            self._mix = (torch.from_numpy(np.asarray(perm, dtype=np.int64)), lam)
            self.cutmixed += 1
        out = z if self.normalized else z * self._std + self._mean
        strategy.mbatch[0] = torch.from_numpy(np.ascontiguousarray(out)).to(x.device, x.dtype)
        self.batches += 1
