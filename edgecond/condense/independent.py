"""Per-rank independence as an engine request: every stored rank is its own size-1 condensation.

:class:`IndependentRanks` hooks ask the matcher for each stored rank alone (a one-rank
:class:`~edgecond.condense.base.SyntheticView`), replaying the matcher's generator so every rank
sees the same networks, real batches and augmentation draws, and sum the losses. Rank ``k`` of
one IPC-N run is then exactly the size-1 condensation that starts from initial image ``k``
(Baseline B's N runs done as one, ``benchmarks/subset_protocol.py``). The matchers need no
branch for it: the engine builds these hooks when ``CondenseConfig.independent_ranks`` is set.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .base import EngineHooks, Matcher, MatchOutput, SyntheticSet

__all__ = ["IndependentRanks"]


class IndependentRanks(EngineHooks):
    """Default hooks, except that each stored rank is matched alone (see the module docstring)."""

    def match(self, matcher: Matcher, syn: SyntheticSet, classes: Sequence[int]) -> list[MatchOutput]:
        start = matcher.gen.get_state()
        # real batches come from per-class streams during a run (edgecond.condense.distributed.ClassStreams)
        streams = getattr(getattr(matcher, "real", None), "class_stream", None)
        saved = {int(c): streams(int(c)).get_state() for c in classes} if streams is not None else {}
        per_rank = []
        for r in range(syn.ipc):
            matcher.gen.set_state(start)  # the same draws for every rank, as N separate runs make
            for c, state in saved.items():
                streams(c).set_state(state)
            per_rank.append(matcher.match(syn.ranks(r, r + 1), classes, prefixes=(None,)))
        return [_joined(list(outs)) for outs in zip(*per_rank)]


def _joined(outs: list[MatchOutput]) -> MatchOutput:
    """One class's per-rank outputs as one: the summed loss, features in rank order."""
    total = torch.stack([o.losses[None] for o in outs]).sum()
    feats = [o.syn_features for o in outs]
    owner = [o.syn_owner + r if o.syn_owner is not None else None for r, o in enumerate(outs)]
    return MatchOutput(
        cls=outs[0].cls, losses={None: total},
        syn_features=torch.cat(feats) if all(f is not None for f in feats) else None,
        syn_owner=torch.cat(owner) if all(o is not None for o in owner) else None,
        real_features=outs[0].real_features, stats=dict(outs[0].stats),
    )
