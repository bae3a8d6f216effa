"""Name -> class registries: a variant (fusion, item tokenizer) is one class and one decorator."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", bound=type)


def registrar(table: dict[str, type]) -> Callable[[str], Callable[[T], T]]:
    """A ``@register("name")`` class decorator that records the class in ``table``."""

    def register(name: str) -> Callable[[T], T]:
        def add(cls: T) -> T:
            table[name] = cls
            return cls

        return add

    return register
