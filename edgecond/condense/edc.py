"""EDC: statistical (BatchNorm) matching against frozen observers, with soft labels.

Shao et al., "Elucidating the Design Space of Dataset Condensation" (NeurIPS 2024;
``shared/papers/elucidating-dataset-condensation-edc.md``, Sec. 3-4, App. A). A single pass
against *frozen* observer networks trained on the real data (:mod:`edgecond.observers`, cached
by content hash) — no bi-level loop. What is implemented, by the paper's numbering:

* **Real-image initialisation** (③, RDED-style, training-free): per class, ``rded_candidates ×
  IPC × f²`` random-resized crops of random real images are scored by the observers' cross
  entropy for their class (low = confidently, typically of the class); the best crops, best first,
  become the stored images (an f×f mosaic of crops for ``factor > 1``, as RDED stitches patches).
  The score order is the rank order, so the most informative crop is rank 0.
* **Soft category-aware statistical matching** (②, Eq. 5): at every BatchNorm layer of the
  observer, the mean and variance of the synthetic batch are matched (L2 norms) to the running
  statistics (Form 1, global) and, per class, to the real data's per-class statistics at that
  layer (Form 2, computed once per observer from ``class_stat_images`` real images per class),
  mixed as ``α·Form1 + (1-α)·Σ_c p(c)·Form2_c``; plus the usual cross entropy of the observer
  on the synthetic images (``ce_weight``).
* **Flatness regularisation on logits** (①, Eq. 7): ``KL(softmax(φ(X)/τ) ‖ softmax(φ(X_EMA)/τ))``
  with ``X_EMA ← β X_EMA + (1-β) X`` updated every step, under the same augmentation draw.
* **Weak augmentation** (④): random-resized crop with area scale ``crop_scale`` (0.5-1) and
  horizontal flips only where the data's labels allow them.
* **Several observers**: one per outer iteration in turn (G-VBSM's sequential matching).
* **Soft labels**: the observers' mean logits on every stored image as stored (after
  quantisation), float16 by default, written into the buffer (:mod:`edgecond.soft_labels`).

Images are optimised with Adam (β = 0.5, 0.9, lr 0.05) in normalised space over all classes at
once ("batch size: all"). Multisize: the matcher computes the loss of any requested prefix (all
classes' first n ranks, its own forward pass), so ``--method mdc --base edc`` runs MDC over it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import Matcher, MatchOutput, SyntheticSet
from .engine import mosaic, register_method
from .presets import PresetContext

__all__ = ["EDCConfig", "EDC", "PAPER_TABLE", "observer_configs", "bn_statistics_loss", "weak_crop"]

log = logging.getLogger(__name__)


@dataclass
class EDCConfig:
    """EDC's own settings (paper values: α, β, τ = 0.5, 0.99, 4; Adam lr 0.05, β = (0.5, 0.9))."""

    #: observer networks: ``[{"model": name, "model_kwargs": {...}}, ...]`` (BatchNorm models)
    observers: list = field(default_factory=lambda: [{"model": "convnet-bn", "model_kwargs": {}}])
    observer_epochs: int = 20
    observer_lr: float = 0.05
    observer_batch: int = 128
    observer_seed: int = 0
    cache_dir: str = ""  #: observer cache ("" = :func:`edgecond.observers.default_cache_dir`)
    alpha: float = 0.5  #: weight of the global form (1) against the per-class form (2), Eq. 5
    ema_beta: float = 0.99  #: β of the EMA images, Eq. 7
    tau: float = 4.0  #: temperature of the flatness KL, Eq. 7
    flat_weight: float = 0.25  #: weight of L'_FR (the paper's 0.25, Table 4)
    bn_weight: float = 1.0
    ce_weight: float = 1.0
    lr: float = 0.05  #: Adam learning rate of the images (normalised space)
    adam_betas: tuple = (0.5, 0.9)
    crop_scale: tuple = (0.5, 1.0)  #: weak augmentation: area range of the random-resized crop
    init: str = "rded"  #: "rded" (scored real crops) | "random" (random real images, the engine's)
    rded_candidates: int = 5  #: crops scored per stored image (per decoded view)
    class_stat_images: int = 256  #: real images per class for the per-class BN statistics
    soft_labels: bool = True  #: store the observers' logits per stored image
    soft_label_dtype: str = "float16"

    def validate(self) -> "EDCConfig":
        if not isinstance(self.observers, (list, tuple)) or not self.observers:
            raise ConfigError(f"edc observers={self.observers!r}; expected a non-empty list of "
                              "{'model': name, 'model_kwargs': {...}} entries.")
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise ConfigError(f"edc alpha={self.alpha}; expected a weight in [0, 1] (paper: 0.5).")
        if not 0.0 <= float(self.ema_beta) < 1.0:
            raise ConfigError(f"edc ema_beta={self.ema_beta}; expected a rate in [0, 1) (paper: 0.99).")
        if float(self.tau) <= 0:
            raise ConfigError(f"edc tau={self.tau}; expected a positive temperature (paper: 4).")
        lo, hi = (float(v) for v in self.crop_scale)
        if not 0.0 < lo <= hi <= 1.0:
            raise ConfigError(f"edc crop_scale={tuple(self.crop_scale)}; expected 0 < low <= high <= 1.")
        if self.init not in ("rded", "random"):
            raise ConfigError(f"edc init={self.init!r}; expected 'rded' or 'random'.")
        if int(self.rded_candidates) < 1 or int(self.class_stat_images) < 1:
            raise ConfigError("edc rded_candidates and class_stat_images must be integers >= 1.")
        if self.soft_label_dtype not in ("float16", "float32"):
            raise ConfigError(f"edc soft_label_dtype={self.soft_label_dtype!r}; expected float16 or float32.")
        return self


def observer_configs(mc: EDCConfig) -> list:
    """The :class:`~edgecond.observers.ObserverConfig` of every configured observer."""
    from ..observers import ObserverConfig

    out = []
    for entry in mc.observers:
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, dict) or "model" not in entry:
            raise ConfigError(f"edc observer entry {entry!r}; expected {{'model': name, 'model_kwargs': {{...}}}}.")
        out.append(ObserverConfig(model=str(entry["model"]), model_kwargs=dict(entry.get("model_kwargs") or {}),
                                  epochs=int(entry.get("epochs", mc.observer_epochs)), lr=float(mc.observer_lr),
                                  batch_size=int(mc.observer_batch), seed=int(mc.observer_seed)))
    return out


def _load_observers(dataset, mc: EDCConfig, device) -> list:
    from ..observers import get_observer

    obs = [get_observer(dataset, c, cache_dir=mc.cache_dir or None, device=device, progress=False)
           for c in observer_configs(mc)]
    for o in obs:
        if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in o.model.modules()):
            raise ConfigError(f"edc observer {o.config.model!r} has no BatchNorm layer; statistical matching "
                              "needs BN models (convnet-bn, resnet10-ap, resnet18).")
    return obs


# ------------------------------------------------------------------------------------------
# pieces
# ------------------------------------------------------------------------------------------


def weak_crop(x: torch.Tensor, u: torch.Tensor, *, scale: Sequence[float], flips: bool) -> torch.Tensor:
    """Differentiable random-resized crop (square, area in ``scale``) + optional flip.

    ``u``: ``[B, 4]`` uniforms (area, x offset, y offset, flip) so two tensors can share a draw."""
    lo, hi = (float(v) for v in scale)
    side = torch.sqrt(lo + (hi - lo) * u[:, 0])
    tx = (2 * u[:, 1] - 1) * (1 - side)
    ty = (2 * u[:, 2] - 1) * (1 - side)
    sx = side * torch.where(u[:, 3] < 0.5, -1.0, 1.0) if flips else side
    theta = torch.zeros(len(x), 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = sx.to(x)
    theta[:, 0, 2] = tx.to(x)
    theta[:, 1, 1] = side.to(x)
    theta[:, 1, 2] = ty.to(x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class _BNTap:
    """Forward hooks on every BatchNorm layer: keep each layer's input of the last forward."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.inputs: list[torch.Tensor | None] = [None] * len(self.layers)
        self.handles: list = []

    def __enter__(self) -> "_BNTap":
        self.handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.layers)]
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def _hook(self, i: int):
        def fn(_module, args, _out):
            self.inputs[i] = args[0]

        return fn


def _moments(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dims = [0] + list(range(2, h.dim()))
    mean = h.mean(dim=dims)
    var = h.var(dim=dims, unbiased=False)
    return mean, var


def bn_statistics_loss(inputs: Sequence[torch.Tensor], targets: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Σ_layers ‖μ(h) − μ*‖₂ + ‖σ²(h) − σ²*‖₂ (Eq. 2/5's statistical matching of one form)."""
    total = inputs[0].new_zeros(())
    for h, (m, v) in zip(inputs, targets):
        mean, var = _moments(h)
        total = total + torch.linalg.vector_norm(mean - m) + torch.linalg.vector_norm(var - v)
    return total


@torch.no_grad()
def class_bn_statistics(model: nn.Module, real, *, per_class: int, generator: torch.Generator) -> list:
    """Per class, per BN layer: (mean, variance) of the layer's input over ``per_class`` real images."""
    out = []
    with _BNTap(model) as tap:
        for c in range(real.num_classes):
            idx = real.class_indices(c, per_class, generator).to(real.device)
            sums = None
            for chunk in idx.split(256):
                model(real.x[chunk])
                stats = []
                for h in tap.inputs:
                    dims = [0] + list(range(2, h.dim()))
                    n = h.numel() // h.shape[1]
                    stats.append((h.sum(dim=dims).double(), (h.double() ** 2).sum(dim=dims), n))
                sums = stats if sums is None else [(a + s, b + q, k + n) for (a, b, k), (s, q, n) in zip(sums, stats)]
            layers = []
            for s, q, n in sums:
                mean = s / n
                layers.append((mean.float(), (q / n - mean ** 2).clamp_min(0).float()))
            out.append(layers)
    return out


# ------------------------------------------------------------------------------------------
# presets
# ------------------------------------------------------------------------------------------

#: The appendix settings by exact paper-dataset key (Tables 9-10): iterations, Adam lr 0.05,
#: α, β, τ = 0.5, 0.99, 4; initialisation from original training images. The observer set is
#: the paper's CIFAR backbones that the model registry has ({ResNet-18, ConvNet-W128, ConvNet-D1,
#: ConvNet-D2, ConvNet-W32}; MobileNet-V2, WRN-16-2 and ShuffleNet-V2 are not in the registry);
#: the observers' training epochs are not in the tables (50 here).
PAPER_TABLE: dict[str, dict[str, Any]] = {
    "cifar10": {"iterations": 75},
    "cifar100": {"iterations": 2000},
}
_PAPER_OBSERVERS = [
    {"model": "resnet18", "model_kwargs": {}},
    {"model": "convnet-bn", "model_kwargs": {"width": 128}},
    {"model": "convnet-bn", "model_kwargs": {"width": 128, "depth": 1}},
    {"model": "convnet-bn", "model_kwargs": {"width": 128, "depth": 2}},
    {"model": "convnet-bn", "model_kwargs": {"width": 32}},
]


def _paper(ctx: PresetContext) -> dict:
    row = PAPER_TABLE.get(ctx.paper or "", {"iterations": 2000})
    return {
        "iterations": int(row["iterations"]),
        "factor": 1,
        "lr_img": 0.05,
        "batch_real": max(1, min(100, ctx.facts.train_per_class)),
        "augment": "none",
        "model": "convnet-bn",
        "method_config": {"observers": [dict(o) for o in _PAPER_OBSERVERS], "observer_epochs": 50,
                          "alpha": 0.5, "ema_beta": 0.99, "tau": 4.0, "lr": 0.05, "init": "rded"},
    }


def _quick(ctx: PresetContext) -> dict:
    """From the data's geometry: one ConvNet-BN observer (width 64 up to 16×16 images, 32 above,
    where a width-64 epoch over 50k images costs CPU minutes), trained 30 epochs on images up to
    16×16 and 10 above; 300 image updates up to 16×16 and 100 above (one update is one forward
    and backward of the K·IPC stored images through one observer: cheap)."""
    small = ctx.facts.side <= 16
    return {
        "iterations": 300 if small else 100,
        "factor": 1,
        "lr_img": 0.05,
        "batch_real": max(1, min(64, ctx.facts.train_per_class)),
        "augment": "none",
        "model": "convnet-bn",
        "method_config": {"observers": [{"model": "convnet-bn", "model_kwargs": {"width": 64 if small else 32}}],
                          "observer_epochs": 30 if small else 10, "class_stat_images": 256 if small else 128},
    }


# ------------------------------------------------------------------------------------------
# the matcher
# ------------------------------------------------------------------------------------------


@register_method("edc")
class EDC(Matcher):
    """EDC: soft category-aware BN-statistics matching + flatness regulariser, with soft labels."""

    Config = EDCConfig
    presets = {"quick": _quick, "paper": _paper}
    inner_steps = 1

    @classmethod
    def image_optimizer(cls, params, config, mc: EDCConfig) -> torch.optim.Optimizer:
        """Adam over the stored images (the paper's optimiser: lr 0.05, β = (0.5, 0.9))."""
        b1, b2 = (float(v) for v in mc.adam_betas)
        return torch.optim.Adam(params, lr=float(mc.lr), betas=(b1, b2))

    @classmethod
    def select_initial(cls, dataset, config, mc: EDCConfig, *, seed: int, device) -> torch.Tensor:
        """RDED-style initial images ``[K, IPC, C, H, W]`` (pixel space), best-scored first."""
        from ..utils import make_generator

        mc = mc.validate()
        if mc.init != "rded":
            from .engine import initial_images

            return initial_images(dataset, config.ipc, config.factor, seed=seed, offset=config.init_offset)
        observers = [o.model for o in _load_observers(dataset, mc, device)]
        gen = make_generator(int(seed) + 7919)
        f2 = int(config.factor) ** 2
        need = int(config.ipc) * f2
        flips = bool(getattr(dataset, "flips", False))
        out = []
        with torch.no_grad():
            for c, idx in enumerate(dataset.class_indices()):
                m = need * int(mc.rded_candidates)
                pick = idx[torch.randint(len(idx), (m,), generator=gen)] if len(idx) < m else \
                    idx[torch.randperm(len(idx), generator=gen)[:m]]
                x = dataset.x_train[pick].float()
                crops = weak_crop(x, torch.rand(m, 4, generator=gen), scale=mc.crop_scale, flips=flips).clamp(0, 1)
                xn = dataset.normalize(crops).to(device)
                y = torch.full((m,), c, dtype=torch.long, device=device)
                score = torch.stack([F.cross_entropy(o(xn), y, reduction="none") for o in observers]).mean(0).cpu()
                best = torch.argsort(score, stable=True)[:need]
                out.append(mosaic(crops[best], int(config.factor)))
        return torch.stack(out)

    def __init__(self, real, config, method_config: EDCConfig, *, device: torch.device,
                 generator: torch.Generator) -> None:
        self.real = real
        self.config = config
        self.mc = method_config.validate()
        self.device = device
        self.gen = generator
        self.flips = bool(getattr(real.dataset, "flips", False))
        self.observers = _load_observers(real.dataset, self.mc, device)
        self.taps = [_BNTap(o.model) for o in self.observers]
        self.global_stats = [[(m.running_mean.detach(), m.running_var.detach()) for m in tap.layers]
                             for tap in self.taps]
        self.class_stats = [class_bn_statistics(o.model, real, per_class=int(self.mc.class_stat_images),
                                                generator=self.gen) for o in self.observers]
        self.ema: torch.Tensor | None = None
        self.t = 0

    def class_groups(self, num_classes: int) -> list[list[int]]:
        return [list(range(num_classes))]

    def begin_outer(self, t: int) -> None:
        self.t = t

    def _update_ema(self, syn: SyntheticSet) -> torch.Tensor:
        with torch.no_grad():
            if self.ema is None or self.ema.shape != syn.images.shape:
                self.ema = syn.images.detach().clone()
            else:
                beta = float(self.mc.ema_beta)
                self.ema.mul_(beta).add_(syn.images.detach(), alpha=1.0 - beta)
        return self.ema

    def _forward(self, k: int, x: torch.Tensor):
        """Logits, embeddings and BN inputs of observer ``k`` on ``x``."""
        obs = self.observers[k].model
        feats: list[torch.Tensor] = []
        handle = obs.classifier.register_forward_pre_hook(lambda _m, args: feats.append(args[0]))
        try:
            with self.taps[k] as tap:
                logits = obs(x)
        finally:
            handle.remove()
        inputs = list(tap.inputs)
        tap.inputs = [None] * len(tap.layers)
        return logits, feats[0], inputs

    def _losses(self, k: int, x: torch.Tensor, x_ema: torch.Tensor, labels: torch.Tensor,
                rows: list[torch.Tensor], classes: Sequence[int]) -> tuple[torch.Tensor, list[torch.Tensor], dict, torch.Tensor]:
        """(shared loss, per-class loss list, stats, embeddings) of one set of synthetic images."""
        mc = self.mc
        logits, emb, inputs = self._forward(k, x)
        glob = bn_statistics_loss(inputs, self.global_stats[k])
        per_class = []
        for c, r in zip(classes, rows):
            per_class.append(bn_statistics_loss([h[r] for h in inputs], self.class_stats[k][c]))
        ce = F.cross_entropy(logits, labels)
        with torch.no_grad():
            ema_logits = self.observers[k].model(x_ema)
        tau = float(mc.tau)
        logp = F.log_softmax(logits / tau, dim=1)
        logq = F.log_softmax(ema_logits / tau, dim=1)
        flat = (logp.exp() * (logp - logq)).sum(1).mean()
        a = float(mc.alpha)
        shared = mc.bn_weight * a * glob + mc.ce_weight * ce + mc.flat_weight * flat
        pc = 1.0 / len(classes)
        class_terms = [mc.bn_weight * (1.0 - a) * pc * v for v in per_class]
        stats = {"bn_global": float(glob.detach()), "bn_class": float(torch.stack(per_class).mean().detach()),
                 "ce": float(ce.detach()), "flat": float(flat.detach())}
        return shared, class_terms, stats, emb

    def match(self, syn: SyntheticSet, classes: Sequence[int], *,
              prefixes: Sequence[int | None] = (None,)) -> list[MatchOutput]:
        ema = self._update_ema(syn)
        k = self.t % len(self.observers)
        classes = list(classes)
        outs = {c: MatchOutput(cls=c, losses={}) for c in classes}
        for n in prefixes:
            m = syn.ipc if n is None else int(n)
            xs, xe, labels, rows, owners = [], [], [], [], []
            start = 0
            for c in classes:
                x, owner = syn.decoded(c, m)
                xs.append(x)
                xe.append(_decode(ema[c, :m], syn.factor))
                labels.append(torch.full((len(x),), c, dtype=torch.long, device=x.device))
                rows.append(torch.arange(start, start + len(x), device=x.device))
                owners.append(owner)
                start += len(x)
            x = torch.cat(xs)
            x_ema = torch.cat(xe)
            u = torch.rand(len(x), 4, generator=self.gen).to(x.device)
            x_aug = weak_crop(x, u, scale=self.mc.crop_scale, flips=self.flips)
            e_aug = weak_crop(x_ema, u, scale=self.mc.crop_scale, flips=self.flips)
            shared, class_terms, stats, emb = self._losses(k, x_aug, e_aug, torch.cat(labels), rows, classes)
            for i, c in enumerate(classes):
                outs[c].losses[n] = class_terms[i] + shared / len(classes)
                if n is None:
                    outs[c].stats = dict(stats)
                    outs[c].syn_features = emb[rows[i]].detach()
                    outs[c].syn_owner = owners[i]
        if len(prefixes) > 1:  # the MDC hooks read feature distances to real batches
            obs = self.observers[k].model
            with torch.no_grad():
                for c in classes:
                    xr = self.real.sample_class(c, int(self.config.batch_real), self.gen)
                    feats: list[torch.Tensor] = []
                    h = obs.classifier.register_forward_pre_hook(lambda _m, args: feats.append(args[0]))
                    try:
                        obs(xr)
                    finally:
                        h.remove()
                    outs[c].real_features = feats[0]
        return [outs[c] for c in classes]

    def finalize_buffer(self, buffer, dataset):
        """Record the observers in the buffer and, with ``soft_labels``, add their logits."""
        info = {"observers": [o.info() for o in self.observers]}
        if not self.mc.soft_labels:
            return _with_extra(buffer, {"edc": info})
        from ..soft_labels import add_soft_labels

        return add_soft_labels(buffer, dataset, [o.model for o in self.observers], dtype=self.mc.soft_label_dtype,
                               extra={"edc": dict(info, soft_labels="observers' mean logits per stored image")})

    def state_dict(self) -> dict[str, Any]:
        return {"ema": None if self.ema is None else self.ema.detach().cpu(), "t": self.t}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ema = state.get("ema")
        self.ema = None if ema is None else torch.as_tensor(ema).to(self.device)
        self.t = int(state.get("t", 0))


def _decode(images: torch.Tensor, factor: int) -> torch.Tensor:
    from ..formation import decode_torch

    return decode_torch(images, factor)


def _with_extra(buffer, extra: dict):
    from ..buffer import MultisizeBuffer

    meta = buffer.meta
    ex = dict(meta.extra or {})
    ex.update(extra)
    return MultisizeBuffer.from_class_major(
        buffer.images_class_major(), labels=list(meta.labels), class_names=list(meta.class_names),
        dataset=meta.dataset, mean=list(meta.mean), std=list(meta.std), factor=meta.factor, method=meta.method,
        config=dict(meta.config or {}), dtype=meta.dtype, extra=ex, accuracy=meta.accuracy or None,
        recipe=meta.recipe)

