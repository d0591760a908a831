"""A registry: the one list of the choices for an option (samplers, ticket kinds, precisions, ...).

Each choice is registered once, by name, with the object that implements it; a second registration
of a name is an error, and looking up an unknown name is a one-line :class:`UserError` that lists the
valid names. Registries are filled by explicit ``register`` calls in the module that owns them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from basics.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """``name -> T`` in registration order. ``what`` names the choice in errors (``"sampler"``)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        """Add ``item`` under ``name``; a name registered before is a ValueError (a programming error)."""
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.what} names must be non-empty strings, got {name!r}")
        if name in self._items:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._items[name] = item
        return item

    def add(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`register`: ``@SAMPLERS.add("round-robin")``."""
        return lambda item: self.register(name, item)

    def get(self, name: str) -> T:
        """The item of ``name``; a UserError listing the valid names if there is none."""
        self.check(name)
        return self._items[name]

    def check(self, name: str) -> str:
        """``name`` itself if registered, else a UserError listing the valid names."""
        if name not in self._items:
            raise UserError(f"unknown {self.what} {name!r}; valid: {', '.join(self._items)}")
        return name

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self._items)})"
