"""Observer (teacher) networks: BN models trained here on a dataset's real training split.

EDC (``edgecond/condense/edc.py``) matches the BatchNorm statistics of pre-trained *observer*
networks and takes soft labels from them. edgecond never downloads weights: observers are
trained by the library from the real training data, with :class:`ObserverConfig`, and cached
by **content hash** — the dataset's digest (:meth:`edgecond.data.ImageDataset.digest`), the
model name and every training setting — as one ``.safetensors`` file (weights, BN running
statistics, and JSON metadata with the config, the test accuracy and the training seconds).
A second request with the same data and settings loads the file instead of training.

Training protocol: SGD (momentum 0.9, weight decay 5e-4), cosine learning rate, batches of
``batch_size`` shuffled images, weak augmentation (crop + flip where the data allows flips,
:func:`edgecond.facts.without_flip`). The test accuracy reported is measured once after
training on the test split; nothing is selected on it.

CLI: ``edgecond observers train --dataset digits --model convnet-bn --epochs 20``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .progress import progress_bar
from .utils import make_generator, resolve_device

__all__ = ["ObserverConfig", "Observer", "observer_key", "default_cache_dir", "train_observer",
           "load_observer", "get_observer", "OBSERVER_FORMAT"]

log = logging.getLogger(__name__)

OBSERVER_FORMAT = "edgecond-observer/1"
#: in-process memo of loaded observers (key → Observer): EDC asks for the same observers twice
#: (initial-image selection, then matching)
_MEMO: dict[tuple[str, str], "Observer"] = {}


@dataclass
class ObserverConfig:
    """How one observer is trained. Every field enters the cache key."""

    model: str = "convnet-bn"
    model_kwargs: dict = field(default_factory=dict)
    epochs: int = 20
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    augment: str = "crop_flip"  #: DiffAugment strategy (flips dropped where labels forbid them)
    seed: int = 0

    def validate(self) -> "ObserverConfig":
        if int(self.epochs) < 1:
            raise ConfigError(f"observer epochs={self.epochs}; expected an integer >= 1.")
        if int(self.batch_size) < 1:
            raise ConfigError(f"observer batch_size={self.batch_size}; expected an integer >= 1.")
        if float(self.lr) <= 0:
            raise ConfigError(f"observer lr={self.lr}; expected a positive learning rate.")
        return self


@dataclass
class Observer:
    """A trained observer: the model (eval mode, parameters frozen) and what is known about it."""

    model: nn.Module
    config: ObserverConfig
    key: str
    test_accuracy: float
    seconds: float
    path: str | None = None
    cached: bool = False  #: True when loaded from the cache instead of trained now

    def info(self) -> dict:
        return {"model": self.config.model, "key": self.key, "test_accuracy": round(self.test_accuracy, 6),
                "train_seconds": round(self.seconds, 3), "epochs": self.config.epochs, "cached": self.cached}


def default_cache_dir() -> Path:
    """``$EDGECOND_CACHE/observers``, else ``$XDG_CACHE_HOME/edgecond/observers``, else
    ``~/.cache/edgecond/observers``."""
    root = os.environ.get("EDGECOND_CACHE")
    if root:
        return Path(root) / "observers"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "edgecond" / "observers"


def observer_key(dataset, config: ObserverConfig) -> str:
    """24 hex digits of BLAKE2b over the data digest, image shape, classes and the full config."""
    payload = {"format": OBSERVER_FORMAT, "data": dataset.digest(), "shape": list(dataset.image_shape),
               "classes": int(dataset.num_classes), "flips": bool(getattr(dataset, "flips", False)),
               "config": dataclasses.asdict(config)}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _build(dataset, config: ObserverConfig, seed: int | None = None) -> nn.Module:
    from .models import build_model

    return build_model(config.model, dataset.image_shape, dataset.num_classes, seed=seed, **dict(config.model_kwargs))


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _cosine(epoch: int, epochs: int, lr: float) -> float:
    import math

    return 0.5 * lr * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))


def train_observer(dataset, config: ObserverConfig, *, device: str | torch.device = "cpu",
                   progress: bool = True) -> Observer:
    """Train ``config.model`` on the real training split and measure its test accuracy."""
    from .augment import DiffAugment
    from .evaluate import test_accuracy
    from .facts import without_flip

    config.validate()
    dev = resolve_device(device)
    t0 = time.perf_counter()
    model = _build(dataset, config, seed=int(config.seed)).to(dev)
    x = dataset.normalize(dataset.x_train.to(dev, torch.float32))
    y = dataset.y_train.long().to(dev)
    gen = make_generator(int(config.seed) + 17)
    aug = DiffAugment(without_flip(config.augment, bool(getattr(dataset, "flips", False))), single_op=False)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    bar = progress_bar(range(config.epochs), desc=f"observer {config.model}", disable=not progress, unit="ep")
    model.train()
    for epoch in bar:
        lr = _cosine(epoch, config.epochs, config.lr)
        for g in opt.param_groups:
            g["lr"] = lr
        perm = torch.randperm(len(y), generator=gen).to(dev)
        total, steps = 0.0, 0
        for idx in perm.split(int(config.batch_size)):
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            xb = x[idx]
            if aug.enabled:
                xb = aug(xb, draw=aug.sample_draw(len(xb), generator=gen, device=dev))
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
        bar.set_postfix(loss=f"{total / max(steps, 1):.4f}", lr=f"{lr:.3g}")
    _freeze(model)
    acc = test_accuracy(model, dataset, device=dev)
    seconds = time.perf_counter() - t0
    log.info("observer %s trained: %d epochs, test accuracy %.2f %%, %.1f s", config.model, config.epochs,
             100 * acc, seconds)
    return Observer(model, config, observer_key(dataset, config), acc, seconds)


def _path(cache_dir: Path, config: ObserverConfig, key: str) -> Path:
    return Path(cache_dir) / f"{config.model}-{key}.safetensors"


def save_observer(obs: Observer, path: str | Path) -> Path:
    """Write ``obs`` as safetensors (weights + buffers; JSON metadata), atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in obs.model.state_dict().items()}
    meta = {"format": OBSERVER_FORMAT, "key": obs.key, "config": json.dumps(dataclasses.asdict(obs.config)),
            "test_accuracy": repr(float(obs.test_accuracy)), "train_seconds": repr(float(obs.seconds))}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def load_observer(path: str | Path, dataset, *, device: str | torch.device = "cpu") -> Observer:
    """Read an observer file written by :func:`save_observer` for ``dataset``'s shape and classes."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(path))
        if meta.get("format") != OBSERVER_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        config = ObserverConfig(**json.loads(meta["config"]))
        model = _build(dataset, config)
        model.load_state_dict(state)
    except Exception as exc:  # any unreadable or foreign file: one clear error
        raise ConfigError(f"observer file {str(path)!r} cannot be read for dataset {dataset.name!r} "
                          f"({type(exc).__name__}: {str(exc)[:160]}); delete it to retrain.") from None
    dev = resolve_device(device)
    return Observer(_freeze(model.to(dev)), config, meta.get("key", ""), float(meta.get("test_accuracy", "nan")),
                    float(meta.get("train_seconds", "nan")), str(path), cached=True)


def get_observer(dataset, config: ObserverConfig, *, cache_dir: str | Path | None = None,
                 device: str | torch.device = "cpu", progress: bool = True) -> Observer:
    """The observer of ``config`` for ``dataset``: from the cache when the content hash matches,
    else trained now and written to the cache."""
    config = config.validate()
    key = observer_key(dataset, config)
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    path = _path(root, config, key)
    memo = _MEMO.get((str(path), str(device)))
    if memo is not None and path.exists():
        return memo
    if path.exists():
        obs = load_observer(path, dataset, device=device)
        if obs.key != key:
            raise ConfigError(f"observer file {str(path)!r} holds key {obs.key!r}, expected {key!r}; delete it to retrain.")
        log.info("observer %s: cache hit %s (test accuracy %.2f %%)", config.model, path, 100 * obs.test_accuracy)
    else:
        obs = train_observer(dataset, config, device=device, progress=progress)
        save_observer(obs, path)
        obs.path = str(path)
    _MEMO[(str(path), str(device))] = obs
    return obs


def get_observers(dataset, configs: Sequence[ObserverConfig], **kwargs: Any) -> list[Observer]:
    return [get_observer(dataset, c, **kwargs) for c in configs]
