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
from edgecond.federated import FederatedConfig

__all__ = ["resolve_buffer_path", "ensure_buffer"]

log = logging.getLogger(__name__)


def resolve_buffer_path(cfg: FederatedConfig) -> Path:
    """``buffer-path`` as an absolute path (relative paths are taken from the working directory)."""
    return Path(os.path.expanduser(cfg.buffer_path)).resolve()


def ensure_buffer(cfg: FederatedConfig, *, progress: bool = False) -> Path:
    """Return the buffer path, condensing it first with ``condense-method``/``-preset``/``-ipc``
    (and ``condense-hooks``, e.g. ``mdc``) when the file does not exist."""
    path = resolve_buffer_path(cfg)
    if path.is_file():
        return path
    from edgecond.condense.engine import condense, condense_preset
    from edgecond.data import load_dataset

    dataset = load_dataset(cfg.dataset)
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
    result = condense(dataset, ccfg, device=cfg.device, progress=progress)
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
