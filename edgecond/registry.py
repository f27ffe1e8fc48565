"""A small name → object registry shared by datasets, models and condensation methods.

Modelled on timm's ``register_model`` / ``create_model`` / ``list_models``: unknown names
raise a :class:`~edgecond.errors.ConfigError` that lists what exists, and registering a
name twice warns unless ``overwrite=True``.
"""
from __future__ import annotations

import difflib
import warnings
from typing import Callable, Generic, Iterator, TypeVar

from .errors import ConfigError

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """Maps names (case-insensitive, ``_`` and ``-`` equivalent) to objects."""

    def __init__(self, kind: str, *, hint: str = "") -> None:
        self.kind = kind
        self.hint = hint
        self._items: dict[str, T] = {}

    @staticmethod
    def _key(name: str) -> str:
        return name.strip().lower().replace("_", "-")

    def register(self, name: str, obj: T | None = None, *, overwrite: bool = False):
        """Register ``obj`` under ``name``; without ``obj`` return a decorator."""

        def add(item: T) -> T:
            key = self._key(name)
            if key in self._items and not overwrite:
                warnings.warn(
                    f"{self.kind} {name!r} is already registered; replacing it. "
                    "Pass overwrite=True to silence this warning.",
                    stacklevel=3,
                )
            self._items[key] = item
            return item

        if obj is not None:
            return add(obj)
        return add

    def get(self, name: str) -> T:
        key = self._key(name)
        try:
            return self._items[key]
        except KeyError:
            names = self.names()
            close = difflib.get_close_matches(key, names, n=1)
            suggestion = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}; expected one of: {', '.join(names) or '(none)'}."
                f"{suggestion}{(' ' + self.hint) if self.hint else ''}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


Factory = Callable[..., object]
