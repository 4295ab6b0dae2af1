"""Stores keep runs durable: the `Store` base class, its backends, and `open_store`.

Backends are imported lazily, by `open_store` or on first access of their
class name, so importing flowdag never loads a database library it won't use.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flowdag.errors import StoreError
from flowdag.stores.base import Store

if TYPE_CHECKING:
    from flowdag.stores.lmdb_store import LMDBStore
    from flowdag.stores.memory import MemoryStore

__all__ = ["LMDBStore", "MemoryStore", "Store", "open_store"]

# scheme -> (module, class, whether the URL carries a directory)
_BACKENDS: dict[str, tuple[str, str, bool]] = {
    "lmdb": ("flowdag.stores.lmdb_store", "LMDBStore", True),
    "memory": ("flowdag.stores.memory", "MemoryStore", False),
}
_LAZY = {cls: module for module, cls, _ in _BACKENDS.values()}


def open_store(url: str, **kwargs: Any) -> Store:
    """Open the store a URL names: ``lmdb://DIR`` or ``memory://``.

    A relative ``DIR`` is relative to the current directory (``lmdb://.flowdag``
    is the CLI's default); ``~`` is expanded. ``kwargs`` go to the store's
    constructor (e.g. ``codec=``).

    Raises:
        StoreError: the URL is malformed or its scheme is unknown.
    """
    if not isinstance(url, str):
        raise StoreError(f"store URL must be a string, not {type(url).__name__}")
    scheme, sep, location = url.partition("://")
    backend = _BACKENDS.get(scheme) if sep else None
    if backend is None:
        raise StoreError(f"unknown store URL {url!r}: use one of {_known_urls()}")
    module_name, class_name, takes_dir = backend
    if takes_dir and not location:
        raise StoreError(f"store URL {url!r} names no directory: use {scheme}://DIR")
    if not takes_dir and location:
        raise StoreError(f"store URL {url!r} takes no path: use {scheme}://")
    # Each backend's constructor takes the directory (if any) first, then keywords.
    cls: Callable[..., Store] = getattr(importlib.import_module(module_name), class_name)
    if takes_dir:
        return cls(os.path.expanduser(location), **kwargs)
    return cls(**kwargs)


def _known_urls() -> str:
    return ", ".join(
        f"{scheme}://DIR" if takes_dir else f"{scheme}://"
        for scheme, (_, _, takes_dir) in sorted(_BACKENDS.items())
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
