"""Input waits as stored: the entries of the store's ``waits`` table.

A run whose input node is ready records a *wait* (`WaitEntry`) in the
store-wide ``waits`` table (`flowdag.stores._tables`), not in the run itself:
whoever answers (`flowdag.provide_input`, perhaps in another process while
the run is held) changes only that table, in one exclusive transaction, and
the next `flowdag.run` of the run id turns the answer into the node's
completion, deleting the entry in the same commit. Two keys per wait::

    wait\\0<run id>\\0<node>   -> msgpack map: the wait (see `WaitEntry`)
    key\\0<sha256 of the key>  -> msgpack [run id, node], while the key works

The key itself (`new_key`) is shown once and never stored: only its sha256,
which is enough to look a wait up and cannot be turned back into the key (a
key has 192 random bits). Deleting the ``key`` entry is what makes a key
single use: it goes when the wait is answered, reissued or expired. An entry
holds JSON values only (schema, prompt, default, the answer), so it needs no
codec and no workflow code to read, and moves between stores as it is.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import msgpack

from flowdag.errors import CorruptStateError

__all__ = [
    "KEY_PREFIX",
    "OPEN",
    "PROVIDED",
    "TABLE",
    "WaitEntry",
    "decode_entry",
    "decode_index",
    "encode_entry",
    "encode_index",
    "hash_key",
    "index_key",
    "new_key",
    "run_prefix",
    "wait_key",
]

#: The store table that holds the waits.
TABLE: Final = "waits"
#: How every key starts: says what it is, where one is pasted in the wrong place.
KEY_PREFIX: Final = "fdw_"
_KEY_BYTES = 24  # 192 random bits (the contract asks for at least 128)
_FORMAT = 1  # an entry's format version ("v")

#: A wait's states: waiting for an answer, or answered (the run takes it next).
OPEN: Final = "open"
PROVIDED: Final = "provided"


@dataclass(frozen=True, slots=True)
class WaitEntry:
    """One wait as stored.

    ``key_hash`` is the sha256 of the key that answers it now (reissuing
    replaces it). ``expires_at`` is fixed when the wait starts (None: never).
    ``default`` is a one-item tuple holding the default, or empty when the
    input has none. ``value`` and ``provided_at`` are set once answered.
    """

    run_id: str
    node: str
    key_hash: str
    schema: dict[str, Any]
    schema_digest: str
    prompt: Any
    started_at: datetime
    expires_at: datetime | None
    default: tuple[Any, ...] = ()
    state: str = OPEN
    value: Any = None
    provided_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # fields a newer release wrote

    def expired(self, now: datetime) -> bool:
        """Whether the deadline has passed at ``now`` (an answered wait never expires)."""
        return self.state == OPEN and self.expires_at is not None and now >= self.expires_at


def new_key() -> str:
    """A fresh key: `KEY_PREFIX` and 192 bits from `secrets`, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)


def hash_key(key: str) -> str:
    """What is stored of ``key``: its sha256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def wait_key(run_id: str, node: str) -> str:
    """The table key of the wait of ``node`` in run ``run_id``."""
    return f"wait\0{run_id}\0{node}"


def run_prefix(run_id: str | None = None) -> str:
    """The table-key prefix of every wait (of run ``run_id``, if given)."""
    return "wait\0" if run_id is None else f"wait\0{run_id}\0"


def index_key(key_hash: str) -> str:
    """The table key that maps a key's hash to its wait."""
    return f"key\0{key_hash}"


def encode_index(run_id: str, node: str) -> bytes:
    packed: bytes = msgpack.packb([run_id, node], use_bin_type=True)
    return packed


def decode_index(raw: bytes, where: str) -> tuple[str, str]:
    try:
        run_id, node = msgpack.unpackb(raw, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CorruptStateError(f"{where}: unreadable key entry ({exc})") from None
    if type(run_id) is not str or type(node) is not str:
        raise CorruptStateError(f"{where}: unreadable key entry (not a run and a node)")
    return run_id, node


def encode_entry(entry: WaitEntry) -> bytes:
    doc: dict[str, Any] = {
        **entry.extra,
        "v": _FORMAT,
        "run": entry.run_id,
        "node": entry.node,
        "key": entry.key_hash,
        "schema": entry.schema,
        "sd": entry.schema_digest,
        "prompt": entry.prompt,
        "at": entry.started_at.timestamp(),
        "exp": None if entry.expires_at is None else entry.expires_at.timestamp(),
        "def": list(entry.default),
        "state": entry.state,
    }
    if entry.state == PROVIDED:
        assert entry.provided_at is not None
        doc["value"] = entry.value
        doc["by_at"] = entry.provided_at.timestamp()
    packed: bytes = msgpack.packb(doc, use_bin_type=True)
    return packed


_KNOWN = frozenset(
    {"v", "run", "node", "key", "schema", "sd", "prompt", "at", "exp", "def", "state", "value"}
    | {"by_at"}
)


def decode_entry(raw: bytes, where: str) -> WaitEntry:
    """The wait stored as ``raw``; `CorruptStateError` naming ``where`` if it is not one."""
    try:
        doc = msgpack.unpackb(raw, raw=False)
        if type(doc) is not dict or type(doc.get("v")) is not int:
            raise ValueError("not a wait entry")
        if doc["v"] > _FORMAT:
            raise CorruptStateError(
                f"{where}: written by a newer flowdag (wait format {doc['v']}); upgrade flowdag"
            )
        state = doc["state"]
        if state not in (OPEN, PROVIDED) or type(doc["schema"]) is not dict:
            raise ValueError(f"bad state {state!r} or schema")
        exp = doc["exp"]
        return WaitEntry(
            _text(doc["run"]),
            _text(doc["node"]),
            _text(doc["key"]),
            doc["schema"],
            _text(doc["sd"]),
            doc["prompt"],
            _time(doc["at"]),
            None if exp is None else _time(exp),
            tuple(doc["def"]),
            state,
            doc.get("value"),
            _time(doc["by_at"]) if state == PROVIDED else None,
            {k: v for k, v in doc.items() if k not in _KNOWN},
        )
    except CorruptStateError:
        raise
    except (KeyError, ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        raise CorruptStateError(f"{where}: unreadable wait entry ({exc})") from None


def _text(value: object) -> str:
    if type(value) is not str:
        raise ValueError(f"expected text, got {type(value).__name__}")
    return value


def _time(value: object) -> datetime:
    if type(value) is not float and type(value) is not int:
        raise ValueError(f"expected a time, got {type(value).__name__}")
    return datetime.fromtimestamp(value, UTC)
