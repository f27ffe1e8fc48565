"""Avalanche: a condensed replay memory that follows a memory budget. Needs ``edgecond[avalanche]``.

Re-exports :mod:`clients.avalanche_replay` (``CondensedBuffer``, ``MemoryBudgetPlugin``,
``GDumbStylePlugin``) and adds :func:`condensed_replay`, which takes an Avalanche benchmark (built
with ``nc_benchmark``, ``SplitMNIST`` and friends) and a model and returns a ready strategy::

    from avalanche.benchmarks import nc_benchmark
    from edgecond.apps.avalanche import condensed_replay

    bm = nc_benchmark(train_set, test_set, n_experiences=5, task_labels=False)
    run = condensed_replay(bm, model, mem_size=200, budgets=[200, 120, 80, 120, 200])
    for exp in bm.train_stream:
        run.strategy.train(exp)
        print(run.strategy.eval(bm.test_stream))

The benchmark's images must be pixel space in [0, 1] (``ToTensor()`` without ``Normalize``):
each experience's classes are condensed once from them (IDM + MDC by default, cached on disk).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from clients.avalanche_replay import (  # noqa: F401
    CondensedBuffer,
    GDumbStylePlugin,
    MemoryBudgetPlugin,
    buffer_class_labels,
)

from ..continual import ExperienceCondenseConfig, ExperienceCondenser
from ..errors import ConfigError

__all__ = ["CondensedBuffer", "MemoryBudgetPlugin", "GDumbStylePlugin", "buffer_class_labels",
           "CondensedReplay", "condensed_replay", "dataset_from_benchmark"]


def _arrays(stream: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    import torch
    from torch.utils.data import DataLoader

    xs, ys = [], []
    for exp in stream:
        data = exp.dataset.eval() if hasattr(exp.dataset, "eval") else exp.dataset  # no train augmentation
        for batch in DataLoader(data, batch_size=512, shuffle=False):
            xs.append(torch.as_tensor(batch[0]).float())
            ys.append(torch.as_tensor(batch[1]).long())
    if not xs:
        raise ConfigError(f"the benchmark's {what} is empty; expected experiences with images.")
    return torch.cat(xs).numpy(), torch.cat(ys).numpy()


def dataset_from_benchmark(benchmark: Any, name: str = "avalanche") -> Any:
    """The benchmark's train and test streams as one :class:`~edgecond.data.ImageDataset` (stream
    labels as class ids). Images must be pixel space in [0, 1]."""
    from ..data import from_arrays

    x_train, y_train = _arrays(benchmark.train_stream, "train_stream")
    x_test, y_test = _arrays(benchmark.test_stream, "test_stream")
    lo, hi = float(min(x_train.min(), x_test.min())), float(max(x_train.max(), x_test.max()))
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ConfigError(
            f"the benchmark's images span [{lo:.3g}, {hi:.3g}]; expected pixel space [0, 1]. Build the "
            "benchmark without Normalize (ToTensor() only) and pass normalize=True to condensed_replay "
            "if the model expects normalised inputs."
        )
    return from_arrays(name, x_train, y_train, x_test, y_test)


@dataclass
class CondensedReplay:
    """What :func:`condensed_replay` built: the strategy, its storage policy and the buffers."""

    strategy: Any
    policy: CondensedBuffer
    buffers: list
    dataset: Any


def condensed_replay(
    benchmark: Any,
    model: Any,
    *,
    mem_size: int = 200,
    budgets: Any = None,
    config: ExperienceCondenseConfig | None = None,
    cache_dir: str | None = None,
    optimizer: Any = None,
    criterion: Any = None,
    train_mb_size: int = 32,
    train_epochs: int = 1,
    eval_mb_size: int = 256,
    normalize: bool = False,
    device: str = "cpu",
    progress: bool = True,
    evaluator: Any = "default",
    plugins: Sequence[Any] = (),
) -> CondensedReplay:
    """A ``Naive`` strategy over ``model`` whose replay memory is condensed from ``benchmark``.

    Condenses each training experience's classes once (``config``: IDM + MDC, 20 images per class,
    quick preset by default; cached under ``cache_dir``), and plugs a :class:`CondensedBuffer`
    of ``mem_size`` items into a ``ReplayPlugin``. ``budgets`` (an int, a list with one budget per
    experience, or an :mod:`edgecond.budget` trace) adds a :class:`MemoryBudgetPlugin`.
    ``optimizer`` defaults to SGD (lr 0.05, momentum 0.9: benchmarks/continual.py's; 0.01
    underfits a from-scratch ConvNet in a few hundred steps), ``criterion`` to cross-entropy.
    """
    import torch
    from avalanche.training.plugins import ReplayPlugin
    from avalanche.training.supervised import Naive

    dataset = dataset_from_benchmark(benchmark)
    classes = [sorted(int(c) for c in exp.classes_in_this_experience) for exp in benchmark.train_stream]
    condenser = ExperienceCondenser(dataset, config or ExperienceCondenseConfig(), cache_dir=cache_dir,
                                    device=device, progress=progress)
    from ..progress import progress_label

    buffers = []
    for i, cls in enumerate(classes):
        with progress_label(f"experience {i + 1}/{len(classes)}"):
            buffers.append(condenser(cls))
    policy = CondensedBuffer(int(mem_size), buffers=buffers, normalize=normalize)
    all_plugins = [ReplayPlugin(mem_size=int(mem_size), storage_policy=policy)]
    if budgets is not None:
        all_plugins.append(MemoryBudgetPlugin(policy, budgets))
    all_plugins.extend(plugins)
    kwargs: dict = {}
    if evaluator != "default":
        kwargs["evaluator"] = evaluator
    strategy = Naive(
        model=model,
        optimizer=optimizer or torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        criterion=criterion or torch.nn.CrossEntropyLoss(),
        train_mb_size=train_mb_size, train_epochs=train_epochs, eval_mb_size=eval_mb_size,
        device=device, plugins=all_plugins, **kwargs,
    )
    return CondensedReplay(strategy=strategy, policy=policy, buffers=buffers, dataset=dataset)
