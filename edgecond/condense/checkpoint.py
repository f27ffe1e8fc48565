"""Atomic, pickle-free checkpoints of a running condensation.

A checkpoint is ONE ``.safetensors`` file: every tensor of the (nested) state goes in as a
safetensors tensor, everything else (ints, floats, strings, lists, dicts, the config) is JSON
stored in the file's ``__metadata__`` under the key ``"state"``, with ``{"__tensor__": key}``
placeholders where the tensors were. Nothing is ever unpickled, so loading a checkpoint cannot
run code.

Writes are atomic: the file is written to ``<path>.tmp`` and moved over ``<path>`` with
:func:`os.replace`, so a run killed while saving leaves the previous checkpoint intact.

RNG states (``torch.Generator.get_state()``) are uint8 tensors and travel like any other tensor.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import CondenseError

__all__ = ["save_checkpoint", "load_checkpoint", "flatten_state", "unflatten_state", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "edgecond-condense-checkpoint"
CHECKPOINT_VERSION = 1


def flatten_state(obj: Any, tensors: dict[str, torch.Tensor] | None = None, prefix: str = "s") -> tuple[Any, dict]:
    """Split a nested state into a JSON-able skeleton and a flat ``{key: tensor}`` dict.

    Dicts whose keys are not all strings (e.g. ``optimizer.state_dict()["state"]`` with int
    keys) are stored as ``{"__items__": [[key, value], ...]}``; tuples come back as lists.
    """
    if tensors is None:
        tensors = {}
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}, tensors
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and "__tensor__" not in obj and "__items__" not in obj:
            return {k: flatten_state(v, tensors, f"{prefix}.{k}")[0] for k, v in obj.items()}, tensors
        items = []
        for i, (k, v) in enumerate(obj.items()):
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise CondenseError(f"cannot checkpoint a dict key of type {type(k).__name__}; expected str or int.")
            items.append([k, flatten_state(v, tensors, f"{prefix}.{i}")[0]])
        return {"__items__": items}, tensors
    if isinstance(obj, (list, tuple)):
        return [flatten_state(v, tensors, f"{prefix}.{i}")[0] for i, v in enumerate(obj)], tensors
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj, tensors
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item(), tensors
    raise CondenseError(
        f"cannot checkpoint a value of type {type(obj).__name__}; expected tensors, numbers, strings, "
        "lists or dicts (return only these from state_dict())."
    )


def unflatten_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__items__"}:
            return {k: unflatten_state(v, tensors) for k, v in obj["__items__"]}
        return {k: unflatten_state(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unflatten_state(v, tensors) for v in obj]
    return obj


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically to ``path`` (one safetensors file; see the module docstring)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    skeleton, tensors = flatten_state(state)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "version": str(CHECKPOINT_VERSION),
        "state": json.dumps(skeleton, separators=(",", ":")),
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    with open(tmp, "rb+") as fh:  # make the bytes durable before the rename
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on the CPU)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CondenseError(
            f"checkpoint {str(path)!r} does not exist; expected a file written by a previous "
            "`edgecond condense --checkpoint ...` run. Drop --resume to start from scratch."
        )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise CondenseError(
            f"checkpoint {str(path)!r} cannot be read ({exc}); expected an edgecond condensation "
            "checkpoint. Delete it to start from scratch."
        ) from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CondenseError(
            f"{str(path)!r} is not an edgecond condensation checkpoint (format={meta.get('format')!r}, "
            f"expected {CHECKPOINT_FORMAT!r})."
        )
    if meta.get("version") != str(CHECKPOINT_VERSION):
        raise CondenseError(
            f"checkpoint {str(path)!r} has version {meta.get('version')!r}; this edgecond reads version "
            f"{CHECKPOINT_VERSION}. Start the run from scratch."
        )
    return unflatten_state(json.loads(meta["state"]), tensors)
