"""Continual learning with multisize buffers: allocation, budget schedules, per-experience condensation.

This is the torch-side core behind the Avalanche storage policy
(:class:`clients.avalanche_replay.CondensedBuffer`); it imports no Avalanche.

Three pieces:

* :func:`allocate` — a pure function: given how many stored images every seen class has
  available (the IPC of the multisize buffer it comes from) and a memory budget, how many
  images (a *prefix*) of every class to hold. Class-balanced water filling: every class gets
  the same number of stored images ``L`` (or all it has, if fewer); what is left after the
  common level goes one image at a time to the classes in the mapping's order. Never exceeds
  the budget. Shrinking or growing the budget only moves prefix lengths: nothing is
  re-condensed.
* budget schedules over experiences — :class:`ConstantSchedule`, :class:`ListSchedule`
  (shrinking/growing lists), :class:`TraceSchedule` (an :mod:`edgecond.budget` trace read as
  one round per experience); :func:`make_schedule` turns an int, a list or a trace into one.
* :func:`condense_classes` / :class:`ExperienceCondenser` — condense the classes of one
  experience into a multisize buffer with :mod:`edgecond.condense` (MDC by default) *before*
  the stream is replayed, cached on disk as a ``.safetensors`` file named by a content key of
  (dataset content, classes, method, hooks, ipc, factor, seed, resolved config).

Units. A memory budget is counted in one of three units (:data:`UNITS`):

``items``  training items = decoded images. This is what Avalanche's ``mem_size`` counts (the
           length of the memory dataset). A stored image with formation factor ``f`` yields
           ``f**2`` items, so it costs ``f**2``.
``images`` stored images (each costs 1 whatever its factor).
``bytes``  stored payload bytes (``C*H*W*itemsize`` of the buffer's dtype per stored image),
           the unit of :mod:`edgecond.budget` traces.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from .errors import BudgetError, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .buffer import MultisizeBuffer
    from .data import ImageDataset

__all__ = [
    "UNITS",
    "allocate",
    "memory_used",
    "unit_cost",
    "BudgetSchedule",
    "ConstantSchedule",
    "ListSchedule",
    "TraceSchedule",
    "make_schedule",
    "ExperienceCondenseConfig",
    "class_subset",
    "cache_key",
    "condense_classes",
    "ExperienceCondenser",
    "default_cache_dir",
]

log = logging.getLogger(__name__)

#: Units a memory budget can be counted in (see the module docstring).
UNITS = ("items", "images", "bytes")


# --------------------------------------------------------------------------------------------
# Allocation (pure)
# --------------------------------------------------------------------------------------------


def _check_count(value: Any, what: str, *, error=BudgetError) -> int:
    if isinstance(value, bool) or not isinstance(value, int) and not hasattr(value, "__index__"):
        raise error(f"{what} must be a non-negative integer, got {value!r}; pass an int >= 0.")
    value = int(value)
    if value < 0:
        raise error(f"{what} must be a non-negative integer, got {value}; pass an int >= 0.")
    return value


def allocate(
    ipc_available: Mapping[Any, int],
    budget_items: int,
    *,
    cost_per_image: Mapping[Any, int] | int = 1,
) -> dict[Any, int]:
    """How many stored images (a prefix) of every class fit a memory budget.

    ``ipc_available[c]`` is the number of stored images class ``c`` has (its buffer's IPC);
    ``budget_items`` the total budget, counted in the unit of ``cost_per_image`` (the cost of
    one stored image of class ``c``: 1 for items of factor-1 buffers or for stored images,
    ``f**2`` for items of factor-``f`` buffers, bytes per image for byte budgets).

    Class-balanced water filling: the largest common level ``L`` such that every class holding
    ``min(L, available)`` images fits; then one more image for the classes that still have one,
    in the mapping's order, while it fits. So the number of images of two classes differs by at
    most one unless one of them is exhausted, the result never exceeds the budget, and it is
    monotone in the budget (a bigger budget never gives a class fewer images) when costs are
    equal. A budget smaller than one image per class gives the classes earliest in the mapping
    one image each.

    Returns ``{class: n}`` with the keys of ``ipc_available`` in the same order.

    >>> allocate({0: 50, 1: 50, 2: 3}, 20)
    {0: 9, 1: 8, 2: 3}
    """
    budget = _check_count(budget_items, "budget_items")
    avail: dict[Any, int] = {}
    for c, n in ipc_available.items():
        avail[c] = _check_count(n, f"ipc_available[{c!r}]", error=ConfigError)
    if isinstance(cost_per_image, Mapping):
        missing = [c for c in avail if c not in cost_per_image]
        if missing:
            raise ConfigError(
                f"cost_per_image has no entry for classes {missing}; expected a cost for every class "
                "of ipc_available (or one int for all)."
            )
        cost = {c: _check_count(cost_per_image[c], f"cost_per_image[{c!r}]", error=ConfigError) for c in avail}
    else:
        one = _check_count(cost_per_image, "cost_per_image", error=ConfigError)
        cost = {c: one for c in avail}
    if any(v == 0 for c, v in cost.items() if avail[c] > 0):
        raise ConfigError(f"cost_per_image must be >= 1 for every class with images, got {cost}.")
    if not avail:
        return {}

    def used(level: int) -> int:
        return sum(min(level, avail[c]) * cost[c] for c in avail)

    lo, hi = 0, max(avail.values())
    while lo < hi:  # largest level that fits
        mid = (lo + hi + 1) // 2
        if used(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    out = {c: min(lo, avail[c]) for c in avail}
    left = budget - used(lo)
    for c in avail:  # partial next level, in the caller's order
        if out[c] < avail[c] and cost[c] <= left:
            out[c] += 1
            left -= cost[c]
    return out


def unit_cost(unit: str, *, factor: int = 1, bytes_per_image: int | None = None) -> int:
    """The cost of one stored image in ``unit`` (``items``: ``factor**2``; ``images``: 1;
    ``bytes``: ``bytes_per_image``)."""
    if unit == "items":
        return int(factor) ** 2
    if unit == "images":
        return 1
    if unit == "bytes":
        if bytes_per_image is None:
            raise ConfigError("unit 'bytes' needs bytes_per_image (C*H*W*itemsize of the buffer dtype).")
        return int(bytes_per_image)
    raise ConfigError(f"unknown memory unit {unit!r}; expected one of {', '.join(UNITS)}.")


def memory_used(counts: Mapping[Any, int], cost_per_image: Mapping[Any, int] | int = 1) -> int:
    """Total cost of holding ``counts[c]`` stored images of every class."""
    if isinstance(cost_per_image, Mapping):
        return sum(int(n) * int(cost_per_image[c]) for c, n in counts.items())
    return sum(int(n) for n in counts.values()) * int(cost_per_image)


# --------------------------------------------------------------------------------------------
# Budget schedules over experiences
# --------------------------------------------------------------------------------------------


class BudgetSchedule:
    """The memory budget in force while experience ``t`` (0-based) is trained: ``schedule(t)``."""

    def budget(self, experience: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, experience: int) -> int:
        experience = _check_count(experience, "experience", error=ConfigError)
        return _check_count(self.budget(experience), f"budget of experience {experience}")

    def values(self, num_experiences: int) -> list[int]:
        """The budgets of experiences ``0..num_experiences-1`` (for logs and plots)."""
        return [self(t) for t in range(int(num_experiences))]


@dataclass
class ConstantSchedule(BudgetSchedule):
    """The same budget for every experience."""

    size: int

    def __post_init__(self) -> None:
        self.size = _check_count(self.size, "ConstantSchedule.size")

    def budget(self, experience: int) -> int:
        return self.size


@dataclass
class ListSchedule(BudgetSchedule):
    """One budget per experience, e.g. ``[200, 120, 200]`` (shrinks then grows).

    Experiences past the end of the list keep the last value (``after="hold"``), cycle through
    the list (``"cycle"``) or raise :class:`BudgetError` (``"error"``).
    """

    sizes: Sequence[int]
    after: str = "hold"

    def __post_init__(self) -> None:
        if isinstance(self.sizes, (str, bytes)) or not isinstance(self.sizes, Sequence) or not self.sizes:
            raise BudgetError(
                f"ListSchedule needs a non-empty list of budgets, got {self.sizes!r}; e.g. [200, 120, 200]."
            )
        self.sizes = [_check_count(s, f"ListSchedule.sizes[{i}]") for i, s in enumerate(self.sizes)]
        if self.after not in ("hold", "cycle", "error"):
            raise ConfigError(f"ListSchedule.after={self.after!r}; expected 'hold', 'cycle' or 'error'.")

    def budget(self, experience: int) -> int:
        if experience < len(self.sizes):
            return self.sizes[experience]
        if self.after == "hold":
            return self.sizes[-1]
        if self.after == "cycle":
            return self.sizes[experience % len(self.sizes)]
        raise BudgetError(
            f"experience {experience} is past the end of the budget list (length {len(self.sizes)}); "
            "give one budget per experience or use after='hold'."
        )


@dataclass
class TraceSchedule(BudgetSchedule):
    """An :mod:`edgecond.budget` trace (``trace.budget(client, round) -> bytes``) read with one
    round per experience: experience ``t`` gets ``trace.budget(client, t + round_offset)``.

    Traces give **bytes**: use it with ``unit="bytes"`` (or pass ``scale`` to convert, e.g.
    ``1 / bytes_per_item`` to count items).
    """

    trace: Any
    client: int = 0
    round_offset: int = 0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not callable(getattr(self.trace, "budget", None)):
            raise ConfigError(
                f"TraceSchedule needs an edgecond.budget trace with .budget(client, round), got "
                f"{type(self.trace).__name__}; e.g. edgecond.budget.ConstantTrace(...)."
            )

    def budget(self, experience: int) -> int:
        return int(self.trace.budget(self.client, experience + self.round_offset) * self.scale)


def make_schedule(spec: "BudgetSchedule | int | Sequence[int] | Any") -> BudgetSchedule:
    """An int → :class:`ConstantSchedule`; a list → :class:`ListSchedule`; an object with
    ``.budget(client, round)`` → :class:`TraceSchedule`; a schedule is returned as is."""
    if isinstance(spec, BudgetSchedule):
        return spec
    if isinstance(spec, bool):
        raise BudgetError(f"budget schedule {spec!r} is not valid; expected an int, a list of ints or a trace.")
    if isinstance(spec, int):
        return ConstantSchedule(spec)
    if isinstance(spec, Sequence) and not isinstance(spec, (str, bytes)):
        return ListSchedule(list(spec))
    if callable(getattr(spec, "budget", None)):
        return TraceSchedule(spec)
    raise BudgetError(
        f"budget schedule {spec!r} is not valid; expected an int (constant), a list of ints (one per "
        "experience) or an edgecond.budget trace."
    )


# --------------------------------------------------------------------------------------------
# Per-experience condensation, cached by content key
# --------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$EDGECOND_CACHE/continual`` or ``~/.cache/edgecond/continual``."""
    root = os.environ.get("EDGECOND_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "edgecond"
    return base / "continual"


@dataclass
class ExperienceCondenseConfig:
    """How each experience's classes are condensed.

    ``method`` is any name of ``edgecond.condense.METHODS`` (matchers ``idm``/``idc``/``dm`` or
    selectors ``random``/``herding``); ``hooks="mdc"`` wraps a matcher in the multisize (MDC)
    hooks, ``"none"`` is the plain condensation (MDC's Baseline C). ``preset`` and ``overrides``
    go to ``edgecond.condense.condense_preset``.
    """

    method: str = "idm"
    hooks: str = "mdc"
    ipc: int = 20
    factor: int = 1
    seed: int = 0
    preset: str = "quick"
    overrides: dict = field(default_factory=dict)


def class_subset(dataset: "ImageDataset", classes: Sequence[int]) -> "ImageDataset":
    """The dataset restricted to ``classes``, relabelled ``0..len(classes)-1`` in the given order.

    Mean and std stay those of the full dataset, so every experience's buffer lives in the same
    normalisation as the stream.
    """
    import torch

    from .data import ImageDataset

    classes = [int(c) for c in classes]
    if not classes or len(set(classes)) != len(classes):
        raise ConfigError(f"classes={classes}; expected a non-empty list of distinct class ids.")
    bad = [c for c in classes if not 0 <= c < dataset.num_classes]
    if bad:
        raise ConfigError(
            f"classes {bad} are not classes of dataset {dataset.name!r} (0..{dataset.num_classes - 1})."
        )
    remap = torch.full((dataset.num_classes,), -1, dtype=torch.int64)
    remap[torch.tensor(classes)] = torch.arange(len(classes))

    def pick(x, y):
        keep = remap[y] >= 0
        return x[keep], remap[y[keep]]

    xtr, ytr = pick(dataset.x_train, dataset.y_train)
    xte, yte = pick(dataset.x_test, dataset.y_test)
    return ImageDataset(
        name=dataset.name,
        x_train=xtr,
        y_train=ytr,
        x_test=xte,
        y_test=yte,
        class_names=[dataset.class_names[c] for c in classes],
        mean=tuple(dataset.mean),
        std=tuple(dataset.std),
        source=f"{dataset.source} classes={classes}",
        flips=bool(getattr(dataset, "flips", False)),
    )


def _digest_tensor(h: "hashlib._Hash", t: Any) -> None:
    arr = t.detach().cpu().contiguous().numpy()
    h.update(str(arr.dtype).encode())
    h.update(str(arr.shape).encode())
    h.update(arr.tobytes())


def _resolve_condense_config(dataset: Any, config: ExperienceCondenseConfig):
    """The one resolver (``edgecond.condense.condense_preset``) for one experience's data: its
    facts (shape, classes, images per class) choose the quick settings, and ``hooks="mdc"`` gets
    MDC's Δt from the resolved iteration count."""
    from .condense import condense_preset

    overrides = dict(config.overrides)
    overrides.update(ipc=int(config.ipc), factor=int(config.factor), seed=int(config.seed))
    hooks = str(config.hooks).lower()
    if hooks not in ("mdc", "none"):
        raise ConfigError(f"hooks={config.hooks!r}; expected 'mdc' (multisize) or 'none' (plain condensation).")
    overrides["hooks"] = hooks
    return condense_preset(config.method, config.preset, dataset, **overrides)


def cache_key(dataset: "ImageDataset", classes: Sequence[int], config: ExperienceCondenseConfig,
              resolved: Any | None = None) -> str:
    """Hex sha256 of what determines a condensed buffer: the training data of ``classes``
    (content, not the name alone), the class ids, and the (resolved) condensation config."""
    import torch

    h = hashlib.sha256()
    sub = torch.isin(dataset.y_train, torch.tensor([int(c) for c in classes]))
    _digest_tensor(h, dataset.x_train[sub])
    _digest_tensor(h, dataset.y_train[sub])
    spec = {
        "dataset": dataset.name,
        "classes": [int(c) for c in classes],
        "mean": list(dataset.mean),
        "std": list(dataset.std),
        "config": asdict(config),
        "resolved": asdict(resolved) if resolved is not None else None,
    }
    h.update(json.dumps(spec, sort_keys=True, default=str).encode())
    return h.hexdigest()


def condense_classes(
    dataset: "ImageDataset",
    classes: Sequence[int],
    config: ExperienceCondenseConfig | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    device: Any = "cpu",
    progress: bool = True,
) -> "MultisizeBuffer":
    """Condense ``classes`` of ``dataset`` into a multisize buffer whose slot labels are the
    original class ids; reuse ``cache_dir/<dataset>-<method>-<hooks>-<key16>.safetensors`` when
    the same content key was condensed before (``cache_dir=None``: :func:`default_cache_dir`)."""
    from .buffer import MultisizeBuffer
    from .condense import condense

    config = config or ExperienceCondenseConfig()
    classes = [int(c) for c in classes]
    sub = class_subset(dataset, classes)
    resolved = _resolve_condense_config(sub, config)
    key = cache_key(dataset, classes, config, resolved)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    safe_name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in dataset.name)[-48:].lstrip("_")
    path = folder / f"{safe_name}-{config.method}-{config.hooks}-{key[:16]}.safetensors"
    if path.exists():
        log.info("continual: cache hit %s (classes %s)", path, classes)
        return MultisizeBuffer.load(path, mmap=False)
    log.info("continual: condensing classes %s with %s/%s ipc=%d -> %s", classes, config.method,
             config.hooks, config.ipc, path)
    from .progress import progress_label

    with progress_label(f"classes {classes}"):
        result = condense(sub, resolved, device=device, progress=progress)
    buf = result.buffer
    meta = buf.meta
    extra = dict(getattr(meta, "extra", {}) or {})
    extra.update({"continual_classes": classes, "continual_key": key})
    sdc = bool(getattr(meta, "is_sdc", False))  # slimmable: keep the components, not their decode
    sdc_kw = ({"coefficients": buf.coefficients_class_major(),
               "coefficient_dtype": str(buf.coefficients_class_major(1).dtype)} if sdc else {})
    relabelled = MultisizeBuffer.from_class_major(
        buf.stored_images().transpose(1, 0, 2, 3, 4) if sdc else buf.images_class_major(),
        **sdc_kw,
        labels=classes,
        class_names=[dataset.class_names[c] for c in classes],
        dataset=dataset.name,
        mean=tuple(dataset.mean),
        std=tuple(dataset.std),
        factor=buf.factor,
        method=getattr(meta, "method", config.method),
        config=getattr(meta, "config", None) or asdict(resolved),
        dtype=getattr(meta, "dtype", "float16"),
        extra=extra,
        recipe=getattr(meta, "recipe", None),  # the training recipe travels with the images
    )
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.safetensors.tmp")  # atomic; concurrent runs safe
    try:
        relabelled.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return MultisizeBuffer.load(path, mmap=False)


class ExperienceCondenser:
    """A callable ``(classes) -> MultisizeBuffer`` that condenses on first use and caches.

    Pass it (or the list it produces for a stream) as the source of
    :class:`clients.avalanche_replay.CondensedBuffer`. ``prepare(class_lists)`` condenses every
    experience up front ("before the stream is replayed") and returns the buffers in order.
    """

    def __init__(self, dataset: "ImageDataset", config: ExperienceCondenseConfig | None = None, *,
                 cache_dir: str | os.PathLike | None = None, device: Any = "cpu", progress: bool = True):
        self.dataset = dataset
        self.config = config or ExperienceCondenseConfig()
        self.cache_dir = cache_dir
        self.device = device
        self.progress = progress
        self._memo: dict[tuple[int, ...], "MultisizeBuffer"] = {}

    def __call__(self, classes: Sequence[int]) -> "MultisizeBuffer":
        key = tuple(int(c) for c in classes)
        if key not in self._memo:
            self._memo[key] = condense_classes(
                self.dataset, key, self.config, cache_dir=self.cache_dir, device=self.device,
                progress=self.progress,
            )
        return self._memo[key]

    def prepare(self, class_lists: Sequence[Sequence[int]]) -> list["MultisizeBuffer"]:
        """Condense (or load from the cache) one buffer per experience, in stream order."""
        return [self(classes) for classes in class_lists]


BufferSource = Callable[[Sequence[int]], "MultisizeBuffer"]
