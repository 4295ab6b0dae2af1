"""`Ref`: a node output kept in the store's blob area instead of inline in its record.

Design
------
A `Ref` is plain data: the blob's address and sizes, the output's small
``extracted`` fields and ``preview``, and when it expires. It is encoded in a
node record like any value (msgpack ext 42, JSON tag ``$ref``: see `fields_of`
and `ref_from`), compared and hashed by value, and pickled to workers.

Reading the payload needs the store's blob area, so a Ref is *bound* to a
`BlobReader` (`Ref.bind` returns a bound copy; a store binds the refs it
loads). The binding is not part of the value: it is left out of ``==``,
``hash`` and ``repr``, and never encoded. Pickled, a Ref keeps its binding only
when the reader can travel (`BlobReader.portable`: a plain directory area
reopens by path in the worker); an encrypted area's key and a memory area's
dict never travel, so such a Ref arrives unbound and `load`/`open` raise
`FlowdagError` saying how to bind it.

The address is the sha256 of the blob's bytes before compression; ``uri`` is
``blob:sha256:<64 hex digits>``, the same in every store (an encrypted store
derives its file names from it with a keyed hash), so a Ref copied with its
run to another store stays valid once the blob is copied too. `sha256_of_uri`
is the only way from a uri to a name: it accepts exactly that form, so no uri
can name a path outside the store.

``encoding`` says what the blob's bytes are: ``"raw"`` (the output is these
bytes, e.g. written through ``ctx.output_file()``; `Ref.open` streams them) or
the name of the codec that encoded the value (`Ref.load` decodes them with
the bound reader's codec).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, BinaryIO, Protocol, Self

from flowdag._equality import equal
from flowdag.errors import (
    BlobMissingError,
    CorruptStateError,
    FlowdagError,
    InvalidArgumentTypeError,
)

__all__ = [
    "RAW",
    "BlobReader",
    "LoadedOnRead",
    "Ref",
    "binding",
    "collecting",
    "fields_of",
    "hold",
    "ref_from",
    "sha256_of_uri",
    "start_binding",
    "start_collecting",
    "stop_binding",
    "stop_collecting",
]

#: ``Ref.encoding`` of a blob that holds the output's bytes as they are.
RAW = "raw"
_URI_PREFIX = "blob:sha256:"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_COMPRESSIONS = (None, "zstd")


class BlobReader(Protocol):
    """What a bound `Ref` reads through: a store's blob area and its codec."""

    @property
    def portable(self) -> bool:
        """Whether a Ref pickled with this reader keeps it (it reopens by path, holds no key)."""
        ...

    def open_ref(self, ref: Ref) -> BinaryIO:
        """The blob's bytes, checked against ``ref.sha256`` and ``ref.size`` as they are read."""
        ...

    def decode_ref(self, ref: Ref, data: bytes) -> Any:
        """The value ``data`` (the blob of ``ref``, checked) encodes."""
        ...


def sha256_of_uri(uri: object) -> str:
    """The content hash a blob uri names; anything but ``blob:sha256:<64 hex>`` is refused.

    Raises:
        CorruptStateError: ``uri`` is not such a uri (a stored ref is damaged).
    """
    if type(uri) is str and uri.startswith(_URI_PREFIX):
        digest = uri[len(_URI_PREFIX) :]
        if _HEX64.fullmatch(digest):
            return digest
    raise CorruptStateError(
        f"blob uri {str(uri)[:100]!r} is not 'blob:sha256:' followed by 64 lowercase hex "
        "digits; the ref holding it is damaged"
    )


def _check(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise InvalidArgumentTypeError(
            f"Ref {name} must be {expected}, not {type(value).__name__} {str(value)[:80]!r}"
        )


@dataclass(frozen=True, slots=True, eq=False)
class Ref:
    """An output kept in the store's blob area: its address, sizes, and small inline fields.

    Attributes:
        uri: names the blob within its store (``blob:sha256:<hex>``).
        sha256: hex digest of the blob's bytes before compression.
        size: length of those bytes (the encoded value).
        stored_size: bytes the blob takes in the store.
        compression: ``"zstd"`` or None.
        expires_at: when the blob may go (an aware datetime), or None.
        extracted: the node's ``extract=`` fields.
        preview: the node's ``preview=`` sample.
        preview_truncated: whether ``preview`` was cut to fit inline.
        encoding: ``"raw"`` (the output is the blob's bytes) or the codec's name.
    """

    uri: str
    sha256: str
    size: int
    stored_size: int
    compression: str | None = "zstd"
    expires_at: datetime | None = None
    extracted: dict[str, Any] = field(default_factory=dict)
    preview: Any = None
    preview_truncated: bool = False
    encoding: str = RAW
    # Where load() and open() read from: not part of the value (see the module docstring).
    _reader: BlobReader | None = field(default=None, init=False, repr=False, compare=False)
    _origin: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check(type(self.uri) is str, "uri", self.uri, "a str")
        _check(
            type(self.sha256) is str and bool(_HEX64.fullmatch(self.sha256)),
            "sha256",
            self.sha256,
            "64 lowercase hex digits",
        )
        if self.uri != _URI_PREFIX + self.sha256:
            raise InvalidArgumentTypeError(
                f"Ref uri {self.uri[:100]!r} must be {_URI_PREFIX!r} followed by its sha256"
            )
        for name in ("size", "stored_size"):
            value = getattr(self, name)
            _check(type(value) is int and value >= 0, name, value, "an int >= 0")
        _check(self.compression in _COMPRESSIONS, "compression", self.compression, "'zstd' or None")
        _check(
            self.expires_at is None
            or (type(self.expires_at) is datetime and self.expires_at.utcoffset() is not None),
            "expires_at",
            self.expires_at,
            "an aware datetime or None",
        )
        _check(
            type(self.extracted) is dict and all(type(k) is str for k in self.extracted),
            "extracted",
            self.extracted,
            "a dict with str keys",
        )
        _check(
            type(self.preview_truncated) is bool,
            "preview_truncated",
            self.preview_truncated,
            "a bool",
        )
        _check(
            type(self.encoding) is str and bool(self.encoding),
            "encoding",
            self.encoding,
            "a non-empty str",
        )

    @classmethod
    def for_blob(cls, sha256: str, size: int, stored_size: int, **more: Any) -> Self:
        """A Ref to the blob of ``sha256`` (its uri made from the hash)."""
        return cls(_URI_PREFIX + sha256, sha256, size, stored_size, **more)

    # -- value semantics: the binding is not part of the value ------------------------

    def __eq__(self, other: object) -> bool:
        if type(other) is not Ref:
            return NotImplemented
        return (
            self.uri == other.uri
            and self.sha256 == other.sha256
            and self.size == other.size
            and self.stored_size == other.stored_size
            and self.compression == other.compression
            and self.expires_at == other.expires_at
            and self.preview_truncated == other.preview_truncated
            and self.encoding == other.encoding
            # extracted and preview are stored values: NaN equals NaN, arrays compare.
            and equal(self.extracted, other.extracted)
            and equal(self.preview, other.preview)
        )

    def __hash__(self) -> int:
        return hash((self.sha256, self.size, self.encoding))

    def __getstate__(self) -> tuple[Any, ...]:
        reader = self._reader if self._reader is not None and self._reader.portable else None
        plain = tuple(getattr(self, f.name) for f in fields(self) if f.init)
        return (plain, reader, self._origin if reader is not None else "")

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        plain, reader, origin = state
        for f, value in zip((f for f in fields(self) if f.init), plain, strict=True):
            object.__setattr__(self, f.name, value)
        object.__setattr__(self, "_reader", reader)
        object.__setattr__(self, "_origin", origin)

    def __copy__(self) -> Ref:
        return self  # frozen: a copy in this process keeps its binding, as itself

    def __deepcopy__(self, memo: dict[int, Any]) -> Ref:
        plain = {name: copy.deepcopy(getattr(self, name), memo) for name in _FIELDS}
        return Ref(**plain)._bound_to(self._reader, self._origin)

    # -- reading --------------------------------------------------------------------------

    @property
    def bound(self) -> bool:
        """Whether `load` and `open` have a blob area to read from."""
        return self._reader is not None

    def bind(self, reader: BlobReader, origin: str = "") -> Ref:
        """A copy of this Ref that reads through ``reader``.

        Args:
            origin: names the ref in error messages, e.g. ``run 'r1', node 'fetch'``.
        """
        return Ref(**{name: getattr(self, name) for name in _FIELDS})._bound_to(reader, origin)

    def _bound_to(self, reader: BlobReader | None, origin: str) -> Ref:
        object.__setattr__(self, "_reader", reader)  # only on a Ref no one else holds yet
        object.__setattr__(self, "_origin", origin)
        return self

    def open(self) -> BinaryIO:
        """A binary stream of a ``"raw"`` output's bytes, checked as it is read.

        A hash or size mismatch raises `CorruptStateError` no later than the end of
        the stream (before ``read`` returns ``b""``).

        Raises:
            FlowdagError: the Ref is unbound (no blob area to read from), or the
                output is an encoded value, not bytes (use `load`).
            BlobMissingError: the blob is missing, or the ref expired.
        """
        reader = self._need_reader()
        if self.encoding != RAW:
            raise FlowdagError(
                f"{self._name()} holds a value encoded with {self.encoding!r}, not bytes: "
                "use ref.load() to read it; open() streams bytes outputs only"
            )
        return reader.open_ref(self)

    def load(self) -> Any:
        """The output's value, read whole and checked against ``sha256``.

        Raises:
            FlowdagError: the Ref is unbound (no blob area to read from).
            BlobMissingError: the blob is missing, or the ref expired.
            CorruptStateError: the blob does not match its hash or cannot be decoded.
        """
        reader = self._need_reader()
        with reader.open_ref(self) as stream:
            data = stream.read()
        return data if self.encoding == RAW else reader.decode_ref(self, data)

    def _need_reader(self) -> BlobReader:
        if self.expires_at is not None and datetime.now(UTC) >= self.expires_at:
            raise BlobMissingError(
                f"{self._name()} expired at {self.expires_at.isoformat()}: its blob is no "
                "longer readable (a later gc deletes it); run the node again to recompute it"
            )
        if self._reader is None:
            raise FlowdagError(
                f"{self._name()} is not bound to a store's blob area, so its payload cannot "
                "be read: bind it to the store that holds the blob (ref.bind(...)); a ref "
                "pickled from an encrypted or memory store arrives unbound, since keys and "
                "memory never travel"
            )
        return self._reader

    def _name(self) -> str:
        where = f" of {self._origin}" if self._origin else ""
        return f"ref {self.uri}{where}"


class LoadedOnRead(Mapping[str, Any]):
    """Values by name, where a `Ref` is loaded when first read, then kept.

    What ``result.outputs`` and ``ctx.inputs`` are: an output kept by reference
    costs nothing until it is used, and a read twice loads it once.
    """

    __slots__ = ("_values",)

    def __init__(self, values: MutableMapping[str, Any]) -> None:
        self._values = values

    def __getitem__(self, name: str) -> Any:
        value = self._values[name]
        if type(value) is Ref:
            value = self._values[name] = value.load()
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        shown = (
            f"{name!r}: {f'<{value.uri}>' if type(value) is Ref else repr(value)}"
            for name, value in self._values.items()
        )
        return "{" + ", ".join(shown) + "}"


# -- codec support: a Ref as plain fields ----------------------------------------------

_FIELDS = tuple(f.name for f in fields(Ref) if f.init)


# The codecs meet every Ref they encode or decode here, however deep in a value:
# `collecting` notes the blobs a record holds (its meta record lists them, for
# gc), `binding` binds what a store loads. Unset, each costs a lookup per Ref.
_COLLECTED: ContextVar[dict[str, datetime | None] | None] = ContextVar("collected", default=None)
_Origin = str | Callable[[], str]
_BINDING: ContextVar[tuple[BlobReader, _Origin] | None] = ContextVar("binding", default=None)


@contextmanager
def collecting() -> Iterator[dict[str, datetime | None]]:
    """Note every Ref encoded or decoded in the block: sha256 -> its ``expires_at``.

    A blob held twice keeps the later expiry (None, never, is the latest).
    """
    token, seen = start_collecting()
    try:
        yield seen
    finally:
        stop_collecting(token)


_Held = dict[str, datetime | None]


def start_collecting() -> tuple[Token[_Held | None], _Held]:
    """`collecting` without a context manager (a hot path): end it with `stop_collecting`."""
    seen: _Held = {}
    return _COLLECTED.set(seen), seen


def stop_collecting(token: Token[_Held | None]) -> None:
    _COLLECTED.reset(token)


@contextmanager
def binding(reader: BlobReader, origin: str = "") -> Iterator[None]:
    """Bind every Ref decoded in the block to ``reader`` (see `Ref.bind`)."""
    token = start_binding(reader, origin)
    try:
        yield
    finally:
        stop_binding(token)


def start_binding(reader: BlobReader, origin: _Origin = "") -> Token[Any]:
    """`binding` without a context manager: end it with `stop_binding`.

    ``origin`` may be a function, called only when a Ref is decoded: a load binds
    once per run, and its refs still name their node.
    """
    return _BINDING.set((reader, origin))


def stop_binding(token: Token[Any]) -> None:
    _BINDING.reset(token)


def hold(blobs: dict[str, datetime | None], sha256: str, expires_at: datetime | None) -> None:
    """Note in ``blobs`` that a ref holds ``sha256`` until ``expires_at`` (None: for ever).

    A blob held twice is held until the later expiry.
    """
    if sha256 in blobs:
        known = blobs[sha256]
        expires_at = None if known is None or expires_at is None else max(known, expires_at)
    blobs[sha256] = expires_at


def _note(ref: Ref) -> None:
    seen = _COLLECTED.get()
    if seen is not None:
        hold(seen, ref.sha256, ref.expires_at)


def fields_of(ref: Ref) -> dict[str, Any]:
    """The stored form of ``ref`` (both codecs encode this dict's values themselves)."""
    _note(ref)
    return {name: getattr(ref, name) for name in _FIELDS}


def ref_from(stored: Any) -> Ref:
    """The `Ref` `fields_of` gave; anything else is damage (`CorruptStateError`)."""
    if type(stored) is not dict or set(stored) != set(_FIELDS):
        keys = sorted(map(str, stored)) if type(stored) is dict else type(stored).__name__
        raise CorruptStateError(f"blob holds an invalid ref (fields {keys})")
    try:
        ref = Ref(**stored)
    except (InvalidArgumentTypeError, CorruptStateError) as exc:
        raise CorruptStateError(f"blob holds an invalid ref: {exc}") from None
    _note(ref)
    bound = _BINDING.get()
    if bound is None:
        return ref
    reader, origin = bound
    return ref._bound_to(reader, origin if type(origin) is str else origin())  # type: ignore[operator]
