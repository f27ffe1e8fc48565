"""Byte quantities: ``parse_bytes("1.5MB") == 1_500_000``, ``format_bytes(30720) == "30.7 kB"``.

Decimal units are powers of 1000 (``kB``, ``MB``, ``GB``, ``TB``; ``k``/``K``/``KB`` are accepted
for kilo), binary units powers of 1024 (``KiB``, ``MiB``, ``GiB``, ``TiB``). A bare number is bytes,
``B`` is optional. Fractions round *down* to whole bytes (a budget is never exceeded).
Standard library only.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from .errors import BudgetError

__all__ = ["parse_bytes", "format_bytes", "UNITS"]

UNITS: dict[str, int] = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
    "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4,
}

_PATTERN = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([+-]?[0-9]+))?\s*([A-Za-z]*)\s*$")


def parse_bytes(value: int | str) -> int:
    """Parse a byte quantity (``40000``, ``"40kB"``, ``"1.5 MB"``, ``"2MiB"``) into whole bytes.

    Raises :class:`~edgecond.errors.BudgetError` for negative, non-numeric or unknown-unit input.
    """
    if isinstance(value, bool):
        raise BudgetError(f"byte quantity must be a number or a string like '40kB', got {value!r}.")
    if isinstance(value, int) or (hasattr(value, "__index__") and not isinstance(value, str)):
        v = int(value.__index__() if not isinstance(value, int) else value)
        if v < 0:
            raise BudgetError(f"byte quantity must be >= 0, got {v}.")
        return v
    if isinstance(value, float):
        if not value >= 0 or value == float("inf"):
            raise BudgetError(f"byte quantity must be a finite number >= 0, got {value!r}.")
        return int(value)
    if not isinstance(value, str):
        raise BudgetError(f"byte quantity must be an int or a string like '1.5MB', got {type(value).__name__}.")
    m = _PATTERN.match(value)
    if not m:
        raise BudgetError(
            f"cannot parse byte quantity {value!r}; expected a non-negative number with an optional unit, "
            "e.g. '40000', '40kB', '1.5MB', '2MiB'."
        )
    number, exp, unit = m.groups()
    factor = UNITS.get(unit.lower())
    if factor is None:
        raise BudgetError(
            f"unknown byte unit {unit!r} in {value!r}; expected one of B, kB, MB, GB, TB (x1000) or "
            "KiB, MiB, GiB, TiB (x1024)."
        )
    try:
        d = Decimal(number) * (Decimal(10) ** int(exp or 0)) * factor
    except (InvalidOperation, ValueError, OverflowError):
        raise BudgetError(f"cannot parse byte quantity {value!r}.") from None
    if d > Decimal(2) ** 63:
        raise BudgetError(f"byte quantity {value!r} is too large (over 2**63 bytes).")
    return int(d)  # int() of a non-negative Decimal truncates = rounds down


def format_bytes(n: int, *, binary: bool = False, digits: int = 3) -> str:
    """Human-readable size with ``digits`` significant digits: ``30720 -> "30.7 kB"``
    (``binary=True``: ``"30 KiB"``). Sizes below 1000 (1024) print as ``"512 B"``."""
    if isinstance(n, bool) or not isinstance(n, int):
        n = int(n)
    sign = "-" if n < 0 else ""
    n = abs(n)
    base = 1024 if binary else 1000
    names = ["B", "KiB", "MiB", "GiB", "TiB"] if binary else ["B", "kB", "MB", "GB", "TB"]
    i = 0
    val = float(n)
    while val >= base and i < len(names) - 1:
        val /= base
        i += 1
    if i == 0:
        return f"{sign}{n} B"
    text = f"{val:.{digits}g}"
    if "e" in text:
        text = f"{val:.0f}"
    return f"{sign}{text} {names[i]}"
