"""The Refs a stored run holds: found in values of any shape, replaced, read without blobs.

Design
------
The runner keeps an output by reference as a top-level `Ref`, but a Ref can
sit anywhere a value can (a node returning a dict of refs it received, a
``ctx.data`` entry), and the value model is open (user types, frames,
arrays, defaultdicts...). Rather than a second walker beside each codec,
`refs_in` and `replace_refs` pickle the value once with a ``persistent_id``
hook: pickle already knows how to go through every value a codec can decode,
and the hook sees every object on the way, Refs included. Array buffers go
out of band (protocol 5), so a large array is not copied to be walked.
Leaves (str, bytes, numbers...) and top-level Refs never reach pickle.

`load_brief` is what ``flowdag status`` reads: `Store.load_statuses` plus
the Refs of outputs kept by reference, never an inline output, never a blob.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flowdag.errors import CorruptStateError, StoreError
from flowdag.refs import Ref
from flowdag.state import RunState
from flowdag.stores._record_reads import meta_blobs
from flowdag.stores.base import Store, StoredNode, check_run_id

__all__ = ["load_brief", "refs_in", "replace_refs"]

_LEAVES = (type(None), bool, int, float, complex, str, bytes, bytearray, datetime)


def refs_in(value: Any) -> list[Ref]:
    """Every `Ref` inside ``value`` (``value`` itself included), each object once, in order.

    Raises:
        StoreError: ``value`` holds something that cannot be walked (not picklable).
    """
    if type(value) is Ref:
        return [value]
    if isinstance(value, _LEAVES):
        return []
    found: dict[int, Ref] = {}

    class Finder(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            if type(obj) is Ref:
                found.setdefault(id(obj), obj)
                return id(obj)  # walked no further: a Ref holds no Ref
            return None

    _walk(lambda sink: Finder(sink, protocol=5, buffer_callback=_out_of_band), value)
    return list(found.values())


def replace_refs(value: Any, new: Mapping[Ref, Ref]) -> Any:
    """``value`` with every `Ref` that is a key of ``new`` replaced by its value there.

    The rest of ``value`` is built anew (the caller's value is left alone;
    array buffers are shared, not copied).

    Raises:
        StoreError: ``value`` holds something that cannot be walked (not picklable).
    """
    if type(value) is Ref:
        return new.get(value, value)
    if isinstance(value, _LEAVES):
        return value
    refs: list[Ref] = []
    buffers: list[pickle.PickleBuffer] = []

    class Swapper(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            if type(obj) is Ref:
                refs.append(obj)
                return len(refs) - 1
            return None

    class Restorer(pickle.Unpickler):
        def persistent_load(self, pid: Any) -> Any:
            old = refs[pid]
            return new.get(old, old)

    sink = io.BytesIO()
    _walk(lambda _: Swapper(sink, protocol=5, buffer_callback=buffers.append), value)
    sink.seek(0)
    return Restorer(sink, buffers=buffers).load()


def _walk(pickler: Any, value: Any) -> None:
    try:
        pickler(_Discard()).dump(value)
    except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
        raise StoreError(
            f"cannot look for refs inside a value of type {type(value).__name__}: {exc}"
        ) from exc


def _out_of_band(buffer: pickle.PickleBuffer) -> bool:
    return False  # kept out of the stream: only walked past, never read


class _Discard(io.RawIOBase):
    """Where a pickle that is only walked goes: nowhere."""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return len(memoryview(data))


def load_brief(store: Store, run_id: str) -> RunState:
    """`Store.load_statuses`, plus the output of each node whose output is a `Ref`.

    Inline outputs stay None and no blob is read; each Ref is bound to the
    store. A run whose records list no blob costs what `load_statuses` does;
    one that does is read once more, whole, decoding only the outputs of the
    nodes whose records list blobs (small: a ref, unless a large value holds refs).

    Raises:
        RunNotFoundError: the store holds no such run, or it expired.
        CorruptStateError: the run's records are damaged.
    """
    run_id = check_run_id(run_id)
    store._check_open()
    header, metas = store._load_metas(run_id)
    nodes = {name: StoredNode(meta) for name, meta in metas.items()}
    if _holding(store, run_id, metas):
        run = store._load(run_id)  # outputs as bytes: only those holding refs are decoded
        header = run.header
        holding = _holding(store, run_id, {name: node.meta for name, node in run.nodes.items()})
        nodes = {
            name: StoredNode(node.meta, node.output if name in holding else None)
            for name, node in run.nodes.items()
        }
    state = store._unexpired(store._decode_run(run_id, header, nodes, {}))
    for node in state.nodes.values():
        if type(node.output) is not Ref:
            node.output = None  # a large value holding refs: not shown by a status
    return state


def _holding(store: Store, run_id: str, metas: Mapping[str, bytes]) -> set[str]:
    """The nodes whose meta records list blobs (their outputs hold refs)."""
    decode = store.codec.decode
    try:
        return {name for name, meta in metas.items() if meta_blobs(decode(meta))}
    except (CorruptStateError, KeyError, TypeError, ValueError) as exc:
        raise store._damaged(run_id, exc) from exc
