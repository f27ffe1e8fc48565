"""Condense the configured buffer at server start-up when its file is missing.

Library-style entry point used by ``servers/server_app.py``; the ``edgecond condense`` command
does the same from a shell. The buffer is written atomically (temp file + rename), so a crash
never leaves a half-written file at ``buffer-path``.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from edgecond.errors import CondenseError, FederatedError
from edgecond.apps.flower_config import FederatedConfig

__all__ = ["resolve_buffer_path", "ensure_buffer", "progress_logger"]

log = logging.getLogger("edgecond.server.condense")  # under "edgecond": shown in Flower's server log


def resolve_buffer_path(cfg: FederatedConfig) -> Path:
    """``buffer-path`` as an absolute path (relative paths are taken from the working directory)."""
    return Path(os.path.expanduser(cfg.buffer_path)).resolve()


def progress_logger(logger: logging.Logger, t0: float, *, every: int = 0):
    """An ``on_iteration`` callback for :func:`edgecond.condense.engine.condense` that logs
    ``condensing: iteration t/T (p%), loss, elapsed, ETA`` about 20 times per run (``every``:
    log every that many iterations instead) and at the last iteration."""
    def report(record: dict) -> None:
        total = max(int(record.get("total", 0)), 1)
        t = int(record["iteration"]) + 1
        step = every or max(1, total // 20)
        if t % step and t != total:
            return
        elapsed = time.perf_counter() - t0
        eta = elapsed / t * (total - t)
        logger.info("condensing: iteration %d/%d (%d%%), loss %.4g, %.0f s elapsed, ETA %.0f s",
                    t, total, 100 * t // total, float(record.get("loss", float("nan"))), elapsed, eta)
    return report


def ensure_buffer(cfg: FederatedConfig, *, progress: bool = False) -> Path:
    """Return the buffer path, condensing it first with ``condense-method``/``-preset``/``-ipc``
    (and ``condense-hooks``, e.g. ``mdc``) when the file does not exist."""
    path = resolve_buffer_path(cfg)
    if path.is_file():
        return path
    from clients.task import server_dataset
    from edgecond.condense.engine import condense, condense_preset
    from edgecond.data import load_dataset

    full = load_dataset(cfg.dataset)
    # honest federation: the server condenses only its own split (server-fraction of the
    # training set); the clients partition the rest (clients.task.server_split)
    dataset = server_dataset(full, cfg)
    log.info("server split: %d of %d training images (server-fraction %g); clients hold the other %d",
             len(dataset.y_train), len(full.y_train), cfg.server_fraction,
             len(full.y_train) - (len(dataset.y_train) if cfg.server_fraction > 0 else 0))
    overrides: dict = {"ipc": int(cfg.condense_ipc), "seed": int(cfg.seed)}
    if cfg.condense_hooks:
        overrides["hooks"] = cfg.condense_hooks
    try:  # the one resolver: condense-method "mdc" and condense-hooks "mdc" are the same request
        ccfg = condense_preset(cfg.condense_method, cfg.condense_preset, dataset, **overrides)
    except Exception as err:  # ConfigError from the registry/presets, re-raised with context
        raise FederatedError(
            f"buffer-path {str(path)!r} does not exist and condensing it failed to configure: {err}. "
            "Point buffer-path at an existing buffer or fix condense-method/condense-preset."
        ) from err
    log.info("buffer %s missing: condensing %s with %s/%s (ipc %d, hooks %r %s)", path, cfg.dataset,
             ccfg.method, ccfg.preset, ccfg.ipc, ccfg.hooks, ccfg.hooks_config)
    t0 = time.perf_counter()
    result = condense(dataset, ccfg, device=cfg.device, progress=progress,
                      on_iteration=progress_logger(log, t0))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        result.buffer.save(tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise CondenseError(f"cannot write the condensed buffer to {path}: {err}. "
                            "Choose a writable buffer-path.") from err
    finally:
        if tmp.exists():
            tmp.unlink()
    log.info("condensed %s in %.1f s", path, time.perf_counter() - t0)
    return path
