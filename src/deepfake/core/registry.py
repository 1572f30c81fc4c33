"""Named implementations of one kind, chosen by a setting: the one rule for adding, listing and looking them up.

The kit chooses several things by name from a setting (a frame-to-video aggregation, a demo manipulation, a
pseudo-fake family, a face detector). Each kind keeps a :class:`Registry`: implementations add themselves with
its decorator, a name is never taken twice, :meth:`Registry.names` lists them sorted, and an unknown name is an
error naming the kind, the name and every available one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from deepfake.core.errors import ConfigError, DeepfakeError

T = TypeVar("T")


class Registry(Generic[T]):
    """Implementations of one ``kind`` by name; unknown names raise ``error`` (a :class:`DeepfakeError`)."""

    def __init__(self, kind: str, error: type[DeepfakeError] = ConfigError) -> None:
        self.kind = kind
        self.error = error
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        """Add ``item`` under ``name``; a name already taken by another item is an error."""
        taken = self._items.get(name)
        if taken is not None and taken is not item:
            holder = getattr(taken, "__name__", None) or repr(taken)
            raise self.error(f"{self.kind} name {name!r} is already taken by {holder}")
        self._items[name] = item
        return item

    def remove(self, name: str) -> None:
        """Withdraw ``name`` (a test's or plugin's own implementation)."""
        self._items.pop(name, None)

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda item: self.add(name, item)

    def names(self) -> list[str]:
        return sorted(self._items)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise self.error(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
