"""The key of a cache entry, and the table key it is stored under.

`cache_key` makes the key of a cache entry: the hex sha256 of its parts
(workflow, node, code fingerprint, ``cache_version``, and either each input's
stored digest by dep name or the user's canonical key), each part length
prefixed and the two forms told apart by a marker, so no two different sets of
parts give one key. An entry is stored under `entry_key`: ``workflow/node/``
then that digest (the digest alone decides; the names are for locality).

Pure, as `flowdag._cache_keys`: the same key in every process.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flowdag.errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = [
    "KeyHeads",
    "cache_key",
    "entry_key",
    "input_names",
    "inputs_digest",
    "key_head",
    "user_key_digest",
]

_LENGTH = struct.Struct(">Q")
_KEY_FORMAT = b"flowdag cache key 1\x00"


def cache_key(
    workflow: str,
    node: str,
    fingerprint: str,
    version: str,
    inputs: Mapping[str, str] | None,
    user_key: bytes | None,
) -> str:
    """The key of a cache entry: 64 hex digits over all its parts.

    Exactly one of ``inputs`` (each dep's stored output digest, by dep name;
    ``{}`` for a node without deps) and ``user_key`` (`canonical` of what the
    node's ``cache_key`` returned) is given.

    Raises:
        InvalidArgumentTypeError: a part of the wrong type.
        InvalidArgumentError: both or neither of ``inputs`` and ``user_key``.
    """
    if (inputs is None) == (user_key is None):
        raise InvalidArgumentError(
            "cache_key takes either inputs (the deps' digests) or user_key (a canonical "
            "key), exactly one of them"
        )
    head = key_head(workflow, node, fingerprint, version)
    if user_key is not None:
        return user_key_digest(head, user_key)
    assert inputs is not None
    if not isinstance(inputs, Mapping):
        raise InvalidArgumentTypeError(
            f"cache_key: inputs must be a mapping of dep name to digest, not "
            f"{type(inputs).__qualname__}"
        )
    return inputs_digest(head, input_names(inputs), inputs)


def entry_key(workflow: str, node: str, digest: str) -> str:
    """The table key of the entry whose `cache_key` is ``digest``: ``workflow/node/digest``.

    The digest alone tells entries apart; the names in front are for locality.
    A store keeping its tables in key order (LMDB's B-tree) puts the entries of
    a group commit next to each other, as its nodes finish in the order of
    their names (a DAG's order), rather than each on a page of its own that
    the commit copies and writes (10,000 cached nodes: tens of MB written).
    The first release stored entries under the bare digest; those are still
    read (see `flowdag._cache.RunCache.lookup`).
    """
    return f"{workflow}/{node}/{digest}"


def key_head(workflow: str, node: str, fingerprint: str, version: str) -> bytes:
    """What every key of one node's entries starts with: the format, then its four
    fixed parts, each length prefixed (see `cache_key`).

    Raises:
        InvalidArgumentTypeError: a part that is not a str.
    """
    return KeyHeads(workflow).head(node, fingerprint, version)


class KeyHeads:
    """`key_head` and `input_names` for the nodes of one workflow, the parts nodes
    share (the workflow, a ``cache_version``, a tuple of deps) framed once."""

    __slots__ = ("_names", "_versions", "_workflow")

    def __init__(self, workflow: str) -> None:
        self._workflow = _KEY_FORMAT + _framed("workflow", workflow)
        self._versions: dict[str, bytes] = {}
        self._names: dict[tuple[str, ...], tuple[tuple[str, bytes], ...]] = {}

    def head(self, node: str, fingerprint: str, version: str) -> bytes:
        """`key_head` of ``node`` of this workflow."""
        tail = self._versions.get(version) if type(version) is str else None
        if tail is None:
            tail = self._versions[version] = _framed("version", version)  # or raises
        return b"".join(
            (self._workflow, _framed("node", node), _framed("fingerprint", fingerprint), tail)
        )

    def names(self, deps: tuple[str, ...]) -> tuple[tuple[str, bytes], ...]:
        """`input_names` of ``deps``."""
        names = self._names.get(deps)
        if names is None:
            names = self._names[deps] = input_names(deps)
        return names


def input_names(deps: Iterable[str]) -> tuple[tuple[str, bytes], ...]:
    """``deps`` in the order their digests are hashed, each with its framed name:
    what `inputs_digest` takes, computed once per node.

    Raises:
        InvalidArgumentTypeError: a dep name that is not a str.
    """
    named = sorted((_text("input name", dep), dep) for dep in deps)
    return tuple((dep, _LENGTH.pack(len(data)) + data) for data, dep in named)


def inputs_digest(
    head: bytes, names: Sequence[tuple[str, bytes]], inputs: Mapping[str, str]
) -> str:
    """The key of the entry of the node `key_head` gave ``head``, on ``inputs``
    (dep name -> stored output digest; ``names`` from `input_names` of its deps).

    Raises:
        InvalidArgumentTypeError: a digest that is not a str.
    """
    parts = [head, b"I", _LENGTH.pack(len(names))]
    for dep, framed in names:
        digest = inputs[dep]
        if type(digest) is not str:
            _text(f"digest of {dep!r}", digest)  # raises, naming the dep
        data = digest.encode("utf-8", "surrogatepass")
        parts += (framed, _LENGTH.pack(len(data)), data)
    return hashlib.sha256(b"".join(parts)).hexdigest()


def user_key_digest(head: bytes, user_key: bytes) -> str:
    """The key of the entry of the node `key_head` gave ``head``, on ``user_key``
    (`canonical` of what its ``cache_key`` returned).

    Raises:
        InvalidArgumentTypeError: ``user_key`` is not bytes.
    """
    if type(user_key) is not bytes:
        raise InvalidArgumentTypeError(
            f"cache_key: user_key must be bytes (from canonical()), not "
            f"{type(user_key).__qualname__}"
        )
    # The form marker: a fixed place, after four length-prefixed parts.
    return hashlib.sha256(head + b"U" + _LENGTH.pack(len(user_key)) + user_key).hexdigest()


def _framed(label: str, value: Any) -> bytes:
    data = _text(label, value)
    return _LENGTH.pack(len(data)) + data


def _text(label: str, value: Any) -> bytes:
    if type(value) is not str:
        raise InvalidArgumentTypeError(
            f"cache_key: {label} must be a str, not {type(value).__qualname__}"
        )
    return value.encode("utf-8", "surrogatepass")  # injective; names were checked upstream
