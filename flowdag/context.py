"""`Context`: what a node sees of its run, and the ``ctx.data`` it may change.

A node's writes to ``ctx.data`` are buffered in its attempt: the node reads its
own writes over the run's shared data, and the changes become visible to other
nodes only when the runner has committed them together with the node's output.
A failed attempt's changes are dropped, so what a resumed run sees is exactly
what was committed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, BinaryIO

from flowdag.errors import FlowdagError

if TYPE_CHECKING:
    from flowdag.kv import StagedKV

__all__ = ["Context", "DataView", "idempotency_key"]

_DELETED: Any = object()


def idempotency_key(run_id: str, node: str) -> str:
    """A key stable for one node of one run: across attempts, resumes and processes."""
    digest = hashlib.blake2b(f"{run_id}\x00{node}".encode(), digest_size=16)
    return digest.hexdigest()


class DataView(MutableMapping[str, Any]):
    """``ctx.data``: the run's shared data with this attempt's changes laid over it."""

    __slots__ = ("_changes", "_shared")

    def __init__(self, shared: Mapping[str, Any]) -> None:
        self._shared = shared
        self._changes: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        value = self._changes.get(key, self._shared.get(key, _DELETED))
        if value is _DELETED:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"ctx.data keys must be strings, not {type(key).__name__}")
        self._changes[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._changes[key] = _DELETED

    def __iter__(self) -> Iterator[str]:
        # list(): the driver thread may add keys to the shared dict meanwhile.
        keys = dict.fromkeys(list(self._shared))
        keys.update(dict.fromkeys(self._changes))
        return (k for k in keys if self._changes.get(k) is not _DELETED)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, key: object) -> bool:
        value = self._changes.get(key, self._shared.get(key, _DELETED))  # type: ignore[call-overload]
        return value is not _DELETED

    def changes(self) -> dict[str, tuple[bool, Any]]:
        """Changed keys -> (True, new value) or (False, None) for a deletion."""
        return {
            key: (False, None) if value is _DELETED else (True, value)
            for key, value in self._changes.items()
        }

    def __repr__(self) -> str:
        return f"DataView({dict(self)!r})"


class Context:
    """What a node function receives as ``ctx``.

    Attributes:
        run_id: the run's id.
        node: this node's name.
        attempt: 1 for the node's first attempt, 2 for the next, ... counted over
            the run's life: a resume goes on from the stored ``attempts``.
        inputs: every dependency's name -> its output.
        data: custom data shared by the run and persisted with each node.
        idempotency_key: stable for this run id and node across attempts and
            resumes; use it to make side effects that may repeat safe.
        kv: the store's key-value state (`flowdag.kv`): ``get``, ``set``,
            ``delete``, ``update``; writes commit with the node's completion.
    """

    __slots__ = ("_open_output", "attempt", "data", "inputs", "kv", "node", "output", "run_id")

    def __init__(
        self,
        run_id: str,
        node: str,
        attempt: int,
        inputs: Mapping[str, Any],
        data: DataView,
        open_output: Callable[[], Any] | str = "has no blob area to write to here",
        kv: StagedKV | None = None,
    ) -> None:
        self.run_id = run_id
        self.node = node
        self.attempt = attempt
        self.inputs = inputs
        self.data = data
        # What opens the output file, or why there is none here.
        self._open_output = open_output
        self.output: Any = None  # the file output_file() gave, once it was called
        self.kv: StagedKV = kv  # type: ignore[assignment]  # every attempt gives one

    def output_file(self) -> BinaryIO:
        """A binary file in the store's blob area: what is written becomes the output.

        Use it as ``with ctx.output_file() as f: f.write(...)`` and return None:
        the node's output is then the bytes written (a `flowdag.Ref` to them,
        ``ref.open()`` streams them back), never held in memory. They are
        hashed, compressed (zstd) and, on an encrypted store, encrypted as they
        are written, and made durable before the node's record is committed.
        If the node raises, the file is discarded.

        Raises:
            FlowdagError: called twice in one attempt, or where no blob area is
                reachable (another process without a shared, unencrypted store).
        """
        if self.output is not None:
            raise FlowdagError(
                f"node '{self.node}': ctx.output_file() was already called in this attempt; "
                "a node has one output: write it all to the first file"
            )
        if not callable(self._open_output):
            raise FlowdagError(f"node '{self.node}': ctx.output_file() {self._open_output}")
        self.output = self._open_output()
        return self.output  # type: ignore[no-any-return]

    @property
    def idempotency_key(self) -> str:
        """Stable for this run id and node (see `idempotency_key`)."""
        return idempotency_key(self.run_id, self.node)

    def __repr__(self) -> str:
        return f"Context(run_id={self.run_id!r}, node={self.node!r}, attempt={self.attempt})"
