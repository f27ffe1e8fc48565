"""Argument checks shared by the command modules: numeric ranges enforced by the parser, output
paths validated before any work starts, ``--set`` values checked against the config's field types.

Standard library only (imported by every command module, so ``edgecond --help`` stays fast).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError

__all__ = ["int_arg", "float_arg", "check_output_file", "check_output_dir", "check_field_types"]


def int_arg(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """argparse ``type=``: an integer in ``[lo, hi]``; anything else is a usage error (exit 2), not a traceback."""
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{value} is out of range; expected {_span(lo, hi)}")
        return value

    parse.__name__ = "integer"
    return parse


def float_arg(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Callable[[str], float]:
    """argparse ``type=``: a finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or (lo is not None and (value < lo or (lo_open and value == lo))) \
                or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{text} is out of range; expected a finite number "
                                             f"{'>' if lo_open else '>='} {lo}" + ("" if hi is None else f" and <= {hi}"))
        return value

    parse.__name__ = "number"
    return parse


def _span(lo: int | None, hi: int | None) -> str:
    if hi is None:
        return f"an integer >= {lo}"
    if lo is None:
        return f"an integer <= {hi}"
    return f"an integer in {lo}..{hi}"


def _nearest_existing(path: Path) -> Path:
    p = path.parent
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_file(path: Any, flag: str) -> Path:
    """Refuse, before any work, an output file path that cannot be written: a directory, a path
    under an existing file, or a location without write permission. Returns the path."""
    if path is None or str(path) == "":
        raise ConfigError(f"{flag} is empty; expected a file path.")
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{flag} {p} is a directory; expected a file path (e.g. {p / 'out.safetensors'}).")
    base = _nearest_existing(p)
    if not base.is_dir():
        raise ConfigError(f"{flag} {p}: {base} is a file, not a directory, so nothing can be written under it; "
                          "pick another output path.")
    if p.exists() and not os.access(p, os.W_OK):
        raise ConfigError(f"{flag} {p}: no permission to write it; pick a writable location.")
    _probe_writable(base, p, flag)
    return p


def _probe_writable(base: Path, p: Path, flag: str) -> None:
    """Create and delete a temp file in ``base`` (os.access is not enough: root, read-only mounts, /proc)."""
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as exc:
        raise ConfigError(f"{flag} {p}: cannot write in {base} ({exc.strerror or exc}); pick a writable "
                          "location.") from None


def check_output_dir(path: Any, flag: str) -> Path:
    """Like :func:`check_output_file` for an output directory (may exist; must then be a directory)."""
    if path is None or str(path) == "":
        raise ConfigError(f"{flag} is empty; expected a directory path.")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {p} is a file; expected a directory (new or empty).")
    base = p if p.exists() else _nearest_existing(p)
    if not base.is_dir():
        raise ConfigError(f"{flag} {p}: {base} is a file, not a directory; pick another output path.")
    _probe_writable(base, p, flag)
    return p


_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "dict": (dict,), "list": (list,)}


def check_field_types(obj: Any, what: str) -> None:
    """Every field of the dataclass ``obj`` holds a value of its annotated type (int, float, bool,
    str, dict, list, optionally ``| None``); floats must be finite. Raises ConfigError naming the field
    (e.g. ``--set lr_img=abc``)."""
    for f in dataclasses.fields(obj):
        ann = str(f.type).replace(" ", "")
        optional = ann.endswith("|None")
        base = ann[:-5] if optional else ann
        allowed = _TYPES.get(base.split("[")[0])
        value = getattr(obj, f.name)
        if allowed is None or (optional and value is None):
            continue
        ok = isinstance(value, allowed) and (base == "bool" or not isinstance(value, bool))
        if ok and isinstance(value, float) and not math.isfinite(value):
            ok = False
        if not ok:
            raise ConfigError(f"{what} {f.name}={value!r}: expected {'a finite number' if base == 'float' else base}"
                              f"{' or null' if optional else ''} (e.g. --set {f.name}=...).")
