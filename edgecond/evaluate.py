"""The evaluation protocol: train a fresh model on a (synthetic or real) set, report test accuracy.

Protocol (IDC/DSA style): SGD lr 0.01, momentum 0.9, weight decay 5e-4; the learning rate is
multiplied by 0.1 at 2/3 and again at 5/6 of the epochs; every batch is augmented with
differentiable DSA operations (on normalised images) and, with probability ``cutmix_prob``,
CutMix. Inputs are pixel space [0, 1]; normalisation happens inside. The test split is used only
for the one number returned — nothing is ever selected on it (no early stopping, no best epoch).

Small sets are trained without a DataLoader: the whole set lives on the device and batches are
index tensors, augmented as one batch.

Presets: ``quick`` (300 epochs: digits-sized sets in CPU seconds to minutes) and ``paper``
(1000 epochs, the published setting). Override any field: ``eval_preset("quick", epochs=50)``.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .augment import DEFAULT_STRATEGY, DiffAugment, cutmix
from .data import ImageDataset
from .errors import ConfigError
from .facts import without_flip
from .models import build_model
from .progress import progress_bar
from .utils import make_generator, resolve_device

__all__ = [
    "EvalConfig",
    "EVAL_PRESETS",
    "eval_preset",
    "lr_for_epoch",
    "train_model",
    "test_accuracy",
    "train_and_test",
    "evaluate_seeds",
    "evaluate_buffer",
    "evaluate_random_real",
    "EvalResult",
    "SizeResult",
]


@dataclass
class EvalConfig:
    """Train-from-scratch settings. ``epochs`` has no default: pick a preset."""

    epochs: int
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64  # 64 (IDC's evaluation batch): 2+ steps per epoch from 100 images; 256 undertrains
    augment: str = DEFAULT_STRATEGY  # DiffAugment strategy; "none" disables
    single_op: bool = True  # one op of the strategy per batch (DSA's evaluation); False chains all ops
    cutmix_prob: float = 0.5  # probability that a batch is CutMix-ed (0 disables)
    cutmix_beta: float = 1.0
    model: str = "convnet"
    model_kwargs: dict = field(default_factory=dict)
    test_batch_size: int = 1024

    def validate(self) -> "EvalConfig":
        if int(self.epochs) < 1:
            raise ConfigError(f"epochs={self.epochs}; expected an integer >= 1.")
        if int(self.batch_size) < 1 or int(self.test_batch_size) < 1:
            raise ConfigError(f"batch_size={self.batch_size}, test_batch_size={self.test_batch_size}; expected >= 1.")
        if not 0.0 <= float(self.cutmix_prob) <= 1.0:
            raise ConfigError(f"cutmix_prob={self.cutmix_prob}; expected a probability in [0, 1].")
        if float(self.lr) <= 0:
            raise ConfigError(f"lr={self.lr}; expected a positive learning rate.")
        DiffAugment(self.augment)  # raises ConfigError on unknown ops
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


EVAL_PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"epochs": 300},
    "paper": {"epochs": 1000},
}


def eval_preset(name: str, facts: Any = None, **overrides: Any) -> EvalConfig:
    """``quick`` (300 epochs) or ``paper`` (1000 epochs), with any field overridden.

    ``facts`` (a :class:`~edgecond.facts.DataFacts` or an ImageDataset): ``quick`` then follows
    the data's geometry — a width-32 ConvNet on images larger than 16×16 (width 128 costs ~14×
    more per epoch there: CPU minutes become an hour), the default width 128 up to 16×16.
    ``paper`` is the published ConvNet-3 (width 128) whatever the data. Horizontal flips are
    dropped at training time for data whose labels they do not keep (:func:`train_model`)."""
    key = str(name).strip().lower()
    if key not in EVAL_PRESETS:
        raise ConfigError(f"unknown evaluation preset {name!r}; expected one of {', '.join(EVAL_PRESETS)}.")
    fields = {f.name for f in dataclasses.fields(EvalConfig)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ConfigError(f"unknown EvalConfig field(s) {bad}; expected some of {', '.join(sorted(fields))}.")
    values = dict(EVAL_PRESETS[key])
    if facts is not None:
        facts = getattr(facts, "facts", facts)
        if key == "quick" and facts.pixels > 16 * 16:
            values["model_kwargs"] = {"width": 32}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return EvalConfig(**values).validate()


def lr_for_epoch(epoch: int, epochs: int, lr: float) -> float:
    """Step decay: ``lr`` before epoch ``round(2/3 E)``, ×0.1 from there, ×0.01 from ``round(5/6 E)``."""
    m1, m2 = int(round(epochs * 2 / 3)), int(round(epochs * 5 / 6))
    return lr * (0.1 if epoch >= m1 else 1.0) * (0.1 if epoch >= m2 else 1.0)


def _check_inputs(x: torch.Tensor, y: torch.Tensor, dataset: ImageDataset, soft: torch.Tensor | None) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != dataset.image_shape:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ConfigError(
            f"x_train has shape {shape}; expected a float tensor [M, {', '.join(map(str, dataset.image_shape))}] "
            f"in pixel space for dataset {dataset.name!r}."
        )
    if len(x) == 0:
        raise ConfigError("x_train is empty; expected at least one training image.")
    if y.dim() != 1 or len(y) != len(x):
        raise ConfigError(f"y_train has shape {tuple(y.shape)}; expected [{len(x)}] class ids.")
    if int(y.min()) < 0 or int(y.max()) >= dataset.num_classes:
        raise ConfigError(
            f"y_train holds labels in [{int(y.min())}, {int(y.max())}]; expected 0..{dataset.num_classes - 1} "
            f"for dataset {dataset.name!r}."
        )
    if soft is not None and (soft.dim() != 2 or tuple(soft.shape) != (len(x), dataset.num_classes)):
        raise ConfigError(
            f"soft_targets has shape {tuple(soft.shape)}; expected [{len(x)}, {dataset.num_classes}] (probabilities)."
        )


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Shuffled index batches of near-equal size: ``ceil(n / batch_size)`` batches, none larger
    than ``batch_size`` (70 images at 64 → 35 + 35, not 64 + 6).

    A small trailing batch, stepped at the full learning rate every epoch, costs accuracy: on a
    digits validation split an IDC buffer's 70-image prefix scored 91.8 ± 2.0 % with 64 + 6 and
    96.7 ± 0.1 % with 35 + 35 (docs/evaluation.md)."""
    perm = torch.randperm(n, generator=gen)
    return list(perm.tensor_split(max(1, -(-n // batch_size))))


def _soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def train_model(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    dataset: ImageDataset,
    config: EvalConfig,
    *,
    seed: int,
    device: str | torch.device = "cpu",
    progress: bool = False,
    soft_targets: torch.Tensor | None = None,
) -> nn.Module:
    """Train a fresh ``config.model`` on ``(x_train, y_train)`` (pixel space) and return it
    (in eval mode). Deterministic for a given seed on a given device."""
    config.validate()
    dev = resolve_device(device)
    x_train = torch.as_tensor(x_train)
    y_train = torch.as_tensor(y_train).long()
    _check_inputs(x_train, y_train, dataset, soft_targets)
    model = build_model(config.model, dataset.image_shape, dataset.num_classes, seed=seed,
                        **config.model_kwargs).to(dev)
    x = dataset.normalize(x_train.detach().to(dev, torch.float32))
    y = y_train.to(dev)
    targets = soft_targets.detach().to(dev, torch.float32) if soft_targets is not None else None
    gen = make_generator(seed)
    # the one flip policy: flips only where the data says they keep labels (edgecond.facts)
    aug = DiffAugment(without_flip(config.augment, bool(getattr(dataset, "flips", False))),
                      single_op=config.single_op)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    bar = progress_bar(range(config.epochs), desc=f"train seed {seed}", disable=not progress, leave=False,
                       unit="ep")
    model.train()
    for epoch in bar:
        lr = lr_for_epoch(epoch, config.epochs, config.lr)
        for group in opt.param_groups:
            group["lr"] = lr
        total = 0.0
        for idx in _batches(len(x), config.batch_size, gen):
            idx = idx.to(dev)
            xb = x[idx]
            tb = targets[idx] if targets is not None else y[idx]
            if aug.enabled:
                xb = aug(xb, draw=aug.sample_draw(len(xb), generator=gen, device=dev))
            loss_fn = _soft_ce if targets is not None else F.cross_entropy
            if config.cutmix_prob > 0 and float(torch.rand(1, generator=gen)) < config.cutmix_prob:
                xb, ta, tb2, lam = cutmix(xb, tb, beta=config.cutmix_beta, generator=gen)
                out = model(xb)
                loss = lam * loss_fn(out, ta) + (1.0 - lam) * loss_fn(out, tb2)
            else:
                loss = loss_fn(model(xb), tb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        if progress:
            bar.set_postfix(loss=f"{total:.3f}", lr=f"{lr:g}")
    model.eval()
    return model


@torch.no_grad()
def test_accuracy(model: nn.Module, dataset: ImageDataset, *, device: str | torch.device = "cpu",
                  batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``model`` on the dataset's test split (normalised inside)."""
    dev = resolve_device(device)
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(dataset.y_test), batch_size):
        xb = dataset.normalize(dataset.x_test[start:start + batch_size].to(dev))
        yb = dataset.y_test[start:start + batch_size].to(dev)
        correct += int((model(xb).argmax(1) == yb).sum())
    model.train(was_training)
    return correct / max(len(dataset.y_test), 1)


def train_and_test(x_train: torch.Tensor, y_train: torch.Tensor, dataset: ImageDataset, config: EvalConfig, *,
                   seed: int, device: str | torch.device = "cpu", progress: bool = False,
                   soft_targets: torch.Tensor | None = None) -> float:
    """Train from scratch on ``(x_train, y_train)`` and return test accuracy in [0, 1].

    ``soft_targets`` (optional ``[M, num_classes]`` probabilities) switches to soft cross-entropy.
    """
    model = train_model(x_train, y_train, dataset, config, seed=seed, device=device, progress=progress,
                        soft_targets=soft_targets)
    return test_accuracy(model, dataset, device=device, batch_size=config.test_batch_size)


@dataclass
class EvalResult:
    """Accuracy over seeds. ``std`` is the population std (numpy's default, as papers report)."""

    mean: float
    std: float
    accuracies: list[float]
    seeds: list[int]
    config: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return f"{100 * self.mean:.2f} ± {100 * self.std:.2f} % (n={len(self.seeds)})"


@dataclass
class SizeResult:
    """Accuracy of one buffer prefix (``size`` images per class, ``bytes`` on the wire)."""

    size: int
    bytes: int
    mean: float
    std: float
    accuracies: list[float]
    seeds: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def evaluate_seeds(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    dataset: ImageDataset,
    config: EvalConfig,
    *,
    seeds: Sequence[int],
    device: str | torch.device = "cpu",
    progress: bool = True,
    soft_targets: torch.Tensor | None = None,
    bar: Any = None,
    label: str = "",
) -> EvalResult:
    """:func:`train_and_test` once per seed; mean ± std of the test accuracies.

    ``bar``: an outer progress bar (:func:`edgecond.progress.progress_bar`) advanced once per seed
    instead of a bar of its own; ``label`` names the set in its postfix (e.g. ``"size 3/10"``).
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("seeds is empty; expected at least one seed (e.g. [0, 1, 2]).")
    t0 = time.perf_counter()
    accs: list[float] = []
    own = bar is None
    if own:
        bar = progress_bar(total=len(seeds), desc=f"evaluate {dataset.name}", disable=not progress, unit="seed")
    for i, s in enumerate(seeds):
        accs.append(train_and_test(x_train, y_train, dataset, config, seed=s, device=device, progress=progress,
                                   soft_targets=soft_targets))
        head = f"{label} " if label else ""
        bar.set_postfix_str(f"{head}seed {i + 1}/{len(seeds)}, acc {100 * np.mean(accs):.2f}%")
        bar.update(1)
    if own:
        bar.close()
    return EvalResult(mean=float(np.mean(accs)), std=float(np.std(accs)), accuracies=accs, seeds=seeds,
                      config=config.to_dict(), seconds=time.perf_counter() - t0)


def evaluate_buffer(
    buffer: Any,
    dataset: ImageDataset,
    config: EvalConfig,
    *,
    sizes: Sequence[int],
    seeds: Sequence[int],
    device: str | torch.device = "cpu",
    progress: bool = True,
    use_soft_labels: bool = True,
) -> list[SizeResult]:
    """Accuracy of every requested prefix size of a :class:`~edgecond.buffer.MultisizeBuffer`.

    Uses ``buffer.training_arrays(n)`` (decoded, pixel space) and ``buffer.bytes_for(n)``. When
    the buffer stores soft labels (``buffer.has_soft_labels``) and ``use_soft_labels`` is true,
    trains on ``buffer.soft_targets(n)`` (logits are turned into probabilities with a softmax,
    at ``meta.soft["temperature"]`` when given).
    """
    if int(buffer.num_classes) != dataset.num_classes:
        raise ConfigError(
            f"buffer has {buffer.num_classes} classes but dataset {dataset.name!r} has {dataset.num_classes}; "
            "evaluate a buffer against the dataset it was condensed from."
        )
    sizes = [int(n) for n in sizes]
    seeds = [int(s) for s in seeds]
    for n in sizes:
        if not 1 <= n <= int(buffer.ipc):
            raise ConfigError(f"size {n} is outside the buffer's 1..{buffer.ipc} images per class.")
    out: list[SizeResult] = []
    bar = progress_bar(total=len(sizes) * len(seeds), desc=f"evaluate {dataset.name} (sizes x seeds)",
                       disable=not progress, unit="run")
    try:
        for k, n in enumerate(sizes):
            x, y = buffer.training_arrays(n)
            xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
            soft = _buffer_soft_targets(buffer, n) if use_soft_labels else None
            res = evaluate_seeds(xt, yt, dataset, config, seeds=seeds, device=device, progress=progress,
                                 soft_targets=soft, bar=bar, label=f"size {n} ({k + 1}/{len(sizes)})")
            out.append(SizeResult(size=n, bytes=int(buffer.bytes_for(n)), mean=res.mean, std=res.std,
                                  accuracies=res.accuracies, seeds=res.seeds, seconds=res.seconds))
    finally:
        bar.close()
    return out


def evaluate_random_real(dataset: ImageDataset, config: EvalConfig, *, sizes: Sequence[int], seeds: Sequence[int],
                         device: str | torch.device = "cpu", progress: bool = True) -> list[SizeResult]:
    """The random-real baseline beside a buffer: for every size ``n`` and seed ``s``, ``n`` random
    real training images per class (drawn with seed ``s``: :meth:`ImageDataset.subset_per_class`),
    trained from scratch with seed ``s``. ``bytes`` is their raw uint8 pixel size."""
    sizes = [int(n) for n in sizes]
    seeds = [int(s) for s in seeds]
    if not sizes or not seeds:
        raise ConfigError(f"sizes={sizes}, seeds={seeds}; expected at least one of each.")
    pixels = int(np.prod(dataset.image_shape)) * dataset.num_classes
    out: list[SizeResult] = []
    bar = progress_bar(total=len(sizes) * len(seeds), desc=f"random real {dataset.name} (sizes x seeds)",
                       disable=not progress, unit="run")
    try:
        for k, n in enumerate(sizes):
            t0 = time.perf_counter()
            accs = []
            for i, s in enumerate(seeds):
                x, y = dataset.subset_per_class(n, seed=s)
                accs.append(train_and_test(x, y, dataset, config, seed=s, device=device, progress=progress))
                bar.set_postfix_str(f"size {n} ({k + 1}/{len(sizes)}) seed {i + 1}/{len(seeds)}, "
                                    f"acc {100 * np.mean(accs):.2f}%")
                bar.update(1)
            out.append(SizeResult(size=n, bytes=n * pixels, mean=float(np.mean(accs)), std=float(np.std(accs)),
                                  accuracies=accs, seeds=seeds, seconds=time.perf_counter() - t0))
    finally:
        bar.close()
    return out


def _buffer_soft_targets(buffer: Any, n: int) -> torch.Tensor | None:
    if not getattr(buffer, "has_soft_labels", False):
        return None
    arr = buffer.soft_targets(n)
    if arr is None:
        return None
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    soft_meta = getattr(getattr(buffer, "meta", None), "soft", None) or {}
    if soft_meta.get("kind", "logits") == "logits":
        t = torch.softmax(t / float(soft_meta.get("temperature", 1.0)), dim=1)
    return t
