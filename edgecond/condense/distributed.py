"""Data-parallel condensation on ``torch.distributed``: workers, class shards, random streams.

Launch the standard way (one process per worker; gloo on CPUs, NCCL on CUDA)::

    torchrun --nproc-per-node 2 -m edgecond condense --dataset digits --method dm --ipc 10 -o dm.safetensors
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 -m edgecond condense ...

The engine (:func:`edgecond.condense.engine.condense`), not the matchers, owns the split
(docs/condensation.md, *Several workers*):

* **classes are sharded**: class ``c`` belongs to rank ``c % world_size``. For every class group
  a matcher asks for, a rank matches only the classes it owns and skips a group it owns none of;
  every rank still takes every optimiser step (zero gradient on the others' classes), so its own
  classes see exactly the momentum steps of a one-process run;
* **networks shared across classes are replicated, not all-reduced**: IDC's network trained on
  real data between inner steps, IDM's model queue and DM's random networks depend on real data
  and the *main* random stream only, never on the synthetic images, so every rank builds and
  trains the same networks from the same seed (bitwise the same). This keeps the algorithm and
  the one-process numbers; it costs each rank the network training (it does not shrink with
  more workers: the ``replicated`` share of :mod:`benchmarks.condense_scaling`);
* **random streams do not depend on the owner**: per (outer iteration, inner step, group) the
  engine reseeds the shared generator from :func:`stream_seed` for the group's draws
  (augmentation, sub-sampled ranks) and gives every class its own stream for its real batch
  (:class:`ClassStreams`), then restores the main stream. A one-process run uses the same
  streams, so 1 and N workers draw the same numbers;
* **reductions**: the matcher's global statistics (IDM's accuracy weight) go through
  :meth:`Shard.global_mean`; the MDC hooks' per-class feature distances are summed across ranks
  (each class has one owner) before the MLS choice, so every rank picks the same subset;
* **synchronisation**: before a checkpoint, at the end and before a TensorBoard picture, every
  rank broadcasts its classes' rows of the synthetic parameters and their optimiser state
  (:meth:`Shard.sync`); rank 0 then writes the checkpoint (full state, so ``--resume`` works
  with any number of workers), the log and the buffer.

A worker that dies makes the others' next collective fail; :class:`WorkerLostError` says so and
how to continue (``--resume``). Library code here never exits and never parses argv; the CLI
calls :func:`init_workers` from the torchrun environment.
"""
from __future__ import annotations

import datetime
import os
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from ..errors import CondenseError, ConfigError

__all__ = [
    "Workers",
    "WorkerLostError",
    "env_workers",
    "init_workers",
    "close_workers",
    "current_workers",
    "stream_seed",
    "ClassStreams",
    "Shard",
]

_MASK64 = (1 << 64) - 1


class WorkerLostError(CondenseError):
    """A worker of a distributed condensation stopped or lost contact with the others."""


@dataclass(frozen=True)
class Workers:
    """This process's place in a job: ``rank`` of ``world_size`` (``local_rank`` on its machine).

    ``backend`` is ``None`` for a one-process run (no ``torch.distributed`` process group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.backend is not None and self.world_size > 1

    @property
    def is_writer(self) -> bool:
        """Rank 0 writes the buffer, the log and the checkpoints."""
        return self.rank == 0


def env_workers(environ: dict | None = None) -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``,
    or ``None`` outside a torchrun job. Malformed values raise :class:`ConfigError`."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError:
        raise ConfigError(
            f"RANK={env.get('RANK')!r}, WORLD_SIZE={env.get('WORLD_SIZE')!r}, LOCAL_RANK={env.get('LOCAL_RANK')!r}; "
            "expected integers (set by torchrun). Launch with `torchrun --nproc-per-node N -m edgecond ...`."
        ) from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ConfigError(f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}; expected 0 <= RANK < WORLD_SIZE "
                          "and LOCAL_RANK >= 0 (set by torchrun).")
    return rank, world, local


def init_workers(device: str | torch.device = "auto", *, timeout_s: float = 600.0) -> tuple[Workers, torch.device]:
    """Join the torchrun job described by the environment (a no-op outside one).

    Returns the :class:`Workers` and the device this worker computes on: with ``device`` CUDA
    (or ``auto`` on a CUDA machine) ``cuda:LOCAL_RANK`` and the NCCL backend, else the CPU and
    gloo. ``timeout_s`` bounds a collective waiting for a stuck (not dead) worker."""
    from ..utils import resolve_device

    place = env_workers()
    dev = resolve_device(device)
    if place is None:
        return Workers(), dev
    rank, world, local = place
    if dev.type == "cuda":
        if torch.cuda.device_count() <= local:
            raise ConfigError(f"LOCAL_RANK={local} but this machine has {torch.cuda.device_count()} CUDA device(s); "
                              "start at most that many workers per node (--nproc-per-node).")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=float(timeout_s)))
    return Workers(rank, world, local, backend), dev


def close_workers() -> None:
    """Leave the process group (when one was joined)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def current_workers() -> Workers:
    """The :class:`Workers` of an initialised process group, else a one-process :class:`Workers`."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Workers(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)),
                       dist.get_backend())
    return Workers()


def stream_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the random stream named by ``(seed, *keys)`` (SplitMix64 mixing):
    the same on every rank and for every number of workers."""
    x = int(seed) & _MASK64
    for k in (*keys, len(keys)):
        x = (x + 0x9E3779B97F4A7C15 + (int(k) & _MASK64)) & _MASK64
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        x = z ^ (z >> 31)
    return x & ((1 << 63) - 1)


class ClassStreams:
    """Per-class generators for one (outer iteration, inner step): class ``c``'s real batches
    come from ``stream_seed(seed, CLASS, t, i, c)`` whoever owns ``c``. Created lazily; a second
    draw of the same class in the same step continues its stream."""

    CLASS = 1
    GROUP = 2

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self.t = self.i = -1
        self._gens: dict[int, torch.Generator] = {}

    def start(self, t: int, i: int) -> None:
        self.t, self.i = int(t), int(i)
        self._gens = {}

    def __call__(self, c: int) -> torch.Generator:
        g = self._gens.get(int(c))
        if g is None:
            g = torch.Generator().manual_seed(stream_seed(self.seed, self.CLASS, self.t, self.i, int(c)))
            self._gens[int(c)] = g
        return g

    def group_seed(self, g: int) -> int:
        return stream_seed(self.seed, self.GROUP, self.t, self.i, int(g))


class Shard:
    """One worker's share of a condensation: which classes it updates, and the collectives.

    ``split=False`` (a matcher that does not declare ``shard_classes``) replicates the work:
    every rank matches every class (correct, no speed-up). ``comm_seconds`` accumulates the
    wall time spent in collectives (the communication share of the scaling benchmark)."""

    def __init__(self, workers: Workers, num_classes: int, *, split: bool = True) -> None:
        self.workers = workers
        self.num_classes = int(num_classes)
        self.split = bool(split) and workers.distributed
        self.comm_seconds = 0.0
        self.iteration = -1
        if self.split and workers.world_size > self.num_classes:
            raise ConfigError(
                f"{workers.world_size} workers for {self.num_classes} classes; class sharding gives every worker at "
                f"least one class. Start at most {self.num_classes} workers (--nproc-per-node)."
            )

    # -- ownership ---------------------------------------------------------------------------
    def owner(self, c: int) -> int:
        return int(c) % self.workers.world_size if self.split else self.workers.rank

    def owned(self, classes: Iterable[int]) -> list[int]:
        """The classes of ``classes`` this rank matches (all of them when not split)."""
        return [int(c) for c in classes if self.owner(c) == self.workers.rank]

    def owned_by(self, rank: int) -> list[int]:
        return [c for c in range(self.num_classes) if int(c) % self.workers.world_size == rank]

    # -- collectives -------------------------------------------------------------------------
    def _run(self, what: str, fn) -> None:
        import torch.distributed as dist

        t0 = time.perf_counter()
        try:
            fn(dist)
        except WorkerLostError:  # the launcher's stop signal arrived during the collective
            raise
        except RuntimeError as exc:  # gloo/NCCL: a peer closed the connection or timed out
            raise WorkerLostError(
                f"worker rank {self.workers.rank} of {self.workers.world_size} lost contact with the others during "
                f"{what} at outer iteration {self.iteration} ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}). "
                "Another worker stopped (killed, out of memory, or its machine went away). Rerun the same command "
                "with --resume to continue from the last checkpoint, with this or any other number of workers."
            ) from None
        finally:
            self.comm_seconds += time.perf_counter() - t0

    def sum_(self, tensor: torch.Tensor, what: str = "a reduction") -> torch.Tensor:
        """All-reduce (sum) ``tensor`` in place; a no-op for one worker."""
        if not self.workers.distributed:
            return tensor
        moved = tensor.cuda() if self.workers.backend == "nccl" and not tensor.is_cuda else tensor
        self._run(what, lambda dist: dist.all_reduce(moved, op=dist.ReduceOp.SUM))
        if moved is not tensor:
            tensor.copy_(moved)
        return tensor

    def global_mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean of ``values`` over every rank's rows (the mean of one process holding them
        all: an exact count, one division). Used for statistics a matcher takes over a whole
        group while it sees only its own classes (IDM's accuracy weight)."""
        v = values.detach().to(torch.float32)
        if not self.split:
            return v.mean()
        both = torch.stack([v.sum(), torch.tensor(float(v.numel()), device=v.device)])
        self.sum_(both, "a statistic of the matcher")
        return both[0] / both[1]

    def sync(self, tensors: Sequence[torch.Tensor]) -> None:
        """Make every rank's copy of ``tensors`` (leading dimension = classes) whole: each owner
        broadcasts its classes' rows. Bitwise: values are copied, never summed."""
        if not self.split:
            return
        for r in range(self.workers.world_size):
            idx = torch.tensor(self.owned_by(r), dtype=torch.long)
            for t in tensors:
                rows = t.detach()[idx.to(t.device)].contiguous()
                self._run("a synchronisation of the synthetic images",
                          lambda dist, rows=rows: dist.broadcast(rows, src=r))
                with torch.no_grad():
                    t.detach()[idx.to(t.device)] = rows

    def barrier(self) -> None:
        if self.workers.distributed:
            self._run("a barrier", lambda dist: dist.barrier())
