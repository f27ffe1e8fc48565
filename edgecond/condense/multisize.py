"""Multisize Dataset Condensation (MDC): one condensation whose every prefix is a good set.

MDC (He et al., "Multisize Dataset Condensation", ICLR 2024; ``shared/papers/
multisize-dataset-condensation.md``) adds an *adaptive subset loss* to a base matcher (IDC, IDM):

* **Subset loss** (Eq. 4): besides the base loss of all ``N`` stored images per class, every image
  update also minimises ``λ`` × the matching loss of one prefix ``S[n*]`` (the first ``n*`` stored
  images of each class), the *Most Learnable Subset* (MLS). The matcher computes that prefix
  loss from the same forward pass as the base loss (``prefixes=(None, n*)``).
* **Feature distance** (Eq. 5): for every candidate prefix ``n ∈ [1, N-1]``, the MSE between the
  mean last-layer feature of the prefix's synthetic images and the mean feature of the real batch,
  read from the same forward pass (rows whose stored rank ``owner < n``), averaged over the inner
  loop of one outer iteration.
* **MLS selection** (Eqs. 8-9): every ``Δt`` outer iterations, the rate of change
  ``R(n, t) = |F_t(n) − F_{t−Δt}(n)| / Δt`` is computed and the MLS becomes ``argmax_n R``.
  The first MLS is ``S[1]`` (paper B.2); the first reference distance is that of the first outer
  iteration (paper Table 7 compares ``t = 1`` with ``t = 50``).
* **Freezing** (Eq. 10): when the new MLS is larger than the previous one, the previous MLS
  (ranks ``< previous size``) is frozen: no gradient, and its values are copied back after each
  optimiser step so momentum cannot move them either. When the new MLS is smaller, everything is
  updated again. When it is the same size, the freezing state is kept ("otherwise, it remains
  unchanged", Sec. 3.3.2).
* **Class-wise MLS** (appendix B.6, optional): one MLS (and one frozen prefix) per class, chosen
  from that class's own distances.

Subsets are defined on *stored* images (a prefix ``n`` holds all ``f²`` decoded parts of ranks
``0..n-1``), the same prefix rule as the buffer's. The selection logic is split into small pure
functions (:func:`prefix_feature_distances`, :func:`rate_of_change`, :func:`select_mls`,
:func:`freeze_after`) that the tests drive with hand-made distance sequences; :class:`MultisizeHooks`
wires them into the engine through :class:`~edgecond.condense.base.EngineHooks`.
"""
from __future__ import annotations

import dataclasses
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..errors import CondenseError, ConfigError
from ..registry import Registry
from .base import EngineHooks, MatchOutput, SyntheticSet

__all__ = [
    "MDCConfig",
    "MultisizeHooks",
    "FeatureDistanceMeter",
    "prefix_feature_distances",
    "rate_of_change",
    "select_mls",
    "freeze_after",
    "build_hooks",
    "HOOKS",
    "FEATURE_METRICS",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# configuration


@dataclass
class MDCConfig:
    """Hyper-parameters of the multisize wrapper (defaults: the paper's CIFAR/SVHN settings).

    Attributes:
        delta_t: Δt, outer iterations between two MLS selections (paper: 100 for CIFAR-10/100 and
            SVHN, 50 for ImageNet-10).
        subset_weight: λ, weight of the MLS prefix loss added to the base loss (Eq. 4 uses 1).
        class_wise: one MLS per class chosen from that class's distances (appendix B.6) instead of
            one MLS for all classes chosen from the class-averaged distances.
        metric: feature distance, a name in :data:`FEATURE_METRICS`; ``"mse"`` is the MSE between
            the mean last-layer feature of a prefix and the mean feature of the real batch.
        freeze: apply the freezing rule of Eq. 10 (on by default; the paper's ablation shows the
            IPC1 accuracy drops without it).
        initial_mls: the MLS before the first selection (paper B.2: 1, the smallest subset).
        window: outer iterations whose distances are averaged into ``F_t`` (1 = the paper: the
            distance of outer iteration ``t`` alone, averaged over its inner loop). A longer window
            damps the noise of re-initialised networks in short runs.
    """

    delta_t: int = 100
    subset_weight: float = 1.0
    class_wise: bool = False
    metric: str = "mse"
    freeze: bool = True
    initial_mls: int = 1
    window: int = 1

    def validate(self, ipc: int) -> None:
        """Raise :class:`ConfigError` if a value cannot work for ``ipc`` stored images per class."""
        if int(self.delta_t) < 1:
            raise ConfigError(
                f"MDC delta_t={self.delta_t!r}; expected an integer ≥ 1 (outer iterations between "
                "MLS selections). Set e.g. delta_t=100 (paper) or a smaller value for short runs."
            )
        if not float(self.subset_weight) >= 0.0:
            raise ConfigError(
                f"MDC subset_weight={self.subset_weight!r}; expected a number ≥ 0 (λ of Eq. 4, "
                "default 1)."
            )
        if int(self.window) < 1:
            raise ConfigError(f"MDC window={self.window!r}; expected an integer ≥ 1 (default 1).")
        if ipc > 1 and not 1 <= int(self.initial_mls) <= ipc - 1:
            raise ConfigError(
                f"MDC initial_mls={self.initial_mls!r} with ipc={ipc}; expected 1..{ipc - 1} "
                "(the MLS is a proper prefix). Use the default 1."
            )
        FEATURE_METRICS.get(self.metric)


# --------------------------------------------------------------------------------------------
# pure MLS logic


def _mse_of_means(prefix_means: torch.Tensor, real_mean: torch.Tensor) -> torch.Tensor:
    return ((prefix_means - real_mean.unsqueeze(0)) ** 2).mean(dim=1)


def _l2_of_means(prefix_means: torch.Tensor, real_mean: torch.Tensor) -> torch.Tensor:
    return ((prefix_means - real_mean.unsqueeze(0)) ** 2).sum(dim=1).sqrt()


FEATURE_METRICS: Registry[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = Registry(
    "MDC feature metric", hint="Set MDCConfig.metric to one of these."
)
FEATURE_METRICS.register("mse", _mse_of_means)
FEATURE_METRICS.register("l2", _l2_of_means)


@torch.no_grad()
def prefix_feature_distances(
    syn_features: torch.Tensor,
    syn_owner: torch.Tensor,
    real_features: torch.Tensor,
    ipc: int,
    *,
    metric: str = "mse",
) -> torch.Tensor:
    """Feature distance of every prefix ``n = 1..ipc-1`` from one forward pass (Eq. 5).

    ``syn_features`` ``[R, D]`` are the synthetic features of one class with ``syn_owner[r]`` the
    stored rank of row ``r``; prefix ``n`` is the rows with ``owner < n``. The prefix mean is read
    from cumulative per-rank sums, so all ``ipc-1`` distances cost one pass over the rows.
    Returns a float64 tensor ``[ipc-1]`` (entry ``n-1`` is prefix ``n``); a prefix with no rows
    in this batch gets NaN (it is skipped when averaging).
    """
    if ipc < 2:
        return torch.zeros(0, dtype=torch.float64)
    feats = syn_features.detach().reshape(syn_features.shape[0], -1).to(torch.float64)
    real = real_features.detach().reshape(real_features.shape[0], -1).to(torch.float64)
    owner = syn_owner.detach().to(device=feats.device, dtype=torch.long)
    keep = owner < ipc - 1
    feats, owner = feats[keep], owner[keep]
    sums = torch.zeros(ipc - 1, feats.shape[1], dtype=torch.float64, device=feats.device)
    sums.index_add_(0, owner, feats)
    counts = torch.zeros(ipc - 1, dtype=torch.float64, device=feats.device)
    counts.index_add_(0, owner, torch.ones_like(owner, dtype=torch.float64))
    csum, ccount = sums.cumsum(0), counts.cumsum(0)
    means = csum / ccount.clamp_min(1.0).unsqueeze(1)
    dist = FEATURE_METRICS.get(metric)(means, real.mean(dim=0).to(feats.device))
    dist = torch.where(ccount > 0, dist, torch.full_like(dist, float("nan")))
    return dist.cpu()


def rate_of_change(previous: torch.Tensor, current: torch.Tensor, delta_t: int) -> torch.Tensor:
    """``R(n, t) = |F_t(n) − F_{t−Δt}(n)| / Δt`` (Eq. 8), elementwise over the last dimension."""
    return (torch.as_tensor(current, dtype=torch.float64) - torch.as_tensor(previous, dtype=torch.float64)).abs() / float(
        delta_t
    )


def select_mls(rates: torch.Tensor) -> torch.Tensor | int:
    """MLS size ``argmax_n R(n, t)`` (Eq. 9), 1-based (entry ``n-1`` of ``rates`` is prefix ``n``).

    ``rates`` ``[N-1]`` → an ``int``; ``[K, N-1]`` (class-wise) → a long tensor ``[K]``. NaN rates
    (a prefix never seen) never win; ties go to the smaller prefix.
    """
    r = torch.as_tensor(rates, dtype=torch.float64)
    r = torch.nan_to_num(r, nan=-1.0)
    best = r.argmax(dim=-1) + 1  # argmax returns the first maximum: ties → smaller prefix
    return int(best) if r.dim() == 1 else best.long()


def freeze_after(previous_mls: int, new_mls: int, frozen: int, *, enabled: bool = True) -> int:
    """Number of frozen leading ranks after an MLS change (Eq. 10).

    Larger MLS → freeze the previous MLS (ranks ``< previous_mls``); smaller MLS → update
    everything (0); same size → keep ``frozen``. ``enabled=False`` never freezes.
    """
    if not enabled:
        return 0
    if new_mls > previous_mls:
        return int(previous_mls)
    if new_mls < previous_mls:
        return 0
    return int(frozen)


class FeatureDistanceMeter:
    """Sums per-class prefix distances over the inner loop of one outer iteration."""

    def __init__(self, num_classes: int, ipc: int) -> None:
        self.num_classes, self.ipc = int(num_classes), int(ipc)
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(self.num_classes, max(self.ipc - 1, 0), dtype=torch.float64)
        self.counts = torch.zeros_like(self.sums)

    def add(self, cls: int, distances: torch.Tensor) -> None:
        d = torch.as_tensor(distances, dtype=torch.float64)
        ok = ~torch.isnan(d)
        self.sums[cls] += torch.where(ok, d, torch.zeros_like(d))
        self.counts[cls] += ok.to(torch.float64)

    @property
    def empty(self) -> bool:
        return bool(self.counts.sum() == 0)

    def mean(self) -> torch.Tensor:
        """``[K, N-1]`` average distance (NaN where a prefix of a class was never seen)."""
        out = self.sums / self.counts.clamp_min(1.0)
        return torch.where(self.counts > 0, out, torch.full_like(out, float("nan")))


# --------------------------------------------------------------------------------------------
# the engine hooks


class MultisizeHooks(EngineHooks):
    """MDC as :class:`EngineHooks`: adaptive subset loss, MLS selection and freezing.

    Args:
        config: the :class:`MDCConfig`.
        ipc: ``N``, stored images per class of the condensation.
        num_classes: ``K``.

    The engine calls ``bind(syn)`` once, then per image update ``prefixes`` → ``combine`` →
    ``mask_grad`` → (optimiser step) → ``after_step``, and ``end_outer(t)`` after every outer
    iteration. ``metadata()`` returns the MLS history for the buffer.
    """

    name = "mdc"

    def __init__(self, config: MDCConfig | None = None, *, ipc: int, num_classes: int) -> None:
        self.config = config or MDCConfig()
        if int(ipc) < 1 or int(num_classes) < 1:
            raise ConfigError(
                f"MDC got ipc={ipc!r}, num_classes={num_classes!r}; expected positive integers."
            )
        self.config.validate(int(ipc))
        self.ipc, self.num_classes = int(ipc), int(num_classes)
        start = min(int(self.config.initial_mls), max(self.ipc - 1, 1))
        self.mls = [start] * self.num_classes  # current MLS size per class (all equal unless class-wise)
        self.frozen = [0] * self.num_classes  # frozen leading ranks per class
        self.meter = FeatureDistanceMeter(self.num_classes, self.ipc)
        self._recent: deque[torch.Tensor] = deque(maxlen=int(self.config.window))
        self._reference: torch.Tensor | None = None  # F at the previous selection, [K, N-1]
        self._reference_t: int | None = None
        self.history: list[dict[str, Any]] = []
        self._syn: SyntheticSet | None = None
        self._snapshot: torch.Tensor | None = None  # values of the frozen ranks, [K, max_frozen, ...]
        self._snapshot_frozen: list[int] | None = None
        self.last_distances: torch.Tensor | None = None

    # -- helpers ---------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """MDC does nothing when ``ipc == 1`` (there is no proper prefix)."""
        return self.ipc > 1

    def _take_snapshot(self) -> None:
        if self._syn is None or max(self.frozen) == 0:
            self._snapshot, self._snapshot_frozen = None, None
            return
        m = max(self.frozen)
        self._snapshot = self._syn.images.detach()[:, :m].clone()
        self._snapshot_frozen = list(self.frozen)

    # -- engine hooks ----------------------------------------------------------------------------
    def bind(self, syn: SyntheticSet) -> None:
        if tuple(syn.images.shape[:2]) != (self.num_classes, self.ipc):
            raise CondenseError(
                f"MDC hooks were built for {self.num_classes} classes × ipc {self.ipc} but the "
                f"synthetic set has shape {tuple(syn.images.shape[:2])}; build the hooks with the "
                "condensation's ipc and number of classes."
            )
        self._syn = syn
        self._take_snapshot()

    def begin_outer(self, t: int) -> None:
        self.meter.reset()
        if self._syn is not None and max(self.frozen) > 0 and self._snapshot_frozen != self.frozen:
            self._take_snapshot()

    def prefixes(self, classes: Sequence[int]) -> tuple[int | None, ...]:
        if not self.active:
            return (None,)
        sizes = sorted({self.mls[c] for c in classes})
        return (None, *sizes)

    def combine(self, outputs: Sequence[MatchOutput]) -> torch.Tensor:
        terms = []
        lam = float(self.config.subset_weight)
        for out in outputs:
            loss = out.losses[None]
            if self.active:
                n = self.mls[out.cls]
                if n not in out.losses:
                    raise CondenseError(
                        f"the matcher returned losses for prefixes {sorted(map(str, out.losses))} of "
                        f"class {out.cls}, expected also prefix {n} (the MLS); a matcher used with "
                        "MDC must compute every prefix requested in match(..., prefixes=...)."
                    )
                if lam:
                    loss = loss + lam * out.losses[n]
                self._record(out)
            terms.append(loss)
        return torch.stack(terms).sum()

    def _record(self, out: MatchOutput) -> None:
        if out.syn_features is None or out.syn_owner is None or out.real_features is None:
            raise CondenseError(
                f"the matcher returned no features for class {out.cls} (syn_features, syn_owner "
                "and real_features are needed); MDC reads the prefix feature distances from them. "
                "Use a matcher that fills MatchOutput's features (idc, idm, dm)."
            )
        d = prefix_feature_distances(
            out.syn_features, out.syn_owner, out.real_features, self.ipc, metric=self.config.metric
        )
        self.meter.add(out.cls, d)

    def all_reduce(self, sum_: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Sum this outer iteration's per-class distances over the workers of a sharded run (the
        engine calls it before :meth:`end_outer`): each class has one owner, the others hold
        zeros, so every worker then holds the one-process meter and picks the same MLS."""
        sum_(self.meter.sums)
        sum_(self.meter.counts)

    def mask_grad(self, grad: torch.Tensor | None) -> None:
        if grad is None or not self.active:
            return
        for c, f in enumerate(self.frozen):
            if f:
                grad[c, :f] = 0

    @torch.no_grad()
    def after_step(self, syn: SyntheticSet) -> None:
        if not self.active or max(self.frozen) == 0:
            return
        if self._syn is None:  # engine without bind(): bind now (best effort)
            self._syn = syn
        if self._snapshot is None or self._snapshot_frozen != self.frozen:
            self._take_snapshot()
            return
        for c, f in enumerate(self.frozen):
            if f:
                syn.images.data[c, :f] = self._snapshot[c, :f]

    def end_outer(self, t: int) -> None:
        if not self.active:
            return
        if self.meter.empty:
            return
        current = self.meter.mean()
        self._recent.append(current)
        smoothed = torch.stack(list(self._recent)).nanmean(dim=0)
        self.last_distances = smoothed
        if self._reference is None:
            self._reference, self._reference_t = smoothed, t
            if not self.history:
                self._log_entry(t, selected=False)
            return
        if (t + 1) % int(self.config.delta_t) != 0 or self._reference_t == t:
            return
        rates = rate_of_change(self._reference, smoothed, int(self.config.delta_t))
        self._select(t, rates)
        self._reference, self._reference_t = smoothed, t

    def _select(self, t: int, rates: torch.Tensor) -> None:
        """Apply Eqs. 9-10 given the ``[K, N-1]`` rates of outer iteration ``t``."""
        if self.config.class_wise:
            new = [int(v) for v in select_mls(rates)]
        else:
            new = [select_mls(rates.nanmean(dim=0))] * self.num_classes
        previous = list(self.mls)
        self.frozen = [
            freeze_after(p, n, f, enabled=self.config.freeze) for p, n, f in zip(previous, new, self.frozen)
        ]
        self.mls = new
        self._take_snapshot()
        self._log_entry(t, selected=True)
        if self.config.class_wise:
            log.info("MDC t=%d: MLS per class %s, frozen ranks %s", t, self.mls, self.frozen)
        else:
            frozen = f"ranks 0..{self.frozen[0] - 1} frozen" if self.frozen[0] else "nothing frozen"
            log.info("MDC t=%d: MLS %d (was %d), %s", t, self.mls[0], previous[0], frozen)

    def _log_entry(self, t: int, *, selected: bool) -> None:
        entry: dict[str, Any] = {"t": int(t), "selected": bool(selected)}
        if self.config.class_wise:
            entry["mls"], entry["frozen"] = list(self.mls), list(self.frozen)
        else:
            entry["mls"], entry["frozen"] = int(self.mls[0]), int(self.frozen[0])
        self.history.append(entry)

    # -- results and checkpoints -----------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        return {
            "mdc": {
                "config": dataclasses.asdict(self.config),
                "mls": list(self.mls) if self.config.class_wise else int(self.mls[0]),
                "frozen": list(self.frozen) if self.config.class_wise else int(self.frozen[0]),
                "history": [dict(h) for h in self.history],
            }
        }

    def state_dict(self) -> dict[str, Any]:
        def as_list(x: torch.Tensor | None):
            return None if x is None else x.tolist()

        return {
            "mls": list(self.mls),
            "frozen": list(self.frozen),
            "reference": as_list(self._reference),
            "reference_t": self._reference_t,
            "recent": [r.tolist() for r in self._recent],
            "history": [dict(h) for h in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            mls, frozen = [int(v) for v in state["mls"]], [int(v) for v in state["frozen"]]
        except (KeyError, TypeError, ValueError):
            raise CondenseError(
                "the checkpoint's MDC state is missing 'mls'/'frozen'; expected a state written by "
                "MultisizeHooks.state_dict(). Resume with the same --method mdc settings or start over."
            ) from None
        if len(mls) != self.num_classes or len(frozen) != self.num_classes:
            raise CondenseError(
                f"the checkpoint's MDC state has {len(mls)} classes, expected {self.num_classes}; "
                "resume with the same dataset and ipc or start over."
            )
        self.mls, self.frozen = mls, frozen
        ref = state.get("reference")
        self._reference = None if ref is None else torch.tensor(ref, dtype=torch.float64)
        self._reference_t = state.get("reference_t")
        self._recent = deque(
            (torch.tensor(r, dtype=torch.float64) for r in state.get("recent", [])),
            maxlen=int(self.config.window),
        )
        self.history = [dict(h) for h in state.get("history", [])]
        self._snapshot, self._snapshot_frozen = None, None
        if self._syn is not None:
            self._take_snapshot()


# --------------------------------------------------------------------------------------------
# factory used by the engine / CLI

HOOKS: Registry[Callable[..., EngineHooks]] = Registry(
    "condensation hooks", hint="Use 'none' for a plain condensation or 'mdc' for multisize."
)


@HOOKS.register("none")
def _plain_hooks(config: dict, *, ipc: int, num_classes: int) -> EngineHooks:
    if config:
        raise ConfigError(
            f"hooks 'none' take no settings, got {sorted(config)}; drop them or use hooks 'mdc'."
        )
    return EngineHooks()


@HOOKS.register("mdc")
def _mdc_hooks(config: dict, *, ipc: int, num_classes: int) -> EngineHooks:
    fields = {f.name for f in dataclasses.fields(MDCConfig)}
    unknown = sorted(set(config) - fields)
    if unknown:
        raise ConfigError(
            f"unknown MDC setting(s) {unknown}; expected some of {sorted(fields)} "
            "(see edgecond.condense.multisize.MDCConfig)."
        )
    return MultisizeHooks(MDCConfig(**config), ipc=ipc, num_classes=num_classes)


def build_hooks(name: str | None, config: dict | None = None, *, ipc: int, num_classes: int) -> EngineHooks:
    """Engine hooks by name: ``"none"`` (plain condensation) or ``"mdc"`` (multisize).

    ``config`` holds :class:`MDCConfig` fields for ``"mdc"``; unknown names or fields raise
    :class:`~edgecond.errors.ConfigError`.
    """
    factory = HOOKS.get(name or "none")
    return factory(dict(config or {}), ipc=int(ipc), num_classes=int(num_classes))
