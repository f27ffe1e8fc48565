"""IDC: gradient matching with multi-formation and networks trained on real data.

Kim et al., "Dataset Condensation via Efficient Synthetic-Data Parameterization" (ICML 2022;
``shared/papers/efficient-synthetic-data-parameterization-idc.md``, Sec. 4.3, Alg. 1, App. C.1).

Per outer iteration a ConvNet is re-initialised; then ``inner_steps`` (M) times:

1. for every class ``c``: a real batch of class ``c`` and the *decoded* synthetic images of
   ``c`` get the same augmentation draw (siamese); the distance between the gradients of the
   cross-entropy w.r.t. the **conv weights** (no biases, norms or classifier) on the real and
   synthetic batch is minimised w.r.t. the synthetic images (MSE = sum of squares, or L1);
2. the network takes ``net_samples`` real images' worth of SGD steps (strong augmentation +
   CutMix), so it stays in the early phase of training on *real* data (the paper's decoupling).

Prefix losses (MDC) reuse the forward pass: the per-sample cross-entropy of the synthetic rows
is computed once, and for each prefix ``n`` its mean over rows with ``owner < n`` is
differentiated (``create_graph=True``) and compared with the real gradients. The rows are
rank-major, so the forward runs in blocks cut at the prefix boundaries (per-sample norms make
the rows independent) and a prefix's gradient only traverses its own rows.
``batch_syn_max`` caps the stored images of a class per step (a random subset of ranks).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..augment import DiffAugment, cutmix
from ..errors import ConfigError
from ..formation import decode_torch
from ..models import build_model
from .base import Matcher, MatchOutput, SyntheticSet
from ..facts import match_depth
from .engine import register_method
from .presets import PresetContext

__all__ = ["IDCConfig", "IDC", "matched_weights", "train_on_real", "model_seed"]

# The reference IDC code optimises its synthetic images in pixel space [0, 1]: its condensation
# loader yields un-normalised images (ToTensor only) and the normalisation is the first op of
# the matching augmentation. Its image learning rates therefore hold with lr_img_space="pixel"
# (at the same rate a normalised-space step moves a pixel ~1/(std_ref·std) ≈ 19× less per
# step on CIFAR-10, measured: docs/condensation.md, *Fidelity to the reference*).


def model_seed(generator: torch.Generator) -> int:
    """A seed for a model initialisation, drawn from ``generator``."""
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())


def matched_weights(model: nn.Module) -> list[torch.Tensor]:
    """The parameters whose gradients IDC matches: conv weights (all weight matrices of the
    hidden layers when a model has no convolutions, e.g. the MLP)."""
    convs = [m.weight for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    if convs:
        return convs
    head = getattr(model, "classifier", None)
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear) and m is not head]


def train_on_real(model: nn.Module, opt: torch.optim.Optimizer, real, *, steps: int, batch: int,
                  generator: torch.Generator, augment: DiffAugment | None = None,
                  cutmix_prob: float = 0.0, cutmix_beta: float = 1.0) -> float:
    """``steps`` SGD steps on random real batches (per-sample augmentation, CutMix with
    probability ``cutmix_prob``). Returns the training accuracy on the (un-mixed) labels."""
    model.train()
    correct, seen = 0, 0
    for _ in range(int(steps)):
        x, y = real.sample(batch, generator)
        if augment is not None and augment.enabled:
            x = augment(x, generator=generator)
        use_mix = cutmix_prob > 0 and float(torch.rand(1, generator=generator)) < cutmix_prob
        if use_mix:
            x, ya, yb, lam = cutmix(x, y, beta=cutmix_beta, generator=generator)
            out = model(x)
            loss = lam * F.cross_entropy(out, ya) + (1.0 - lam) * F.cross_entropy(out, yb)
        else:
            out = model(x)
            loss = F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        correct += int((out.detach().argmax(1) == y).sum())
        seen += len(y)
    return correct / max(seen, 1)


@dataclass
class IDCConfig:
    """IDC's own hyper-parameters (engine settings such as lr_img, factor, batch_real,
    augment live in :class:`~edgecond.condense.engine.CondenseConfig`)."""

    inner_steps: int = 100  #: M: image updates (per class) per network re-initialisation
    metric: str = "mse"  #: gradient distance: "mse" (sum of squares, CIFAR-10) or "l1" (others)
    net_lr: float = 0.01
    net_momentum: float = 0.9
    net_weight_decay: float = 5e-4
    net_batch: int = 64  #: batch size of the network's training on real data
    net_samples: int = 500  #: real images the network trains on after each inner step
    net_augment: str = "color_crop"  #: per-sample augmentation of that training (cutout off: CutMix)
    cutmix_prob: float = 0.5
    cutmix_beta: float = 1.0
    #: at most this many *stored* images of a class enter one matching step (a random subset of
    #: ranks, as the reference's ``batch_syn_max``); 0 = all. Only matters for IPC > 128.
    batch_syn_max: int = 128


#: The paper's per-dataset settings (App. C.1 and the reference's defaults), by exact registry
#: name (:data:`edgecond.facts.PAPER_DATASETS`); every other dataset gets ``_PAPER_DEFAULT``.
PAPER_TABLE: dict[str, dict[str, Any]] = {
    "cifar10": {"metric": "mse", "net_samples": 2000, "lr": 5e-3},
    "cifar100": {"metric": "mse", "net_samples": 500, "lr": 5e-3},
    "svhn": {"metric": "mse", "net_samples": 500, "lr": 5e-3},
}
_PAPER_DEFAULT: dict[str, Any] = {"metric": "l1", "net_samples": 500, "lr": 1e-4}


def _paper(ctx: PresetContext) -> dict:
    """The published settings (:data:`PAPER_TABLE`); lr_img scales with IPC as in the reference."""
    row = PAPER_TABLE.get(ctx.paper or "", _PAPER_DEFAULT)
    ratio = ctx.ipc / 10.0
    mc: dict[str, Any] = {"inner_steps": 100, "net_lr": 0.01, "net_samples": row["net_samples"],
                          "metric": row["metric"]}
    lr = row["lr"]
    return {
        "iterations": 2000,
        "factor": 2,
        "lr_img": lr * ratio,
        "lr_img_space": "pixel",
        "momentum_img": 0.5,
        "batch_real": 64,
        "augment": "color_crop_cutout",
        "model": "convnet",
        "model_kwargs": {"width": 128, "depth": match_depth(ctx.facts), "norm": "instance"},
        "method_config": mc,
    }


def _quick(ctx: PresetContext) -> dict:
    """CPU minutes, from the data's geometry (never its name; docs/condensation.md, *Quick presets*).

    Images of side <= 8 (digits-sized): 20 outer iterations of 10 inner steps, L1, width 128,
    the validated lr 3e-4·IPC (lr ∝ IPC like the reference: per-image CE gradients shrink ~1/IPC).
    Larger images: a width-32 matching ConvNet (the cost of a step grows with width²; width 128
    costs ~9× more per step on 32×32), factor 2 from side 24 up (the paper's f on 28×28/32×32),
    and a budget of outer iterations that keeps a 10-class IPC-10 run of <= 32×32 images within
    about 3 CPU minutes."""
    f = ctx.facts
    depth = match_depth(f)
    batch_real = max(1, min(64, f.train_per_class))
    if f.side <= 8:
        return {
            "iterations": 20,
            "factor": 1,
            "lr_img": 3e-4 * max(ctx.ipc, 1),
            "momentum_img": 0.5,
            "batch_real": min(32, batch_real),
            "augment": "color_crop_cutout",
            "model": "convnet",
            "model_kwargs": {"width": 128, "depth": depth, "norm": "instance"},
            "method_config": {"inner_steps": 10, "metric": "l1", "net_samples": 128, "net_batch": 64},
        }
    return {
        "iterations": 12,
        "factor": 2 if f.side >= 24 else 1,
        "lr_img": 3e-4 * max(ctx.ipc, 1),
        "momentum_img": 0.5,
        "batch_real": batch_real,
        "augment": "color_crop_cutout",
        "model": "convnet",
        "model_kwargs": {"width": 32, "depth": depth, "norm": "instance"},
        "method_config": {"inner_steps": 10, "metric": "l1", "net_samples": 256, "net_batch": 64},
    }


@register_method("idc")
class IDC(Matcher):
    """IDC: gradient matching (conv weights, MSE/L1) with networks trained on real data."""

    Config = IDCConfig
    presets = {"quick": _quick, "paper": _paper}
    supports_independent_ranks = True
    shard_classes = True  #: one class per group; the network trains on real data (engine: replicated per worker)

    def __init__(self, real, config, method_config: IDCConfig, *, device: torch.device,
                 generator: torch.Generator) -> None:
        super().__init__(real, config, method_config, device=device, generator=generator)
        self.real = real
        if self.mc.metric not in ("mse", "l1"):
            raise ConfigError(f"IDC metric={self.mc.metric!r}; expected 'mse' or 'l1'.")
        if (self.mc.inner_steps < 1 or self.mc.net_batch < 1 or self.mc.net_samples < 0
                or self.mc.batch_syn_max < 0):
            raise ConfigError(
                f"IDC inner_steps={self.mc.inner_steps}, net_batch={self.mc.net_batch}, "
                f"net_samples={self.mc.net_samples}, batch_syn_max={self.mc.batch_syn_max}; expected "
                "inner_steps, net_batch >= 1, net_samples >= 0 and batch_syn_max >= 0 (0 = all ranks)."
            )
        self.inner_steps = int(self.mc.inner_steps)
        self.aug = DiffAugment(config.augment, single_op=bool(config.augment_single_op))
        self.net_aug = DiffAugment(self.mc.net_augment)
        self.model: nn.Module | None = None
        self.opt: torch.optim.Optimizer | None = None
        self.weights: list[torch.Tensor] = []
        self._batch_coupled = False

    def begin_outer(self, t: int) -> None:
        self.model = build_model(self.config.model, self.real.image_shape, self.real.num_classes,
                                 seed=model_seed(self.gen), **dict(self.config.model_kwargs)).to(self.device)
        self.model.train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=self.mc.net_lr, momentum=self.mc.net_momentum,
                                   weight_decay=self.mc.net_weight_decay)
        self.weights = matched_weights(self.model)
        self._batch_coupled = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.model.modules())

    def _dist(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = a - b
        return (d * d).sum() if self.mc.metric == "mse" else d.abs().sum()

    def _ranks(self, ipc: int, prefixes: Sequence[int | None]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Stored ranks of one class that enter this step, and which of them the full-set loss
        uses (``None`` = all ranks, both losses exact).

        With ``ipc > batch_syn_max`` the full-set loss sees a random ``batch_syn_max`` ranks; a
        requested prefix ``n <= batch_syn_max`` (the MDC subset) is added whole so its loss stays
        exact; a longer prefix uses the sampled ranks below ``n``."""
        m = int(self.mc.batch_syn_max)
        if m <= 0 or ipc <= m:
            return None
        pick = torch.randperm(ipc, generator=self.gen)[:m]
        ranks = pick
        exact = [int(p) for p in prefixes if p is not None and int(p) <= m]
        if exact:
            ranks = torch.cat([pick, torch.arange(max(exact))])
        ranks = torch.unique(ranks)  # sorted
        return ranks, torch.isin(ranks, pick)

    def _cuts(self, owner: torch.Tensor, prefixes: Sequence[int | None], ipc: int) -> list[int]:
        """Row boundaries ``[0, k_1, ..., R]`` of the forward blocks: one block when only the full
        set is asked for, or when the model normalises over the batch (batch norm couples rows)."""
        rows = len(owner)
        if self._batch_coupled:
            return [0, rows]
        ks = {int((owner < int(p)).sum()) for p in prefixes if p is not None and int(p) < ipc}
        return [0, *sorted(k for k in ks if 0 < k < rows), rows]

    def match(self, syn: SyntheticSet, classes: Sequence[int], *,
              prefixes: Sequence[int | None] = (None,)) -> list[MatchOutput]:
        model = self.model
        outs = []
        for p in prefixes:
            if p is not None and not 1 <= int(p) <= syn.ipc:
                raise ConfigError(f"prefix {p!r} requested from IDC; expected None or 1..{syn.ipc}.")
        f2 = syn.factor ** 2
        for c in classes:
            xr = self.real.sample_class(c, self.config.batch_real, self.gen)
            sub = self._ranks(syn.ipc, prefixes)
            full_rows = None
            if sub is None:
                xs, owner = syn.decoded(c)
            else:
                ranks, in_full = (t.to(syn.images.device) for t in sub)
                xs = decode_torch(syn.images[c, ranks], syn.factor)
                owner = ranks.repeat_interleave(f2)
                full_rows = in_full.repeat_interleave(f2)
            xr, xs = self.aug.siamese(xr, xs, generator=self.gen)
            fr = model.embed(xr)
            yr = torch.full((len(xr),), c, dtype=torch.long, device=xr.device)
            g_real = torch.autograd.grad(F.cross_entropy(model.classifier(fr), yr), self.weights)
            g_real = [g.detach() for g in g_real]
            # Rows are rank-major (owner ascending), so a prefix is a leading block of rows. With a
            # per-sample norm the rows are independent: forward the blocks between prefix
            # boundaries separately, and a prefix's gradient (and its second-order backward)
            # only traverses its own blocks: MDC's extra cost scales with the MLS size.
            cuts = self._cuts(owner, prefixes, syn.ipc)
            f_parts = [model.embed(xs[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
            fs = torch.cat(f_parts) if len(f_parts) > 1 else f_parts[0]
            label = torch.full((len(xs),), c, dtype=torch.long, device=xs.device)
            ce_parts = [F.cross_entropy(model.classifier(f), label[: len(f)], reduction="none") for f in f_parts]
            losses: dict[int | None, torch.Tensor] = {}
            cache: dict[int, torch.Tensor] = {}
            for p in prefixes:
                n = syn.ipc if p is None else int(p)
                if n not in cache:
                    if full_rows is not None and n == syn.ipc:
                        ce_n = torch.cat(ce_parts)[full_rows]
                    else:
                        k = int((owner < n).sum())
                        if k == 0:  # a prefix longer than batch_syn_max none of whose ranks was drawn
                            cache[n] = xs.sum() * 0.0
                            losses[p] = cache[n]
                            continue
                        j = cuts.index(k) if k in cuts else len(cuts) - 1
                        ce_n = torch.cat(ce_parts[:j]) if j > 1 else ce_parts[0]
                        ce_n = ce_n[owner[: len(ce_n)] < n]
                    g_syn = torch.autograd.grad(ce_n.mean(), self.weights, create_graph=True)
                    cache[n] = sum(self._dist(gs, gr) for gs, gr in zip(g_syn, g_real))
                losses[p] = cache[n]
            outs.append(MatchOutput(cls=int(c), losses=losses, syn_features=fs.detach(), syn_owner=owner,
                                    real_features=fr.detach()))
        return outs

    def between_inner(self, step: int) -> None:
        if step + 1 >= self.inner_steps:  # the network is re-initialised next: skip wasted training
            return
        steps = math.ceil(self.mc.net_samples / self.mc.net_batch)
        if steps:
            train_on_real(self.model, self.opt, self.real, steps=steps, batch=self.mc.net_batch,
                          generator=self.gen, augment=self.net_aug, cutmix_prob=self.mc.cutmix_prob,
                          cutmix_beta=self.mc.cutmix_beta)
