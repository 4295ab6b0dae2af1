"""A node's provenance as its meta record's eighth field: written, and checked back.

See `flowdag.stores._records` for the record around it and
`flowdag.state.Provenance` for what each field means.

Format 5 writes ``[code, context, out]``: ``out`` the output's digest (or
None), ``code`` and ``context`` each a small msgpack document held as bytes
(None when empty): ``code`` = ``{"fp", "src", "parts"}`` and ``context`` =
``{"in", "why", "pin", "audit"}``, keys as in format 4 and each left out when
empty. Most nodes of a run share their code, and the nodes of a fan-out their
context too, so a load decodes and checks each distinct document once (the
bytes are the memo's key) and every other node costs two dict lookups: that
halved the load of a 100k-node run. Format 6 (this release) is format 5 with
each digest in the documents (``fp``, ``src``, the values of ``parts`` and
``in``) that is a sha256 in lowercase hex kept as its 32 bytes (`packed_digest`):
a node of a fan-out holds six, so its record is about 30% smaller. Any other
text stays text, and a read takes either (a run of format 5 resumed by this
release holds both). Format 4 wrote one dict of all eight keys; it is still read.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Mapping
from datetime import datetime
from itertools import chain
from types import MappingProxyType
from typing import Any

import msgpack

from flowdag.errors import CorruptStateError, InvalidArgumentError, InvalidArgumentTypeError
from flowdag.state import Override, Provenance, Reason, new_provenance
from flowdag.stores._fields import all_str as _all_str
from flowdag.stores._fields import moment as _moment
from flowdag.stores._fields import shown as _shown
from flowdag.stores._fields import to_micros

__all__ = ["digest_text", "packed_digest", "provenance_record", "read_provenance"]


def provenance_record(provenance: Provenance) -> list[Any]:
    """A node's provenance as its meta record's eighth field (see the module docstring).

    Once per committed node: the documents many nodes share are packed once
    (the memos are keyed by what goes into them) and checked when packed.

    Raises:
        InvalidArgumentTypeError: a field of the wrong type.
    """
    if type(provenance) is not Provenance:
        raise InvalidArgumentTypeError(
            f"node provenance must be a Provenance, not {type(provenance).__name__}"
        )
    output = provenance.output
    if output is not None and type(output) is not str:
        raise InvalidArgumentTypeError(f"provenance out must be a str, not {output!r}")
    code = _code_packed(provenance)
    # The nodes of a fan-out share their context: the last one packed is tried first.
    inputs, reason, manual, audit = (
        provenance.inputs,
        provenance.reason,
        provenance.manual,
        provenance.audit,
    )
    last = _LAST_CONTEXT
    if (
        reason is last[1]  # a Reason is frozen, as the audit tuple is: same object, same value
        and manual is last[2]
        and audit is last[3]
        and type(inputs) in _MAPPINGS
        and inputs == last[0]
    ):
        return [code, last[4], output]
    return [code, _context_packed(provenance), output]


def _code_packed(provenance: Provenance) -> bytes | None:
    """The code document of ``provenance``, packed once per code (see `provenance_record`)."""
    parts = provenance.parts
    if type(parts) is not dict and type(parts) is not MappingProxyType:
        # A fingerprint's parts view (`Fingerprint.parts_view`): with a lambda per
        # node, each node's code differs from all others in its own parts only, so
        # the shared parts are packed once per template and the rest joined to them.
        shared = getattr(parts, "shared", None)
        split = None if shared is None else shared()
        if split is not None:
            code = _template_code(provenance.fingerprint, provenance.source, *split)
            if code is not None:
                return code
        # Else the view makes the parts on each read: once here.
        parts = dict(parts.items())
    # The code memo is keyed by the digests and checked against the parts on a hit:
    # with a lambda per node every code differs, and a key of all its parts cost
    # more than it ever saved.
    key = (provenance.fingerprint, provenance.source)
    try:
        known = _PACKED_CODES.get(key, _UNKNOWN_CODE)
        if known is not _UNKNOWN_CODE and known[0] != parts:
            known = _UNKNOWN_CODE  # the same digests over other parts (a forged provenance)
    except TypeError:  # an unhashable field: the checks below name it
        return _code_document(provenance, parts)
    if known is _UNKNOWN_CODE:
        known = _remember(_PACKED_CODES, key, (dict(parts), _code_document(provenance, parts)))
    return known[1]


def _context_packed(provenance: Provenance) -> bytes | None:
    """The context document of ``provenance``, from the memo keyed by what goes into it."""
    global _LAST_CONTEXT
    reason = provenance.reason
    # A Reason is keyed by its fields: its __hash__ is Python.
    why = (reason.code, reason.detail) if type(reason) is Reason else (reason,)
    inputs = provenance.inputs
    key = (tuple(inputs.items()), why, provenance.manual, provenance.audit)
    try:
        context = _PACKED_CONTEXTS.get(key, _UNKNOWN)
    except TypeError:  # an unhashable field: the checks below name it
        return _context_document(provenance)
    if context is _UNKNOWN:
        context = _remember(_PACKED_CONTEXTS, key, _context_document(provenance))
    if type(inputs) in _MAPPINGS:  # checked (packed or found): the next node may share it
        # One tuple, replaced whole: a thread reading meanwhile sees one or the other.
        _LAST_CONTEXT = (
            dict(inputs),
            reason,
            provenance.manual,
            provenance.audit,
            context,
        )
    return context


#: (fingerprint, source) -> (parts, code document); context key -> context document.
_PACKED_CODES: dict[tuple[Any, ...], tuple[Mapping[str, str], bytes | None]] = {}
_PACKED_CONTEXTS: dict[tuple[Any, ...], bytes | None] = {}
_UNKNOWN = b"unknown"
_UNKNOWN_CODE: tuple[Mapping[str, str], bytes | None] = ({}, _UNKNOWN)
#: The context last packed or found: (inputs, reason, manual, audit, document).
_LAST_CONTEXT: tuple[Any, ...] = ({}, _UNKNOWN, None, None, None)


def _template_code(
    fingerprint: Any, source: Any, template: Any, own: tuple[Any, ...]
) -> bytes | None:
    """The code document of a fingerprint made from ``template`` (a `_Template`:
    ``fixed`` parts, then ``names`` with digests ``own``), as `_code_document`
    packs it; None when it must be made the long way (a field to check and word).

    A msgpack map is its header, then each key and value packed in turn: the
    bytes are those of packing the whole document.
    """
    if type(fingerprint) is not str or type(source) is not str:
        return None
    packed = _PACKED_TEMPLATES.get(template)
    if packed is None:
        packed = _remember(_PACKED_TEMPLATES, template, _template_parts(template))
    if not packed or len(own) != len(packed[1]):
        return None
    pack = _packer().pack
    pieces = [
        _FP_KEY,
        pack(packed_digest(fingerprint)),
        _SRC_KEY,
        pack(packed_digest(source)),
        packed[0],
    ]
    for i, name in enumerate(packed[1]):  # not zip(strict=): a keyword call is slow
        digest = own[i]
        if type(digest) is not str:
            return None
        pieces.append(name)
        pieces.append(pack(packed_digest(digest)))
    return b"".join(pieces)


def _template_parts(template: Any) -> tuple[bytes, tuple[bytes, ...]] | tuple[()]:
    """``parts`` of a template's documents up to its first own digest, and its own
    names, packed; () when any is not a str (checked once per template here)."""
    fixed, names = template.fixed, template.names
    if not (_all_str(fixed) and _all_str(fixed.values()) and _all_str(names)):
        return ()
    packer = _packer()
    pack = packer.pack
    head = [_PARTS_KEY, packer.pack_map_header(len(fixed) + len(names))]
    for name, digest in fixed.items():
        head.append(pack(name))
        head.append(pack(packed_digest(digest)))
    return b"".join(head), tuple(map(pack, names))


#: A `_Template` -> what `_template_parts` packed of it.
_PACKED_TEMPLATES: dict[Any, tuple[bytes, tuple[bytes, ...]] | tuple[()]] = {}


def _code_document(provenance: Provenance, parts: Mapping[str, str]) -> bytes | None:
    code: dict[str, Any] = {}
    for key, value in (("fp", provenance.fingerprint), ("src", provenance.source)):
        if value is not None:
            if type(value) is not str:
                raise InvalidArgumentTypeError(f"provenance {key} must be a str, not {value!r}")
            code[key] = packed_digest(value)
    _put_mapping(code, "parts", parts)
    return _packed(code)


def _context_document(provenance: Provenance) -> bytes | None:
    context: dict[str, Any] = {}
    _put_mapping(context, "in", provenance.inputs)
    reason = provenance.reason
    if reason is not None:
        if type(reason) is not Reason or not _all_str((reason.code, reason.detail)):
            raise InvalidArgumentTypeError(f"provenance reason must be a Reason, not {reason!r}")
        context["why"] = [reason.code, reason.detail]
    if provenance.manual:
        context["pin"] = True
    if provenance.audit:
        context["audit"] = _audit_record(provenance.audit)
    return _packed(context)


def _put_mapping(document: dict[str, Any], key: str, mapping: Mapping[str, str]) -> None:
    if mapping:
        if type(mapping) in _MAPPINGS:
            # A plain loop: the mappings are small (a node's parts, its deps), where
            # two sets of types (`_all_str`) cost four times as much.
            for name, value in mapping.items():
                if type(name) is not str or type(value) is not str:
                    raise InvalidArgumentTypeError(f"provenance {key} must map str to str")
        elif not _all_str(mapping) or not _all_str(mapping.values()):
            raise InvalidArgumentTypeError(f"provenance {key} must map str to str")
        document[key] = {name: packed_digest(value) for name, value in mapping.items()}


def packed_digest(text: str) -> str | bytes:
    """``text`` as stored in a document: a sha256 in lowercase hex as its 32 bytes
    (half the size), any other text as it is (`digest_text` reads either back)."""
    if len(text) == 64:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            return text
        if raw.hex() == text:  # not upper case: read back as it was written
            return raw
    return text


def digest_text(value: Any) -> Any:
    """A digest as read from a document: 32 bytes as lowercase hex, anything else as
    it is (for the caller to check)."""
    return value.hex() if type(value) is bytes and len(value) == 32 else value


def _packed(document: dict[str, Any]) -> bytes | None:
    if not document:
        return None
    packed: bytes = _packer().pack(document)
    return packed


def _packer() -> msgpack.Packer:
    # One Packer per thread: msgpack.packb makes (and allocates the buffer of) a
    # new one per call, most of the cost of a small document.
    try:
        packer: msgpack.Packer = _LOCAL.packer
    except AttributeError:
        packer = _LOCAL.packer = msgpack.Packer(use_bin_type=True)
    return packer


_LOCAL = threading.local()
#: The code document's map header (fp, src, parts) and its first key.
_FP_KEY = msgpack.Packer().pack_map_header(3) + msgpack.packb("fp")
_SRC_KEY = msgpack.packb("src")
_PARTS_KEY = msgpack.packb("parts")


def _audit_record(audit: tuple[Override, ...]) -> list[list[Any]]:
    entries = []
    for entry in audit:
        if type(entry) is not Override or not _all_str((entry.action, entry.by, entry.reason)):
            raise InvalidArgumentTypeError(f"provenance audit holds {entry!r}, not an Override")
        if not isinstance(entry.at, datetime) or entry.at.utcoffset() is None:
            raise InvalidArgumentError(f"override time must be timezone-aware, not {entry.at!r}")
        entries.append([entry.action, entry.by, to_micros(entry.at), entry.reason])
    return entries


_PROVENANCE_KEYS = frozenset({"fp", "src", "parts", "out", "in", "why", "pin", "audit"})
_TEXT_OR_NONE = frozenset({str, type(None)})
_NO_MAPPING: Mapping[str, str] = MappingProxyType({})
_MAPPINGS = frozenset({dict, MappingProxyType})
_REASON_TYPES = frozenset({list, tuple})  # tuple: none stored
# Many nodes share a reason ("first run of this run id"): one object each, not one per node.
_REASONS: dict[tuple[str, str], Reason] = {}
_MAX_REASONS = 10_000


def read_provenance(record: Any) -> Provenance:
    """The provenance of a decoded meta record, checked (see the module docstring).

    Once per completed node on every load: two memo lookups for the shared
    documents, a type test and one constructor without ``__init__``.
    """
    if type(record) is dict:
        return _read_format4(record)
    if type(record) is not list or len(record) != 3:
        raise CorruptStateError(f"node provenance is {_shown(record)}, not a provenance record")
    code_bytes, context_bytes, output = record
    code = _CODES.get(code_bytes) if type(code_bytes) is bytes else None
    if code is None:
        code = _remember(_CODES, code_bytes, _code(_document(code_bytes, "code", _CODE_KEYS)))
    context = _CONTEXTS.get(context_bytes) if type(context_bytes) is bytes else None
    if context is None:
        context = _remember(
            _CONTEXTS, context_bytes, _context(_document(context_bytes, "context", _CONTEXT_KEYS))
        )
    if type(output) not in _TEXT_OR_NONE:
        raise CorruptStateError(f"node provenance out is {_shown(output)}, not a str")
    fingerprint, source, parts = code
    inputs, reason, pinned, overrides = context
    return new_provenance(fingerprint, source, parts, output, inputs, reason, pinned, overrides)


_CODE_KEYS = frozenset({"fp", "src", "parts"})
_CONTEXT_KEYS = frozenset({"in", "why", "pin", "audit"})
_Code = tuple[str | None, str | None, Mapping[str, str]]
_Context = tuple[Mapping[str, str], Reason | None, bool, tuple[Override, ...]]
# Decoded documents by their bytes (None: the empty document), shared by the
# nodes that hold them: their mappings are read-only for that reason.
_CODES: dict[bytes | None, _Code] = {}
_CONTEXTS: dict[bytes | None, _Context] = {}
_MAX_MEMO = 4096


def _remember(memo: dict[Any, Any], key: Hashable, value: Any) -> Any:
    if len(memo) >= _MAX_MEMO:
        memo.clear()
    memo[key] = value
    return value


def _document(packed: Any, what: str, keys: frozenset[str]) -> dict[str, Any]:
    """The msgpack document ``packed`` (None: empty), a dict of some of ``keys``."""
    if packed is None:
        return {}
    if type(packed) is not bytes:
        raise CorruptStateError(f"node provenance {what} is {_shown(packed)}, not bytes")
    try:
        document = msgpack.unpackb(packed, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CorruptStateError(f"node provenance {what} does not decode ({exc})") from exc
    if type(document) is not dict or not document or not document.keys() <= keys:
        raise CorruptStateError(f"node provenance {what} is {_shown(document)}, not a document")
    return document


def _code(document: dict[str, Any]) -> _Code:
    fingerprint, source = digest_text(document.get("fp")), digest_text(document.get("src"))
    for key, value in (("fp", fingerprint), ("src", source)):
        if type(value) not in _TEXT_OR_NONE:
            raise CorruptStateError(f"node provenance {key} is {_shown(value)}, not a str")
    return fingerprint, source, _mapping(document, "parts")


def _context(document: dict[str, Any]) -> _Context:
    inputs = _mapping(document, "in")
    why = document.get("why", ())
    if type(why) not in _REASON_TYPES or len(why) not in (0, 2) or not _all_str(why):
        raise CorruptStateError(f"node provenance why is {_shown(why)}, not [code, detail]")
    pinned = document.get("pin", False)
    if type(pinned) is not bool:
        raise CorruptStateError(f"node provenance pin is {_shown(pinned)}, not a bool")
    audit = document.get("audit")
    overrides = () if audit is None else _overrides(audit)
    return inputs, _reason(why), pinned, overrides


def _mapping(document: dict[str, Any], key: str) -> Mapping[str, str]:
    mapping = document.get(key)
    if mapping is None:
        return _NO_MAPPING
    if type(mapping) is dict and not _all_str(mapping.values()):
        mapping = {name: digest_text(value) for name, value in mapping.items()}
    if type(mapping) is not dict or not (_all_str(mapping) and _all_str(mapping.values())):
        raise CorruptStateError(f"node provenance {key} is {_shown(mapping)}, not str -> str")
    return MappingProxyType(mapping)


def _reason(why: Any) -> Reason | None:
    if not why:
        return None
    pair = (why[0], why[1])
    reason = _REASONS.get(pair)
    if reason is None:
        reason = Reason(*pair)
        if len(_REASONS) < _MAX_REASONS:
            _REASONS[pair] = reason
    return reason


def _read_format4(record: dict[Any, Any]) -> Provenance:
    """Format 4's provenance: one dict of all eight keys."""
    if not record.keys() <= _PROVENANCE_KEYS:
        raise CorruptStateError(f"node provenance is {_shown(record)}, not a provenance record")
    get = record.get
    fingerprint, source, output = get("fp"), get("src"), get("out")
    if not {type(fingerprint), type(source), type(output)} <= _TEXT_OR_NONE:
        key, value = next(
            (k, get(k)) for k in ("fp", "src", "out") if type(get(k)) not in _TEXT_OR_NONE
        )
        raise CorruptStateError(f"node provenance {key} is {_shown(value)}, not a str")
    parts, inputs, why = get("parts", _NO_MAPPING), get("in", _NO_MAPPING), get("why", ())
    if (
        type(parts) not in _MAPPINGS
        or type(inputs) not in _MAPPINGS
        or type(why) not in _REASON_TYPES
        or len(why) not in (0, 2)
        or not _all_str(chain(parts, parts.values(), inputs, inputs.values(), why))
    ):
        _provenance_problem(parts, inputs, why)
    pinned = get("pin", False)
    if type(pinned) is not bool:
        raise CorruptStateError(f"node provenance pin is {_shown(pinned)}, not a bool")
    audit = get("audit")
    overrides = () if audit is None else _overrides(audit)
    return new_provenance(
        fingerprint, source, parts, output, inputs, _reason(why), pinned, overrides
    )


def _provenance_problem(parts: Any, inputs: Any, why: Any) -> None:
    """Raise for the first damaged field of these (known to hold one)."""
    for key, mapping in (("parts", parts), ("in", inputs)):
        if type(mapping) not in _MAPPINGS or not (_all_str(mapping) and _all_str(mapping.values())):
            raise CorruptStateError(f"node provenance {key} is {_shown(mapping)}, not str -> str")
    raise CorruptStateError(f"node provenance why is {_shown(why)}, not [code, detail]")


def _overrides(audit: Any) -> tuple[Override, ...]:
    if type(audit) is not list:
        raise CorruptStateError(f"node provenance audit is {_shown(audit)}, not a list")
    overrides = []
    for entry in audit:
        if (
            type(entry) is not list
            or len(entry) != 4
            or not _all_str((entry[0], entry[1], entry[3]))
        ):
            raise CorruptStateError(
                f"node provenance audit holds {_shown(entry)}, not [action, by, at_us, reason]"
            )
        overrides.append(Override(entry[0], entry[1], _moment(entry[2], "override at"), entry[3]))
    return tuple(overrides)
