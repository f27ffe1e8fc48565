"""The interfaces of the condensation engine: methods, matchers, hooks.

Three kinds of objects meet in :func:`edgecond.condense.engine.condense`:

* a :class:`Selector` picks real images (``random``, ``herding``) — no optimisation;
* a :class:`Matcher` (``idc``, ``idm``, ``dm``) computes, for a group of classes, the loss
  between real data and the decoded synthetic images, plus the last-layer features of the
  synthetic images from the *same* forward pass;
* :class:`EngineHooks` change how the engine combines losses and masks image gradients. The
  default hooks sum the full-set losses. The multisize wrapper (MDC,
  ``edgecond/condense/multisize.py``) is a hooks object: it asks the matcher for the loss of one
  extra prefix (the Most Learnable Subset), reads feature distances of every prefix from
  :class:`MatchOutput`, picks the MLS every Δt outer iterations and freezes ranks (Eq. 10).

Subsets are defined on *stored* images: prefix ``n`` of class ``c`` is stored ranks ``0..n-1``
with all their ``factor**2`` decoded parts.

The engine loop (pseudo code)::

    hooks.bind(syn)                                    # after init or resume, before any step
    for t in range(start, iterations):
        matcher.begin_outer(t); hooks.begin_outer(t)
        for i in range(matcher.inner_steps):
            for group in matcher.class_groups(num_classes):
                outs = hooks.match(matcher, syn, group)  # default: matcher.match(syn, group,
                                                       #   prefixes=hooks.prefixes(group))
                loss = hooks.combine(outs)             # default: sum of out.losses[None]
                opt.zero_grad(); loss.backward()
                hooks.mask_grad(syn.images.grad)       # default: nothing frozen
                opt.step(); syn.clamp_()
                hooks.after_step(syn)                  # MDC: put frozen ranks back (momentum)
            matcher.between_inner(i)                   # e.g. IDC trains its network on real data
        hooks.end_outer(t)                             # MDC: MLS selection every Δt
        maybe checkpoint (atomic) including matcher.state_dict() and hooks.state_dict()
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import torch

from ..formation import decode_torch

__all__ = [
    "SyntheticSet",
    "SyntheticView",
    "MatchOutput",
    "Method",
    "Selector",
    "Matcher",
    "EngineHooks",
]


class _RankMajorImages:
    """What matchers read from synthetic images: ``images [K, N, C, H, W]`` and ``factor``."""

    images: torch.Tensor
    factor: int

    @property
    def num_classes(self) -> int:
        return self.images.shape[0]

    @property
    def ipc(self) -> int:
        return self.images.shape[1]

    def decoded(self, c: int, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded images of class ``c``'s first ``n`` stored ranks and the rank each came from."""
        n = self.ipc if n is None else n
        x = decode_torch(self.images[c, :n], self.factor)
        owner = torch.arange(n, device=x.device).repeat_interleave(self.factor**2)
        return x, owner


class SyntheticView(_RankMajorImages):
    """Stored ranks ``a..b-1`` of a :class:`SyntheticSet` (gradients flow to the set's images)."""

    def __init__(self, syn: "SyntheticSet", a: int, b: int) -> None:
        self.images = syn.images[:, a:b]
        self.factor = syn.factor
        self.lower, self.upper, self.mean, self.std = syn.lower, syn.upper, syn.mean, syn.std


class SyntheticSet(_RankMajorImages, torch.nn.Module):
    """The optimised parameter: stored synthetic images, class-major, in *normalised* space.

    ``images`` has shape ``[K, N, C, H, W]`` (K classes, N stored images per class). Each stored
    image decodes to ``factor**2`` training images of the same H×W (multi-formation).
    ``lower``/``upper`` are the normalised images of pixel values 0 and 1 (per channel), used by
    :meth:`clamp_`.
    """

    def __init__(self, images: torch.Tensor, *, factor: int, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.images = torch.nn.Parameter(images.clone())
        self.factor = int(factor)
        c = images.shape[2]
        m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, 1, c, 1, 1)
        s = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, 1, c, 1, 1)
        self.register_buffer("lower", (0.0 - m) / s)
        self.register_buffer("upper", (1.0 - m) / s)
        self.register_buffer("mean", m)
        self.register_buffer("std", s)

    def ranks(self, a: int, b: int) -> SyntheticView:
        """Stored ranks ``a..b-1`` as a view a matcher can match on its own."""
        return SyntheticView(self, a, b)

    @torch.no_grad()
    def clamp_(self) -> None:
        self.images.data = torch.maximum(torch.minimum(self.images.data, self.upper), self.lower)

    @torch.no_grad()
    def pixel_images(self) -> torch.Tensor:
        """``[K, N, C, H, W]`` in pixel space [0, 1] (what a buffer stores)."""
        return (self.images * self.std + self.mean).clamp(0.0, 1.0)


@dataclass
class MatchOutput:
    """What a matcher reports for one class.

    ``losses`` maps a prefix length to the matching loss of that prefix (``None`` = all N stored
    images). ``syn_features`` are last-layer features of the decoded synthetic images of this
    class from the same forward pass (rows in the order of ``syn_owner``, the stored rank of each
    row); ``real_features`` those of the real batch. Features may be detached.
    """

    cls: int
    losses: dict[int | None, torch.Tensor]
    syn_features: torch.Tensor | None = None
    syn_owner: torch.Tensor | None = None
    real_features: torch.Tensor | None = None
    stats: dict[str, float] = field(default_factory=dict)


class Method:
    """Base of everything registered in ``edgecond.condense.METHODS``.

    ``Config`` is the dataclass of the method's own hyper-parameters; ``presets`` maps a preset
    name (``quick``, ``paper``) to a callable ``(dataset_name) -> dict`` of overrides.

    The engine builds every method the same way: ``cls(data, config, method_config, device=...,
    generator=...)``. Optional capabilities are class attributes declared here with their
    defaults (the engine reads them, never probes for them):

    * ``supports_independent_ranks``: ``CondenseConfig.independent_ranks`` may be used (every
      stored rank its own size-1 condensation; the engine asks for it through
      :class:`edgecond.condense.independent.IndependentRanks` hooks, the matcher does nothing);
    * ``synthetic_set``: a callable ``(pixels, config, method_config, dataset) -> SyntheticSet``
      when the method optimises its own parameterisation (SDC), else None;
    * ``shard_classes``: the method's image updates are class-wise, so several
      ``torch.distributed`` workers may each own a share of the classes
      (:mod:`edgecond.condense.distributed`); otherwise every worker runs replicated.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    Config: ClassVar[type] = object
    presets: ClassVar[dict[str, Any]] = {}
    supports_independent_ranks: ClassVar[bool] = False
    synthetic_set: ClassVar[Callable[..., Any] | None] = None
    shard_classes: ClassVar[bool] = False

    def __init__(self, data: Any, config: Any, method_config: Any = None, *,
                 device: torch.device | None = None, generator: torch.Generator | None = None) -> None:
        """``data``: the training data (``RealData`` on ``device`` for matchers, the ``ImageDataset``
        for selectors); ``config``: the ``CondenseConfig``; ``method_config``: an instance of
        ``Config``; ``generator``: the CPU generator every random draw uses (matchers)."""
        self.data = data
        self.config = config
        self.mc = method_config
        self.device = device
        self.gen = generator


class Selector(Method):
    """Picks real images; returns ``[K, N, C, H, W]`` pixel-space images ordered by rank."""

    kind: ClassVar[str] = "selector"

    def select(self, dataset, ipc: int, *, seed: int, device: torch.device, progress: bool = True) -> torch.Tensor:
        raise NotImplementedError


class Matcher(Method):
    """Optimises a :class:`SyntheticSet` against real data (see the module docstring).

    ``match`` may be given a :class:`SyntheticView` (a range of ranks) instead of the whole set;
    ``self.gen`` is the generator of every random draw (hooks may replay it).
    """

    kind: ClassVar[str] = "matcher"
    inner_steps: int = 1
    gen: torch.Generator

    def class_groups(self, num_classes: int) -> list[list[int]]:
        """How classes are grouped per image update: one class at a time by default."""
        return [[c] for c in range(num_classes)]

    def begin_outer(self, t: int) -> None:
        """Called at the start of outer iteration ``t`` (e.g. re-initialise the network)."""

    def match(
        self, syn: SyntheticSet, classes: Sequence[int], *, prefixes: Sequence[int | None] = (None,)
    ) -> list[MatchOutput]:
        """Losses (one per requested prefix) and features for each class of ``classes``."""
        raise NotImplementedError

    def between_inner(self, step: int) -> None:
        """Called after the image updates of inner step ``step`` (e.g. train the network)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class EngineHooks:
    """Default hooks: the plain (single-size) condensation. MDC overrides these."""

    def bind(self, syn: SyntheticSet) -> None:
        """Called once by the engine with the synthetic set, after it is initialised (or restored
        from a checkpoint) and before the first image update."""

    def begin_outer(self, t: int) -> None:
        pass

    def prefixes(self, classes: Sequence[int]) -> tuple[int | None, ...]:
        return (None,)

    def match(self, matcher: Matcher, syn: SyntheticSet, classes: Sequence[int]) -> list[MatchOutput]:
        """What the engine asks the matcher for one group: by default the losses of
        :meth:`prefixes`. Hooks that need another request (e.g. per-rank independence) override it."""
        return matcher.match(syn, classes, prefixes=self.prefixes(classes))

    def combine(self, outputs: Sequence[MatchOutput]) -> torch.Tensor:
        return torch.stack([o.losses[None] for o in outputs]).sum()

    def mask_grad(self, grad: torch.Tensor | None) -> None:
        pass

    def after_step(self, syn: SyntheticSet) -> None:
        """Called after every ``opt.step(); syn.clamp_()``. ``mask_grad`` zeroes the gradient of
        frozen ranks, but optimiser momentum (or weight decay) would still move them; MDC copies
        the frozen ranks back here so they stay bitwise unchanged."""

    def end_outer(self, t: int) -> None:
        pass

    def metadata(self) -> dict[str, Any]:
        """Extra entries for the buffer's metadata (e.g. the MLS history)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
