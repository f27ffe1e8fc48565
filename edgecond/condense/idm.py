"""IDM (improved distribution matching) and plain DM.

Zhao et al., "Improved Distribution Matching for Dataset Condensation" (CVPR 2023;
``shared/papers/improved-distribution-matching-idm.md``, Sec. 4, 5.1) on top of DM (Zhao &
Bilen, 2023): match the mean embedding (penultimate features) of real and synthetic images of
every class under randomly sampled networks.

IDM's three additions, each switchable (``dm`` = all three off):

* **Partitioning and expansion** (l = 2): each synthetic image is cut into l×l pieces, each
  expanded to full size. This *is* multi-formation with ``factor = l`` (the reference code also
  evaluates the expanded pieces and initialises every stored image as an l×l mosaic of real
  images), so it is the engine's ``factor`` here: ``idm`` presets use ``factor = 2``, ``dm`` 1
  (quick presets: 1 below side 24, see ``_idm_quick``).
* **Model queue** (Alg. 1): ``queue_init`` (N) random models; every ``push_interval`` outer
  iterations a new one is pushed (the oldest popped beyond ``queue_max`` = N_max); every
  iteration one model is sampled for matching and ``train_models`` random models are trained
  for ``train_steps`` (K) SGD steps on real data.
* **Class-aware regulariser**: ``λ_reg · Acc_φ · CE(φ(S), y)`` on the synthetic images, with
  ``Acc_φ`` the sampled model's accuracy on the real batch of this step (the reference code
  measures it in percent: ``acc_scale = 100`` reproduces its effective weight).

One image update per outer iteration handles all classes with one siamese augmentation draw
and per-class losses (the class losses touch disjoint images, so one summed step equals the
reference's per-class steps for SGD). The real branch needs no gradient: it runs without
autograd in chunks of :data:`REAL_CHUNK_BYTES` of activations, channels-last (see
:func:`real_embeddings`), so no per-iteration allocation of the whole real batch's activations
takes place; the matching networks' parameters never require grad while they match (only the
synthetic pixels get gradients), and IDM switches them on only to train a queued model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..augment import DiffAugment
from ..errors import ConfigError
from ..models import ConvNet, build_model
from .base import Matcher, MatchOutput, SyntheticSet
from .engine import register_method
from ..facts import match_depth
from .idc import model_seed, train_on_real
from .presets import PresetContext

__all__ = ["IDMConfig", "DMConfig", "IDM", "DM", "real_embeddings", "REAL_CHUNK_BYTES"]

DSA_STRATEGY = "color_crop_cutout_flip_scale_rotate"

#: activation bytes per chunk of the real (no-grad) branch on a CPU. Below glibc's largest
#: dynamic mmap threshold (32 MiB), so freed activations are reused from the heap instead of
#: being unmapped and page-faulted back every iteration (one 2,560-image pass allocated 3.5 GB).
REAL_CHUNK_BYTES = 16 << 20
#: the same budget on an accelerator (its caching allocator reuses memory anyway)
REAL_CHUNK_BYTES_DEVICE = 1 << 30


def _chunk_rows(model: nn.Module, x: torch.Tensor) -> int:
    """Images per chunk: the first feature map (``width`` channels at the input's H×W, the largest
    activation of a ConvNet) of one chunk fits the byte budget of ``x``'s device."""
    budget = REAL_CHUNK_BYTES if x.device.type == "cpu" else REAL_CHUNK_BYTES_DEVICE
    per_image = int(getattr(model, "width", 128)) * int(x[0].numel() // max(x.shape[1], 1)) * x.element_size()
    return max(1, budget // max(per_image, 1))


#: instance norms of maps with fewer pixels than this use :func:`_instance_norm_nograd` on a CPU
#: (oneDNN's channels-last group norm is fast at 32×32 but ~10× slower than NCHW at 16×16; measured
#: on a 2,560-image ConvNet-3 pass: 3.4 s vs 4.3 s all-native channels-last, 4.2-6.3 s NCHW)
NATIVE_NORM_MIN_PIXELS = 1024


def _instance_norm_nograd(gn: nn.GroupNorm, h: torch.Tensor) -> torch.Tensor:
    """GroupNorm with one channel per group (instance norm) of a channels-last map, without
    autograd: per-(image, channel) mean and E[x²] over the ``[B, H*W, C]`` view, one fused affine."""
    b, c, hh, ww = h.shape
    v = h.permute(0, 2, 3, 1).reshape(b, hh * ww, c)  # a view of a channels-last map
    mean = v.mean(1)
    var = (v * v).mean(1).sub_(mean * mean).clamp_min_(0.0)
    scale = torch.rsqrt(var.add_(gn.eps))
    if gn.weight is not None:
        scale = scale * gn.weight
    shift = -mean * scale
    if gn.bias is not None:
        shift = shift + gn.bias
    return h.mul(scale[:, :, None, None]).add_(shift[:, :, None, None])


def _embed_nograd(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model.embed(x)`` for the no-grad branch: a ConvNet on a CPU walks its layers with the
    faster instance norm on small maps; anything else is ``model.embed``."""
    if not isinstance(model, ConvNet) or x.device.type != "cpu" or x.dim() != 4:
        return model.embed(x)
    h = x
    for mod in model.features:
        if (isinstance(mod, nn.GroupNorm) and mod.num_groups == mod.num_channels and h.dim() == 4
                and h.shape[-1] * h.shape[-2] < NATIVE_NORM_MIN_PIXELS):
            h = _instance_norm_nograd(mod, h)
        else:
            h = mod(h)
    return h.flatten(1)


def real_embeddings(model: nn.Module, x: torch.Tensor, aug: DiffAugment | None = None, draw=None) -> torch.Tensor:
    """``model.embed(aug(x, draw))`` without autograd, in chunks, channels-last for image batches.

    The same numbers as one pass (the augmentation draw is shared by the whole call, every op is
    per image, and the networks' layers are per image), up to float rounding of the convolution
    kernels; a fraction of the memory and time on a CPU (channels-last convolutions, pooling
    and the first 3-channel convolution are several times faster in oneDNN than NCHW)."""
    rows = _chunk_rows(model, x)
    outs = []
    with torch.no_grad():
        for i in range(0, x.shape[0], rows):
            xc = x[i:i + rows]
            if aug is not None and draw is not None:
                xc = aug(xc, draw=draw)
            if xc.dim() == 4:
                xc = xc.contiguous(memory_format=torch.channels_last)
            outs.append(_embed_nograd(model, xc))
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def _set_trainable(model: nn.Module, flag: bool) -> None:
    for p in model.parameters():
        p.requires_grad_(flag)


@dataclass
class IDMConfig:
    """IDM/DM hyper-parameters (lr_img, factor = partition l, batch_real, augment: engine)."""

    queue: bool = True  #: model queue; False = DM: a fresh random model every iteration
    queue_init: int = 3  #: N, models in the queue at the start
    queue_max: int = 100  #: N_max
    push_interval: int = 30  #: outer iterations between Push (+Pop) operations
    train_steps: int = 10  #: K, SGD steps per Train operation
    train_models: int = 2  #: models trained per Train operation
    train_interval: int = 1  #: outer iterations between Train operations
    train_batch: int = 256
    net_lr: float = 0.01
    net_momentum: float = 0.9
    net_weight_decay: float = 5e-4
    ce_weight: float = 0.5  #: λ_reg (0 = no class-aware regulariser)
    acc_scale: float = 100.0  #: Acc_φ multiplier (reference: accuracy in percent)


@dataclass
class DMConfig(IDMConfig):
    """DM: IDM's queue and regulariser off by default."""

    queue: bool = False
    ce_weight: float = 0.0


#: The paper's per-(dataset, IPC) exceptions (App. / the reference's scripts), by exact registry
#: name (:data:`edgecond.facts.PAPER_DATASETS`): real batch at IPC 1, CIFAR-100 at IPC 10.
PAPER_TABLE: dict[tuple[str, int], dict[str, Any]] = {
    ("cifar10", 1): {"batch_real": 5000},
    ("cifar100", 1): {"batch_real": 5000},
    ("cifar100", 10): {"train_steps": 50, "ce_weight": 0.1},
}


def _idm_paper(ctx: PresetContext) -> dict:
    """IDM's published settings (partition l = 2, lr 0.2, DSA) and :data:`PAPER_TABLE`."""
    ipc = ctx.ipc
    mc: dict[str, Any] = {"queue_max": 100, "train_steps": 10, "push_interval": 30,
                          "ce_weight": 0.5 if ipc <= 10 else 0.1}
    if ipc == 1:
        mc["push_interval"] = 5
    row = dict(PAPER_TABLE.get((ctx.paper or "", ipc), {}))
    batch_real = row.pop("batch_real", 256)
    mc.update(row)
    return {
        "iterations": 20000,
        "factor": 2,
        "lr_img": 0.2,
        "momentum_img": 0.5,
        "batch_real": batch_real,
        "augment": DSA_STRATEGY,
        "augment_single_op": True,
        "model": "convnet",
        "model_kwargs": {"width": 128, "depth": match_depth(ctx.facts), "norm": "instance"},
        "method_config": mc,
    }


def _quick_geometry(ctx: PresetContext) -> dict:
    """Engine settings every distribution-matching quick preset shares, from the data's facts:
    ``lr_img`` = 0.1·IPC (at most 1.0: each image's share of a class-mean gradient is 1/IPC);
    the real batch is at most 128 on 8×8 images and 64 above (a 32×32 DM iteration with 128
    real images per class costs 1.2 CPU s at width 32), never more than the smallest class
    holds; a width-32 matching net above 8×8 (width 128 on 8×8, where it is cheap)."""
    f = ctx.facts
    return {
        "lr_img": _lr_img(ctx.ipc),
        "batch_real": max(1, min(128 if f.side <= 8 else 64, f.train_per_class)),
        "model_kwargs": {"width": 128 if f.side <= 8 else 32, "depth": match_depth(f), "norm": "instance"},
    }


def _idm_quick(ctx: PresetContext) -> dict:
    """CPU minutes from the data's geometry (docs/condensation.md, *Quick presets*).

    150 iterations (a 32×32 IDM iteration costs about twice a DM one: the queue's models
    train). Partition l = 2 only from side 24 up (on 8×8 images 4×4 pieces lose: 78 % vs 87 % at IPC 1
    on digits validation). Side <= 8 keeps the settings validated on 8×8 digits (the *Fourth
    search*): 200 iterations, a small queue (10 models, one trained per iteration), a push every
    5 iterations and the class-aware regulariser at IPC 1 only (above it lowered accuracy,
    96.5 → 95.6 %), as the paper lowers λ_reg for larger IPC."""
    f = ctx.facts
    out = _idm_paper(ctx)
    out.update(iterations=150, factor=2 if f.side >= 24 else 1)
    out.update(_quick_geometry(ctx))
    out["method_config"].update(queue_max=20, push_interval=10, train_steps=5, train_batch=128)
    if f.side <= 8:
        one = int(ctx.ipc) <= 1
        out.update(iterations=200, batch_real=min(64, out["batch_real"]))
        out["method_config"].update(queue_max=10, train_models=1, push_interval=5 if one else 10,
                                    ce_weight=0.5 if one else 0.0)
    return out


def _lr_img(ipc: int) -> float:
    """IDM/DM quick image lr: 0.1 per stored image, at most 1.0 (a class-mean loss gives each
    image 1/IPC of the gradient, so the step grows with IPC; digits validation, IPC 1: 0.1 ≈ 0.2
    ≫ 0.4 ≫ 1.0, 85.8 / 85.7 / 76.8 / 68.8 %; IPC 10: 1.0 > 2.0 > 0.2)."""
    return min(0.1 * max(int(ipc), 1), 1.0)


def _dm_paper(ctx: PresetContext) -> dict:
    return {
        "iterations": 20000,
        "factor": 1,
        "lr_img": 1.0,
        "momentum_img": 0.5,
        "batch_real": 256,
        "augment": DSA_STRATEGY,
        "augment_single_op": True,
        "model": "convnet",
        "model_kwargs": {"width": 128, "depth": match_depth(ctx.facts), "norm": "instance"},
        "method_config": {"queue": False, "ce_weight": 0.0},
    }


def _dm_quick(ctx: PresetContext) -> dict:
    """300 iterations on 8×8 images, 200 above (CPU minutes), with the shared quick geometry (lr_img 0.1·IPC: on digits validation,
    IPC 1, two condensation seeds: lr 0.1 86.6 %, 0.3 86.4 %, the paper's 1.0 84.6 %)."""
    out = _dm_paper(ctx)
    out.update(iterations=300 if ctx.facts.side <= 8 else 200)
    out.update(_quick_geometry(ctx))
    return out


class _ModelQueue:
    """IDM's memory-efficient model queue (push / pop / train / sample)."""

    def __init__(self, owner: "IDM") -> None:
        self.owner = owner
        self.models: list[nn.Module] = []
        self.opts: list[torch.optim.Optimizer] = []

    def new_model(self, seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        o = self.owner
        model = build_model(o.config.model, o.real.image_shape, o.real.num_classes, seed=seed,
                            **dict(o.config.model_kwargs)).to(o.device)
        opt = torch.optim.SGD(model.parameters(), lr=o.mc.net_lr, momentum=o.mc.net_momentum,
                              weight_decay=o.mc.net_weight_decay)
        _set_trainable(model, False)  # matching differentiates the images only; training switches it on
        return model, opt

    def push(self, seed: int) -> None:
        model, opt = self.new_model(seed)
        self.models.append(model)
        self.opts.append(opt)
        while len(self.models) > self.owner.mc.queue_max:
            self.models.pop(0)
            self.opts.pop(0)

    def state_dict(self) -> dict[str, Any]:
        return {"models": [m.state_dict() for m in self.models], "opts": [o.state_dict() for o in self.opts]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.models, self.opts = [], []
        for ms, os_ in zip(state["models"], state["opts"]):
            model, opt = self.new_model(0)
            model.load_state_dict(ms)
            opt.load_state_dict(os_)
            self.models.append(model)
            self.opts.append(opt)


@register_method("idm")
class IDM(Matcher):
    """IDM: distribution matching with partition & expansion, a model queue and a CE regulariser."""

    Config = IDMConfig
    presets = {"quick": _idm_quick, "paper": _idm_paper}
    inner_steps = 1
    supports_independent_ranks = True
    shard_classes = True  #: per-class losses; the queue trains on real data (engine: replicated per worker)

    def __init__(self, real, config, method_config: IDMConfig, *, device: torch.device,
                 generator: torch.Generator) -> None:
        super().__init__(real, config, method_config, device=device, generator=generator)
        self.real = real
        mc = self.mc
        if mc.queue and (mc.queue_init < 1 or mc.queue_max < 1 or mc.push_interval < 1 or mc.train_interval < 1):
            raise ConfigError(
                f"{type(self).__name__} queue_init={mc.queue_init}, queue_max={mc.queue_max}, "
                f"push_interval={mc.push_interval}, train_interval={mc.train_interval}; expected integers >= 1."
            )
        self.aug = DiffAugment(config.augment, single_op=bool(config.augment_single_op))
        self.queue = _ModelQueue(self)
        if mc.queue:
            for _ in range(mc.queue_init):
                self.queue.push(model_seed(self.gen))
        self.model: nn.Module | None = None
        self.t = 0

    def class_groups(self, num_classes: int) -> list[list[int]]:
        return [list(range(num_classes))]

    def begin_outer(self, t: int) -> None:
        self.t = t
        if not self.mc.queue:  # DM: a fresh randomly initialised network every iteration
            self.model, _ = self.queue.new_model(model_seed(self.gen))
        else:
            if t % self.mc.push_interval == 0:
                self.queue.push(model_seed(self.gen))
            k = int(torch.randint(len(self.queue.models), (1,), generator=self.gen))
            self.model = self.queue.models[k]
        self.model.eval()

    def match(self, syn: SyntheticSet, classes: Sequence[int], *,
              prefixes: Sequence[int | None] = (None,)) -> list[MatchOutput]:
        model = self.model
        xr, counts = self.real.sample_classes(classes, self.config.batch_real, self.gen)
        parts, owners = [], []
        for c in classes:
            x, o = syn.decoded(c)
            parts.append(x)
            owners.append(o)
        xs = torch.cat(parts)
        # one siamese draw for the real and synthetic images (what DiffAugment.siamese does)
        draw = self.aug.sample_draw(1, generator=self.gen, device=xr.device)
        xs = self.aug(xs, draw=draw.to(xs.device))
        use_ce = self.mc.ce_weight > 0
        fr = real_embeddings(model, xr, self.aug, draw)
        del xr
        acc = weight = None  # device tensors: no host synchronisation per step
        if use_ce:
            with torch.no_grad():
                yr = torch.repeat_interleave(torch.as_tensor(list(classes), device=fr.device),
                                             torch.as_tensor(counts, device=fr.device))
                # over the whole group: a worker of a sharded run sees only its own classes' rows
                acc = self.real.global_mean((model.classifier(fr).argmax(1) == yr).float())
            weight = (self.mc.ce_weight * self.mc.acc_scale) * acc
        fs = model.embed(xs)
        logits = model.classifier(fs) if use_ce else None
        f2 = syn.factor ** 2  # decoded rows of stored rank r: [r*f2, (r+1)*f2) (SyntheticSet.decoded)
        outs = []
        r0 = s0 = 0
        for c, nr, o in zip(classes, counts, owners):
            fr_c = fr[r0:r0 + nr]
            fs_c = fs[s0:s0 + len(o)]
            lg_c = logits[s0:s0 + len(o)] if use_ce else None
            r0 += nr
            s0 += len(o)
            real_mean = fr_c.mean(0)
            losses: dict[int | None, torch.Tensor] = {}
            cache: dict[int, torch.Tensor] = {}
            stats: dict[str, torch.Tensor] = {}  # 0-dim tensors; the engine reads them with float()

            def masked_loss(lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor | None]:
                """Mean-embedding distance of stored ranks ``lo..hi-1`` (+ the weighted CE regulariser).
                A zero weight (accuracy 0) adds exactly 0 to the loss and its gradient."""
                loss = ((real_mean - fs_c[lo * f2:hi * f2].mean(0)) ** 2).sum()
                if not use_ce:
                    return loss, None
                y = torch.full(((hi - lo) * f2,), int(c), dtype=torch.long, device=fs.device)
                ce = F.cross_entropy(lg_c[lo * f2:hi * f2], y)
                return loss + weight * ce, ce

            for p in prefixes:
                n = syn.ipc if p is None else int(p)
                if not 1 <= n <= syn.ipc:
                    raise ConfigError(f"prefix {p!r} requested from {self.name}; expected None or 1..{syn.ipc}.")
                if n not in cache:
                    cache[n], ce = masked_loss(0, n)
                    if ce is not None and n == syn.ipc:
                        stats["ce"] = ce.detach()
                losses[p] = cache[n]
            if use_ce:
                stats["acc"] = acc
            outs.append(MatchOutput(cls=int(c), losses=losses, syn_features=fs_c.detach(), syn_owner=o,
                                    real_features=fr_c, stats=stats))
        return outs

    def between_inner(self, step: int) -> None:
        mc = self.mc
        if not mc.queue or self.t % mc.train_interval != 0 or mc.train_steps < 1:
            return
        n = len(self.queue.models)
        pick = torch.randperm(n, generator=self.gen)[: min(mc.train_models, n)].tolist()
        for k in pick:
            model = self.queue.models[k]
            _set_trainable(model, True)
            try:
                train_on_real(model, self.queue.opts[k], self.real, steps=mc.train_steps,
                              batch=mc.train_batch, generator=self.gen)
            finally:
                _set_trainable(model, False)

    def state_dict(self) -> dict[str, Any]:
        return {"queue": self.queue.state_dict()} if self.mc.queue else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.mc.queue and "queue" in state:
            self.queue.load_state_dict(state["queue"])


@register_method("dm")
class DM(IDM):
    """DM: distribution matching with randomly initialised networks (IDM with its additions off)."""

    Config = DMConfig
    presets = {"quick": _dm_quick, "paper": _dm_paper}
