"""One progress utility for every long loop: a tqdm bar on a terminal, periodic log lines otherwise.

``progress_bar(...)`` takes the tqdm arguments edgecond uses (``iterable``, ``total``, ``desc``,
``unit``, ``initial``, ``leave``, ``disable``) and returns an object with tqdm's ``update``,
``set_postfix``, ``set_description``, ``close`` and iteration. When stderr (where bars are drawn)
is a terminal it is a tqdm bar; when it is not (a log file, CI, ``make demo > log 2>&1``) it
writes one INFO line through :mod:`logging` at most every ``EDGECOND_PROGRESS_INTERVAL`` seconds
(default 30) and one when the loop ends, e.g.::

    INFO edgecond.progress: condense idc: 120/400 it (30%), 41 s, ~1.6 min left, loss=0.0123

Bars with ``leave=False`` (inner loops, e.g. the epochs of one training run) are silent in log
mode: their outer loop reports. ``EDGECOND_PROGRESS=bar|log|off`` forces a mode. Torch-free.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
import time
from typing import Any, Iterable, Iterator

__all__ = ["progress_bar", "progress_mode", "progress_label", "LogProgress"]

log = logging.getLogger(__name__)
_LABEL: contextvars.ContextVar[str] = contextvars.ContextVar("edgecond_progress_label", default="")


@contextlib.contextmanager
def progress_label(label: str) -> Iterator[None]:
    """Prefix the description of every bar created inside the block, e.g. ``"experience 2/5"``
    (so five condensations in a row read "experience 1/5 · condense idm", ...)."""
    token = _LABEL.set(f"{_LABEL.get()}{label} · ")
    try:
        yield
    finally:
        _LABEL.reset(token)


def progress_mode() -> str:
    """``"bar"`` when stderr is a terminal, else ``"log"``; ``EDGECOND_PROGRESS`` overrides."""
    forced = os.environ.get("EDGECOND_PROGRESS", "").strip().lower()
    if forced in ("bar", "log", "off"):
        return forced
    try:
        return "bar" if sys.stderr.isatty() else "log"
    except (AttributeError, ValueError):
        return "log"


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("EDGECOND_PROGRESS_INTERVAL", "30")))
    except ValueError:
        return 30.0


def _fmt_seconds(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


class LogProgress:
    """A tqdm stand-in that logs one line at most every ``interval`` seconds (and at the end)."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, silent: bool = False, interval: float | None = None) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = int(initial)
        self._start_n = int(initial)
        self.silent = silent
        self.interval = _interval() if interval is None else float(interval)
        self.postfix = ""
        self._t0 = time.perf_counter()
        self._last = self._t0
        self._closed = False

    # tqdm's surface ----------------------------------------------------------------------------
    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        now = time.perf_counter()
        if not self.silent and now - self._last >= self.interval and (self.total is None or self.n < self.total):
            self._last = now
            self._emit()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:  # tqdm API; nothing to redraw
        pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.silent and self.n > self._start_n:
            self._emit(done=True)

    # -------------------------------------------------------------------------------------------
    def _emit(self, done: bool = False) -> None:
        elapsed = time.perf_counter() - self._t0
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        parts = [f"{self.desc}: {count} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(_fmt_seconds(elapsed))
        done_here = self.n - self._start_n
        if not done and self.total and done_here > 0:
            parts.append(f"~{_fmt_seconds(elapsed / done_here * (self.total - self.n))} left")
        if done:
            parts.append("done")
        if self.postfix:
            parts.append(self.postfix)
        log.info(", ".join(parts))


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, leave: bool = True, disable: bool = False):
    """A progress bar over ``iterable`` (or ``total`` steps) that tells the truth where it is shown.

    ``disable=True`` (or ``EDGECOND_PROGRESS=off``) returns a silent object with the same methods.
    """
    desc = f"{_LABEL.get()}{desc}"
    mode = progress_mode()
    if disable or mode == "off":
        return LogProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, silent=True)
    if mode == "bar":
        try:
            from tqdm.auto import tqdm
        except ImportError:  # a core (device) install has no tqdm: log lines instead
            return LogProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, silent=not leave)
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave,
                    dynamic_ncols=True)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, silent=not leave)
