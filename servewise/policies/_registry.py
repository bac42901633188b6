"""A tiny name -> class registry shared by every policy family."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from servewise.errors import UnknownPolicyError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Policies of one family (balancers, caches, scalers), registered by name.

    ``@registry.register("p2c")`` adds a class; ``registry.get("p2c")`` returns it and a
    miss raises :class:`UnknownPolicyError` listing the valid names.
    """

    def __init__(self, family: str) -> None:
        self.family = family
        self._items: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def deco(cls: type[T]) -> type[T]:
            if name in self._items:
                raise ValueError(f"{self.family} policy {name!r} is already registered")
            self._items[name] = cls
            cls.name = name  # type: ignore[attr-defined]
            return cls

        return deco

    def get(self, name: str) -> Callable[..., T]:
        """The policy class registered as ``name`` (call it with the policy's parameters)."""
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items))
            raise UnknownPolicyError(
                f"unknown {self.family} policy {name!r}; expected one of: {valid}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
