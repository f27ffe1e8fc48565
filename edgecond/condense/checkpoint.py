"""Atomic, pickle-free checkpoints of a running condensation.

A checkpoint is ONE ``.safetensors`` file: every tensor of the (nested) state goes in as a
safetensors tensor, everything else (ints, floats, strings, lists, dicts, the config) is JSON
stored in the file's ``__metadata__`` under the key ``"state"``, with ``{"__tensor__": key}``
placeholders where the tensors were. Nothing is ever unpickled, so loading a checkpoint cannot
run code.

Writes are atomic: the file is written to ``<path>.tmp`` and moved over ``<path>`` with
:func:`os.replace`, so a run killed while saving leaves the previous checkpoint intact.

RNG states (``torch.Generator.get_state()``) are uint8 tensors and travel like any other tensor.

Integrity (version 2): metadata ``digest`` is the SHA-256 (hex) of the state JSON and of every
tensor's name, dtype, shape and bytes (sorted by name). :func:`load_checkpoint` recomputes it, so a
flipped bit, a swapped tensor or an edited state is refused with a :class:`CondenseError`;
:func:`check_resume_state` then validates the keys, the iteration bounds and the image tensor's
shape and dtype before the engine loads anything.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import CondenseError

__all__ = ["save_checkpoint", "load_checkpoint", "flatten_state", "unflatten_state", "CHECKPOINT_FORMAT",
           "checkpoint_digest", "check_resume_state", "load_resume_state"]

CHECKPOINT_FORMAT = "edgecond-condense-checkpoint"
CHECKPOINT_VERSION = 2  # 2: metadata 'digest' over the state and every tensor
RESUME_KEYS = ("config", "iteration", "images", "optimizer", "matcher", "hooks", "rng", "history")


def checkpoint_digest(state_json: str, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) over the state JSON and every tensor's name, dtype, shape and raw bytes."""
    h = hashlib.sha256(f"{CHECKPOINT_FORMAT}/{CHECKPOINT_VERSION}\0".encode())
    h.update(len(state_json.encode()).to_bytes(8, "little") + state_json.encode())
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        head = json.dumps([key, str(t.dtype), list(t.shape)], separators=(",", ":")).encode()
        h.update(len(head).to_bytes(8, "little") + head)
        raw = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""
        h.update(len(raw).to_bytes(8, "little"))
        h.update(raw)
    return h.hexdigest()


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
            key = obj["__tensor__"]
            if not isinstance(key, str) or key not in tensors:
                raise CondenseError(f"the checkpoint's state refers to tensor {key!r:.80}, which the file does not "
                                    "hold; the checkpoint is damaged. Delete it to start from scratch.")
            return tensors[key]
        if set(obj) == {"__items__"}:
            items = obj["__items__"]
            if not (isinstance(items, list) and all(isinstance(i, list) and len(i) == 2 for i in items)):
                raise CondenseError("the checkpoint's state has a malformed '__items__' entry (expected "
                                    "[[key, value], ...]); the checkpoint is damaged. Delete it to start from scratch.")
            return {k: unflatten_state(v, tensors) for k, v in items}
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
    state_json = json.dumps(skeleton, separators=(",", ":"))
    meta = {
        "format": CHECKPOINT_FORMAT,
        "version": str(CHECKPOINT_VERSION),
        "state": state_json,
        "digest": checkpoint_digest(state_json, tensors),
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
            f"{CHECKPOINT_VERSION} (version 2 added the integrity digest). Start the run from scratch."
        )
    missing = [k for k in ("state", "digest") if not isinstance(meta.get(k), str)]
    if missing:
        raise CondenseError(f"checkpoint {str(path)!r} lacks metadata {missing}; the checkpoint is damaged. "
                            "Delete it to start from scratch.")
    want = checkpoint_digest(meta["state"], tensors)
    if meta["digest"] != want:
        raise CondenseError(
            f"checkpoint {str(path)!r} fails its integrity digest (stored {meta['digest'][:16]}..., computed "
            f"{want[:16]}...): its tensors or state were changed after it was written. Delete it to start "
            "from scratch (resuming from it could silently change the result)."
        )
    try:
        skeleton = json.loads(meta["state"], parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise CondenseError(f"checkpoint {str(path)!r} has a state that is not valid JSON ({exc}); the "
                            "checkpoint is damaged. Delete it to start from scratch.") from None
    return unflatten_state(skeleton, tensors)


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def check_resume_state(state: Any, path: str | os.PathLike, *, iterations: int,
                       images_shape: tuple[int, ...], images_dtype: torch.dtype,
                       param_shapes: Sequence[tuple[int, ...]] | None = None) -> int:
    """Validate a loaded checkpoint before the engine loads any of it; returns the iteration.

    Checks the keys, ``0 <= iteration <= iterations`` (a checkpoint past the configured end
    would otherwise hand back its old images as the final buffer), the images tensor's shape,
    dtype and finiteness, the RNG state and the optimizer's per-parameter tensors. Every
    mismatch is a :class:`CondenseError` naming it.
    """
    where = f"checkpoint {str(path)!r}"
    fix = "Resume with the settings that wrote it, or delete it to start from scratch."
    if not isinstance(state, dict):
        raise CondenseError(f"{where}: the state is a {type(state).__name__}, expected an object. {fix}")
    missing = [k for k in RESUME_KEYS if k not in state]
    if missing:
        raise CondenseError(f"{where} lacks {missing}; expected the keys {list(RESUME_KEYS)}. {fix}")
    if not isinstance(state["config"], dict):
        raise CondenseError(f"{where}: 'config' is a {type(state['config']).__name__}, expected an object. {fix}")
    it = state["iteration"]
    if isinstance(it, bool) or not isinstance(it, int) or not 0 <= it <= iterations:
        raise CondenseError(
            f"{where}: iteration {it!r} is outside 0..{iterations} (the configured iterations); a checkpoint "
            f"past the end would be returned as the final result. Pass iterations >= {it!r} to continue it. {fix}")
    ck_iters = state["config"].get("iterations")
    if isinstance(ck_iters, int) and not isinstance(ck_iters, bool) and it > ck_iters:
        raise CondenseError(f"{where}: iteration {it} is past the iterations it was written for ({ck_iters}). {fix}")
    images = state["images"]
    if not isinstance(images, torch.Tensor):
        raise CondenseError(f"{where}: 'images' is not a tensor. {fix}")
    if tuple(images.shape) != tuple(images_shape) or images.dtype != images_dtype:
        raise CondenseError(f"{where}: 'images' is {images.dtype} {list(images.shape)}; expected {images_dtype} "
                            f"{list(images_shape)} (same dataset, ipc and factor). {fix}")
    if images.is_floating_point() and not bool(torch.isfinite(images).all()):
        raise CondenseError(f"{where}: 'images' contains NaN or infinite values. {fix}")
    rng = state["rng"]
    if not (isinstance(rng, dict) and isinstance(rng.get("main"), torch.Tensor) and rng["main"].dtype == torch.uint8
            and rng["main"].dim() == 1):
        raise CondenseError(f"{where}: 'rng' must hold a uint8 generator state under 'main'. {fix}")
    hist = state["history"]
    if not (isinstance(hist, dict) and all(isinstance(v, list) for v in hist.values())):
        raise CondenseError(f"{where}: 'history' must map names to lists. {fix}")
    _check_optimizer_state(state["optimizer"], param_shapes or (tuple(images_shape),), where, fix)
    return it


def _check_optimizer_state(opt: Any, shapes: Sequence[tuple[int, ...]], where: str, fix: str) -> None:
    """The image optimizer: its per-parameter tensors must have the shape of one of the synthetic
    set's parameters (``shapes``: the images alone for the plain set; U, Σ, V for SDC)."""
    allowed = {tuple(s) for s in shapes}
    if not (isinstance(opt, dict) and isinstance(opt.get("state"), dict) and isinstance(opt.get("param_groups"), list)):
        raise CondenseError(f"{where}: 'optimizer' is not an optimizer state (state + param_groups). {fix}")
    for group in opt["param_groups"]:
        lr = group.get("lr") if isinstance(group, dict) else None
        if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr >= 0):
            raise CondenseError(f"{where}: optimizer param group {group!r:.80} has no valid lr. {fix}")
    for pstate in opt["state"].values():
        if not isinstance(pstate, dict):
            raise CondenseError(f"{where}: optimizer state entry is a {type(pstate).__name__}, expected an object. {fix}")
        for name, val in pstate.items():
            if isinstance(val, torch.Tensor) and val.dim() > 0 and tuple(val.shape) not in allowed:
                raise CondenseError(f"{where}: optimizer {name!r} has shape {list(val.shape)}; expected the "
                                    f"synthetic set's {sorted(list(s) for s in allowed)}. {fix}")


def load_resume_state(state, ckpt_path, syn, opt, matcher, hooks, gen, dev) -> None:
    """Load a validated checkpoint (``check_resume_state``); any failure is a CondenseError naming the part."""
    parts = (("images", lambda v: syn.images.copy_(v.to(dev))),
             *((("syn_extra", syn.load_extra_state),) if "syn_extra" in state and hasattr(syn, "load_extra_state")
               else ()),
             ("optimizer", opt.load_state_dict),
             ("matcher", matcher.load_state_dict), ("hooks", hooks.load_state_dict),
             ("rng", lambda v: gen.set_state(v["main"])))
    for name, load in parts:
        try:
            with torch.no_grad():
                load(state[name])
        except CondenseError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise CondenseError(
                f"checkpoint {str(ckpt_path)!r}: its {name!r} state does not fit this run ({type(exc).__name__}: "
                f"{str(exc)[:200]}). Resume with the settings that wrote it, or delete it to start from scratch."
            ) from None
