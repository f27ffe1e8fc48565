"""The header's text spellings: strict JSON, base64url digests, number and name lists."""
from __future__ import annotations

import base64
import json
import math
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import ConfigError
from .spec import _B64

def _canonical(obj: Any) -> str:
    """Compact, sorted, ASCII JSON (the one spelling edgecond writes)."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=True, allow_nan=False)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _loads(text: str | bytes) -> Any:
    """Strict JSON: no NaN/Infinity, no duplicate keys. Raises ValueError (also for deep nesting)."""
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


def _b64(d: bytes) -> str:
    """Unpadded base64url (22 characters for a 16-byte digest)."""
    return base64.urlsafe_b64encode(d).rstrip(b"=").decode("ascii")


def _unb64(s: str) -> bytes | None:
    """Inverse of :func:`_b64` for one 22-character digest; None unless ``s`` is its canonical spelling."""
    if not _B64.fullmatch(s):
        return None
    d = base64.urlsafe_b64decode(s + "==")
    return d if _b64(d) == s else None


def _num_text(v: float | int) -> str:
    return json.dumps(v, allow_nan=False)


def _csv(vals: Iterable[Any]) -> str:
    """Comma-separated JSON numbers: the compact spelling of number lists (spec §3)."""
    return ",".join(_num_text(v) for v in vals)


def _names_text(names: Sequence[str]) -> str:
    """Class names: comma-separated when unambiguous, else a compact JSON array (spec §3)."""
    if all(n and "," not in n for n in names) and not names[0].startswith("["):
        return ",".join(names)
    return _canonical(list(names))


def _parse_list(text: str) -> list | None:
    """A JSON array, or comma-separated items each parsed as JSON (numbers); None if invalid."""
    try:
        if text.startswith("["):
            val = _loads(text)
            return val if isinstance(val, list) else None
        return [_loads(item) for item in text.split(",")]
    except ValueError:
        return None


def _parse_names(text: str) -> list | None:
    if text.startswith("["):
        try:
            val = _loads(text)
        except ValueError:
            return None
        return val if isinstance(val, list) else None
    return text.split(",")


def _check_provenance_mode(provenance: Any) -> bool:
    if not isinstance(provenance, (bool, np.bool_)):
        raise ConfigError(f"provenance must be True (keep method/config/accuracy/extra) or False (lean: "
                          f"essential metadata only), got {provenance!r}.")
    return bool(provenance)


def _short_float(x: float) -> float:
    """Shortest decimal that round-trips at float32 (keeps mean/std compact in the header)."""
    return float(str(np.float32(x)))


def _jsonable(obj: Any, what: str) -> Any:
    """Convert numpy scalars/arrays, tuples and paths to JSON types; reject the rest."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        if not math.isfinite(float(obj)):
            raise ConfigError(f"{what} contains a non-finite number {obj!r}; JSON metadata needs finite numbers.")
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist(), what)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                if isinstance(k, (int, np.integer)):
                    k = str(int(k))
                else:
                    raise ConfigError(f"{what} has a non-string key {k!r}; use string keys.")
            out[k] = _jsonable(v, what)
        return out
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, what) for v in obj]
    raise ConfigError(
        f"{what} contains {type(obj).__name__} value {obj!r} that cannot be stored as JSON; "
        "pass plain numbers, strings, lists and dicts."
    )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite_number(v: Any) -> bool:
    """A JSON number that is finite as a float (JSON allows 1e400 and 400-digit integers)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:
        return False


# ----------------------------------------------------------------------------- value conversion
