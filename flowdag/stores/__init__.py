"""Stores keep runs durable: the `Store` base class, its backends, and `open_store`.

Four backends, one contract (``tests/stores/conformance.py``):

- `MemoryStore` (``memory://``): in this process only;
- `LMDBStore` (``lmdb://DIR``): one LMDB environment, synced commits;
- `JSONStore` (``json://DIR``): per run a readable JSON snapshot plus a journal;
- `FlatBuffersStore` (``flatbuffers://DIR``): per run a FlatBuffers snapshot plus
  a journal; statuses are read without decoding outputs.

Backends are imported lazily, by `open_store` or on first access of their
class name, so importing flowdag never loads a database library it won't use.

Layout: ``base.py`` (`Store`: public methods once, backend hooks),
``_stored.py`` (`StoredRun` and its ``apply``, run ids), ``_blobs.py`` with
``_blobdir.py`` and ``_blobio.py`` (the blob area of outputs kept by
reference), ``_directory.py`` (the base of the disk stores: directory,
``create=False``, locks, encryption, errors, codec record), ``memory.py``,
``lmdb_store.py`` with ``_lmdb_env.py`` (shared environments), the journal
engine ``_journal.py`` with ``_framing.py`` (records) and ``_format.py``
(`RunFormat`) under ``json_store.py``/``json_format.py`` and
``flatbuffers_store.py``/``flatbuffers_format.py``; ``_files.py`` (atomic
writes, private files, no link followed inside a store), ``_locks.py`` (run
locks), ``_compaction.py`` (``Store.compact``), ``_crypto.py``, and
``transfer.py`` (``copy_run``: checked, crash-safe copies, blobs included).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowdag.errors import InvalidArgumentTypeError, StoreError
from flowdag.stores._crypto import Cipher, generate_key
from flowdag.stores.base import Store

if TYPE_CHECKING:
    from flowdag.stores.flatbuffers_store import FlatBuffersStore
    from flowdag.stores.json_store import JSONStore
    from flowdag.stores.lmdb_store import LMDBStore
    from flowdag.stores.memory import MemoryStore

__all__ = [
    "Cipher",
    "FlatBuffersStore",
    "JSONStore",
    "LMDBStore",
    "MemoryStore",
    "Store",
    "generate_key",
    "open_store",
    "opened",
    "parse_store_url",
]

# scheme -> (module, class, whether the URL carries a directory)
_BACKENDS: dict[str, tuple[str, str, bool]] = {
    "flatbuffers": ("flowdag.stores.flatbuffers_store", "FlatBuffersStore", True),
    "json": ("flowdag.stores.json_store", "JSONStore", True),
    "lmdb": ("flowdag.stores.lmdb_store", "LMDBStore", True),
    "memory": ("flowdag.stores.memory", "MemoryStore", False),
}
_LAZY = {cls: module for module, cls, _ in _BACKENDS.values()}


@contextmanager
def opened(store: Store | str) -> Iterator[Store]:
    """``store`` for the block: a `Store` as it is, or the existing store a URL names,
    opened for the block and closed after (what functions taking either use)."""
    if isinstance(store, Store):
        yield store
        return
    if not isinstance(store, str):
        raise InvalidArgumentTypeError(
            f"store must be a Store or a store URL, not {type(store).__name__}"
        )
    with open_store(store, create=False) as found:
        yield found


def open_store(url: str, *, create: bool = True, **kwargs: Any) -> Store:
    """Open the store a URL names, such as ``lmdb://.flowdag``.

    Known URLs: ``lmdb://DIR``, ``json://DIR``, ``flatbuffers://DIR`` and
    ``memory://``. A relative ``DIR`` is relative to the current directory
    (``lmdb://.flowdag`` is the CLI's default); ``~`` is expanded. ``kwargs`` go
    to the store's constructor (e.g. ``codec=``, or ``key=`` to encrypt a disk store).

    With ``create=False`` the store must exist already: a directory that holds
    no store of that kind raises `StoreError` ("no store at DIR ...") and
    nothing is created on disk. Read-only tools (status, list) open stores so.

    Raises:
        StoreError: the URL is malformed or its scheme is unknown, or
            ``create`` is False and there is no store at the URL.
    """
    scheme, directory = parse_store_url(url)
    module_name, class_name, _ = _BACKENDS[scheme]
    # Each backend's constructor takes the directory (if any) first, then keywords.
    cls: Callable[..., Store] = getattr(importlib.import_module(module_name), class_name)
    if directory is not None:
        return cls(directory, create=create, **kwargs)
    return cls(create=create, **kwargs)


def parse_store_url(url: str) -> tuple[str, Path | None]:
    """The scheme of a store URL and its directory (absolute), without opening anything.

    The directory is None for stores that have none (``memory://``).

    Raises:
        StoreError: the URL is malformed or its scheme is unknown.
    """
    if not isinstance(url, str):
        raise StoreError(f"store URL must be a string, not {type(url).__name__}")
    scheme, sep, location = url.partition("://")
    backend = _BACKENDS.get(scheme) if sep else None
    if backend is None:
        raise StoreError(f"unknown store URL {url!r}: use one of {_known_urls()}")
    takes_dir = backend[2]
    if takes_dir and not location:
        raise StoreError(f"store URL {url!r} names no directory: use {scheme}://DIR")
    if not takes_dir and location:
        raise StoreError(f"store URL {url!r} takes no path: use {scheme}://")
    return scheme, Path(os.path.abspath(os.path.expanduser(location))) if takes_dir else None


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
