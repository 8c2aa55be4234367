"""Registries by name (torchdistill style): loss terms, curriculum scores, orders and pacings, data sets
and models.

A :class:`Registry` maps a name to an object (a class or a function) in registration order; that order is
canonical where it matters (the engine sums loss terms in it). Looking up an unknown name raises a
:class:`KeyError` that lists the registered names and suggests the nearest one.
"""
from __future__ import annotations

import difflib
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


def nearest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """`` (did you mean X?)`` for the closest of ``choices`` to ``word``, or an empty string."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Registry(Generic[T]):
    """Named objects of one kind (``what``: "loss term", "score", ...), in registration order."""

    def __init__(self, what: str, hyphens: bool = False):
        self.what = what
        #: whether names may hold hyphens (``cifar10-5k``); otherwise a name is a Python identifier
        self.hyphens = hyphens
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T, *, replace: bool = False) -> T:
        plain = name.replace("-", "_") if self.hyphens and isinstance(name, str) else name
        if not isinstance(plain, str) or not plain.isidentifier():
            kind = "an identifier (hyphens allowed)" if self.hyphens else "an identifier"
            raise ValueError(f"a {self.what} name must be {kind}, got {name!r}")
        if name in self._items and not replace:
            raise ValueError(f"a {self.what} named {name!r} is already registered ({self._items[name]!r})")
        self._items[name] = obj
        return obj

    def decorator(self, name: str, **attributes: Any) -> Callable[[T], T]:
        """``@registry.decorator("name", attr=value)``: set the attributes on the object and register it."""
        def wrap(obj: T) -> T:
            for key, value in attributes.items():
                setattr(obj, key, value)
            return self.register(name, obj)
        return wrap

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise KeyError(f"unknown {self.what} {name!r}{nearest(name, self.names())}; "
                           f"registered: {', '.join(self.names())}") from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def index(self, name: str) -> int:
        return self.names().index(name)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self.names())})"
