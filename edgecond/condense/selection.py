"""Selection baselines: real images, ordered so that every prefix is a valid smaller set.

* ``random``: per class, a seeded random permutation of its training images; rank ``i`` is the
  ``i``-th image of the permutation (the same images a matcher with ``factor = 1`` starts from
  for the same seed).
* ``herding``: a ConvNet is trained briefly on the real data; per class, images are picked
  greedily so the running mean of the picked features stays closest to the class mean feature
  (Welling 2009; as used by DC/DM/IDM's baselines). The selection order *is* the multisize order.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..augment import DiffAugment
from ..errors import ConfigError
from ..models import build_model
from ..utils import make_generator
from .base import Selector
from .engine import RealData, initial_images, register_method
from .idc import model_seed, train_on_real

__all__ = ["RandomSelection", "HerdingSelection", "HerdingConfig", "herding_order"]


@dataclass
class RandomConfig:
    """``random`` has no settings."""


def _random_preset(ctx) -> dict:
    return {"iterations": 0, "factor": 1}


@register_method("random")
class RandomSelection(Selector):
    """Random real images per class (seeded)."""

    Config = RandomConfig
    presets = {"quick": _random_preset, "paper": _random_preset}

    def select(self, dataset, ipc: int, *, seed: int, device: torch.device, progress: bool = True) -> torch.Tensor:
        init_seed = seed if self.config is None or self.config.init_seed is None else self.config.init_seed
        offset = 0 if self.config is None else self.config.init_offset
        return initial_images(dataset, ipc, 1, seed=init_seed, offset=offset)


@dataclass
class HerdingConfig:
    """Feature extractor training for herding."""

    train_steps: int = 300  #: SGD steps of the feature network on real data
    batch: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: str = "color_crop"  #: per-sample augmentation while training the feature network


def _herding_quick(ctx) -> dict:
    return {"iterations": 0, "factor": 1, "method_config": {"train_steps": 150}}


def _herding_paper(ctx) -> dict:
    return {"iterations": 0, "factor": 1, "method_config": {"train_steps": 2000}}


def herding_order(features: torch.Tensor, n: int) -> torch.Tensor:
    """Greedy herding: indices of ``n`` rows of ``features`` [M, D] in selection order."""
    m = features.shape[0]
    n = min(int(n), m)
    mu = features.mean(0)
    total = torch.zeros_like(mu)
    chosen: list[int] = []
    available = torch.ones(m, dtype=torch.bool, device=features.device)
    for k in range(1, n + 1):
        cand = (total.unsqueeze(0) + features) / k
        dist = ((cand - mu) ** 2).sum(1)
        dist[~available] = float("inf")
        i = int(torch.argmin(dist))
        chosen.append(i)
        available[i] = False
        total = total + features[i]
    return torch.tensor(chosen, dtype=torch.long)


@register_method("herding")
class HerdingSelection(Selector):
    """Herding in the feature space of a ConvNet trained briefly on the real data."""

    Config = HerdingConfig
    presets = {"quick": _herding_quick, "paper": _herding_paper}

    def select(self, dataset, ipc: int, *, seed: int, device: torch.device, progress: bool = True) -> torch.Tensor:
        mc = self.mc or HerdingConfig()
        if mc.train_steps < 0 or mc.batch < 1:
            raise ConfigError(f"herding train_steps={mc.train_steps}, batch={mc.batch}; expected >= 0 and >= 1.")
        model_name = self.config.model if self.config is not None else "convnet"
        kwargs = dict(self.config.model_kwargs) if self.config is not None else {}
        gen = make_generator(int(seed) + 7919)
        real = RealData(dataset, device)
        model = build_model(model_name, dataset.image_shape, dataset.num_classes, seed=model_seed(gen), **kwargs).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=mc.lr, momentum=mc.momentum, weight_decay=mc.weight_decay)
        if mc.train_steps:
            train_on_real(model, opt, real, steps=mc.train_steps, batch=mc.batch, generator=gen,
                          augment=DiffAugment(mc.augment))
        model.eval()
        out = []
        with torch.no_grad():
            for c, idx in enumerate(real.class_idx):
                if len(idx) < ipc:
                    raise ConfigError(
                        f"class {c} ({dataset.class_names[c]!r}) has {len(idx)} training images but herding "
                        f"was asked for ipc={ipc}; pass ipc <= {len(idx)}."
                    )
                feats = torch.cat([model.embed(real.x[idx[i:i + 1024].to(device)]) for i in range(0, len(idx), 1024)])
                order = herding_order(feats.double(), ipc)
                out.append(dataset.x_train[idx[order]].float())
        return torch.stack(out)
