"""Small torch helpers shared across the library: explicit devices and scoped seeding."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

from .errors import ConfigError

__all__ = ["resolve_device", "seeded", "make_generator", "set_cpu_threads"]


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:1" | "mps"`` into a :class:`torch.device`.

    ``"auto"`` picks CUDA when available, else the CPU. Library functions take the
    resolved device from their caller; only the CLI and apps pass ``"auto"``.
    """
    if isinstance(device, torch.device):
        return device
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"unknown device {device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'."
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} was requested but CUDA is not available on this machine; "
            "pass --device cpu (or 'auto')."
        )
    return dev


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device | None = None) -> Iterator[None]:
    """Run a block with torch's global RNG seeded, restoring the caller's RNG state after.

    Used where torch draws from the global RNG that we cannot pass a generator to
    (module initialisation). ``seed=None`` leaves the RNG untouched.
    """
    if seed is None:
        yield
        return
    devices = [device] if device is not None and torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh :class:`torch.Generator` on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(int(seed))
    return g


def set_cpu_threads(threads: int | None = None) -> int:
    """Use ``threads`` for CPU work (default: ``$OMP_NUM_THREADS`` when set, else all cores);
    returns the number set. CLI-only."""
    n = threads or _omp_threads() or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def _omp_threads() -> int | None:
    """``OMP_NUM_THREADS`` as a positive int, or ``None`` when unset or not a number."""
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", "").strip() or 0)
    except ValueError:
        return None
    return n if n > 0 else None
