"""`JSONFormat`: the JSON store's snapshot and commit layout, spliced from JSON blobs.

The JSON store's codec (`flowdag.json_codec.JSONCodec`) turns every header,
node meta, output and ``ctx.data`` value into a compact JSON *fragment*. This
format splices fragments into files by their bytes, never re-encoding a value:
saving and committing cost a ``join``.

Snapshot file (``snapshot.json``): a first line, then the body::

    {"flowdag": "json-store", "format": 2, "generation": 7, "id": "5f0c...", "parent": "9a1e", ...}
    {
      "header": {"format":2,"workflow":"etl","metadata":{},"deps":{"extract":[]}},
      "nodes": {
        "extract": {
          "meta": ["completed",1,1795000000000000,1795000000000042,null,[1]],
          "output": [{"id":1,"amount":10}]
        },
        "load": {
          "meta": ["failed",2,1795000000000100,1795000000000200,["KeyError","'x'","..."],  ⏎
                   [[1,1795000000000050,1795000000000060,["KeyError","'x'","..."]],2]]
        }
      },
      "data": {
        "rows_loaded": 2
      }
    }

(``⏎``: one line in the file, wrapped here.) A node's ``meta`` is [status,
attempts, started_us, finished_us, error] and, when the node has run, its
attempt history: each attempt ``[number, started_us, finished_us, error]``,
the last one just its number when it is the node's own (see
`flowdag.stores._records`). The body is one JSON document (``jq .
snapshot.json`` shows both values; in Python, ``json.loads`` the text after
the first newline). A node without an
``output`` key has no output blob, which is not the same as ``"output": null``
(an output of None). The first line ends with ``"size": 1234, "crc32": 305419896}``:
``size`` is the body's length in bytes and ``crc32`` the
``zlib.crc32`` of the first line up to the checksum's digits followed by the
body, so the generation is covered too: a changed digit anywhere is caught.
``id`` is the snapshot's random id (32 hex digits) that its journal names, and
``parent`` the id of the snapshot it replaced ("" if none): see `Stamp`.
Format 1 (the previous release) had neither; it is still read, with no id.

Fast path: fragments are compact JSON, which never holds a raw newline, so the
body writes each fragment on a line of its own and `load_snapshot` slices them
back out line by line, without parsing JSON (node names and data keys excepted).
That is safe because the checksum has already matched, so the body is, byte for
byte, one this module wrote; the fragments themselves are checked by the codec
when the store decodes them. A body in any other layout (a person re-indented
it and fixed the checksum) is parsed as JSON and its fragments re-written.

Commit payload (a journal record, framed and checksummed by the journal): one
line of compact JSON, ``{"nodes":{name:{"meta":M,"output":O}},"data":{key:V},
"delete":[key,...]}``. Deleted ``ctx.data`` keys are listed apart because
``null`` is a value a node may store.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable, Mapping
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import TYPE_CHECKING, Any

from flowdag.json_codec import dump_json
from flowdag.stores._format import Commit, Stamp
from flowdag.stores.base import StoredNode, StoredRun

if TYPE_CHECKING:
    from flowdag.stores._format import RunFormat

__all__ = ["JSONFormat"]

_FORMAT = 2
_FIRST_LINE = re.compile(
    rb'\{"flowdag": "json-store", "format": (\d+), "generation": (\d+), '
    rb'(?:"id": "([0-9a-f]{32})", "parent": "((?:[0-9a-f]{32})?)", )?'
    rb'"size": (\d+), "crc32": (\d+)\}'
)
# The first byte of any JSON value. A msgpack Codec blob starts with 0xF1.
_JSON_START = frozenset(b'{["-0123456789tfn')

# Lines of the body, as dump_snapshot writes them.
_OPEN = b"{"
_HEADER = b'  "header": '
_NODES = b'  "nodes": {'
_NODES_END = b"  },"
_META = b'      "meta": '
_OUTPUT = b'      "output": '
_NODE_END = b"    }"
_DATA = b'  "data": {'
_DATA_END = b"  }"
_CLOSE = b"}"
_KEY = rb'    ("(?:[^"\\\x00-\x1f]|\\.)*")'
_NODE_LINE = re.compile(_KEY + rb": \{")
_DATA_LINE = re.compile(_KEY + rb": ")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_decode_json = json.JSONDecoder(parse_constant=_refuse_constant).decode


def _loads(text: bytes) -> Any:
    """Strict JSON from UTF-8; every failure a ValueError, as RunFormat promises."""
    try:
        return _decode_json(text.decode("utf-8"))
    except RecursionError as exc:  # nested too deep for the parser
        raise ValueError(f"JSON nested too deeply ({exc})") from exc


class JSONFormat:
    """Runs as readable JSON snapshots, commits as one-line JSON records.

    Holds no state: one instance serves every store and thread.
    """

    suffix = ".json"

    # -- snapshot -------------------------------------------------------------

    def dump_snapshot(self, run: StoredRun, stamp: Stamp) -> bytes:
        """The whole run as a snapshot file (see the module docstring).

        Raises:
            ValueError: a blob is not a JSON fragment from a `JSONCodec`, or
                ``stamp`` has no id.
        """
        if not stamp.id:
            raise ValueError("a snapshot is written with an id (Stamp.id)")
        parts = [b'{\n  "header": ', _fragment(run.header), b',\n  "nodes": {']
        _dump_nodes(parts, run.nodes, _PRETTY)
        parts.append(b'\n  },\n  "data": {')
        _dump_data(parts, run.data.items(), _PRETTY)
        parts.append(b"\n  }\n}\n")
        body = b"".join(parts)
        prefix = _first_line_prefix(_FORMAT, stamp, len(body))
        crc = zlib.crc32(body, zlib.crc32(prefix))
        return b"".join((prefix, b"%d}\n" % crc, body))

    def load_snapshot(self, content: bytes) -> tuple[StoredRun, Stamp]:
        """Parse a snapshot; ``ValueError`` if it is damaged or not one."""
        stamp, lines = _check_snapshot(content)
        parsed = _parse_lines(lines, outputs=True)
        if parsed is None:
            parsed = _parse_document(lines, outputs=True)
        header, nodes, data = parsed
        return StoredRun(header, nodes, data), stamp

    def load_snapshot_metas(self, content: bytes) -> tuple[bytes, dict[str, bytes], Stamp]:
        """Header, node -> meta blob, and stamp; outputs and data are skipped."""
        stamp, lines = _check_snapshot(content)
        parsed = _parse_lines(lines, outputs=False)
        if parsed is None:
            parsed = _parse_document(lines, outputs=False)
        header, nodes, _ = parsed
        return header, {name: node.meta for name, node in nodes.items()}, stamp

    # -- commits --------------------------------------------------------------

    def dump_commit(
        self, nodes: Mapping[str, StoredNode], data: Mapping[str, bytes | None]
    ) -> bytes:
        """One commit as a line of compact JSON (see the module docstring).

        Raises:
            ValueError: a blob is not a JSON fragment from a `JSONCodec`.
        """
        parts = [b'{"nodes":{']
        _dump_nodes(parts, nodes, _COMPACT)
        parts.append(b'},"data":{')
        deleted = [key for key, value in data.items() if value is None]
        _dump_data(parts, ((k, v) for k, v in data.items() if v is not None), _COMPACT)
        parts += (b'},"delete":', dump_json(deleted), b"}")
        return b"".join(parts)

    def load_commit(self, payload: bytes) -> Commit:
        """Parse a commit; ``ValueError`` if it is not one."""
        doc = _loads(payload)
        if type(doc) is not dict or doc.keys() != {"nodes", "data", "delete"}:
            raise ValueError("commit is not an object of nodes, data and delete")
        nodes = _stored_nodes(doc["nodes"], outputs=True)
        data_doc, deleted = doc["data"], doc["delete"]
        if type(data_doc) is not dict or type(deleted) is not list:
            raise ValueError("commit's data is not an object, or its delete not an array")
        data: dict[str, bytes | None] = {key: dump_json(value) for key, value in data_doc.items()}
        for key in deleted:
            if type(key) is not str or key in data:
                raise ValueError(f"commit deletes {key!r}, not a key it leaves alone")
            data[key] = None
        return nodes, data


# How entries are laid out: the separator before the first entry and before
# the others, then after a node's key, before its output, after the node, and
# after a data key. Pretty for snapshots (one fragment a line), compact for commits.
_Layout = tuple[bytes, bytes, bytes, bytes, bytes, bytes]
_PRETTY: _Layout = (
    b"\n    ",
    b",\n    ",
    b': {\n      "meta": ',
    b',\n      "output": ',
    b"\n    }",
    b": ",
)
_COMPACT: _Layout = (b"", b",", b':{"meta":', b',"output":', b"}", b":")


def _dump_nodes(parts: list[bytes], nodes: Mapping[str, StoredNode], layout: _Layout) -> None:
    first, later, meta, output, close, _ = layout
    separator = first
    for name, node in nodes.items():
        parts += (separator, _key(name), meta, _fragment(node.meta))
        if node.output is not None:
            parts += (output, _fragment(node.output))
        parts.append(close)
        separator = later


def _dump_data(parts: list[bytes], items: Iterable[tuple[str, bytes]], layout: _Layout) -> None:
    first, later, *_, after_key = layout
    separator = first
    for key, value in items:
        parts += (separator, _key(key), after_key, _fragment(value))
        separator = later


def _fragment(blob: bytes) -> bytes:
    # A cheap check on every blob: a msgpack blob, or a fragment with a newline
    # (not from a JSONCodec), would make a file that cannot be read back.
    if not blob or blob[0] not in _JSON_START or b"\n" in blob:
        raise ValueError(
            f"blob {blob[:16]!r}... is not compact JSON; a JSON store needs a JSONCodec"
        )
    return blob


def _key(name: str) -> bytes:
    """A name as a JSON string: UTF-8 when it can be, ``\\u`` escapes for lone surrogates."""
    try:
        return encode_basestring(name).encode("utf-8")
    except UnicodeEncodeError:
        return encode_basestring_ascii(name).encode("ascii")


def _first_line_prefix(version: int, stamp: Stamp, size: int) -> bytes:
    ids = b""
    if version >= 2:
        ids = b'"id": "%s", "parent": "%s", ' % (
            stamp.id.hex().encode(),
            stamp.parent.hex().encode(),
        )
    return b'{"flowdag": "json-store", "format": %d, "generation": %d, %s"size": %d, "crc32": ' % (
        version,
        stamp.generation,
        ids,
        size,
    )


def _check_snapshot(content: bytes) -> tuple[Stamp, list[bytes]]:
    """The stamp and the body's lines of a snapshot whose checksum matches."""
    end = content.find(b"\n")
    match = _FIRST_LINE.fullmatch(content, 0, end) if end >= 0 else None
    if match is None:
        raise ValueError(
            "not a JSON store snapshot: its first line is not "
            '{"flowdag": "json-store", "format": ..., "generation": ..., "size": ..., "crc32": ...}'
        )
    version, generation, size, crc = (int(match[i]) for i in (1, 2, 5, 6))
    has_id = match[3] is not None
    if version not in (1, _FORMAT) or has_id != (version == _FORMAT):
        raise ValueError(
            f"JSON store snapshot format {version} is not {_FORMAT}: written by another flowdag"
        )
    if generation >= 2**64:
        raise ValueError(f"snapshot generation {generation} is out of range")
    stamp = Stamp(generation)
    if has_id:
        ids = (bytes.fromhex(match[i].decode()) for i in (3, 4))
        stamp = Stamp(generation, *ids)
    body = memoryview(content)[end + 1 :]
    if len(body) != size:
        raise ValueError(f"snapshot body is {len(body)} bytes, its first line says {size}")
    prefix = _first_line_prefix(version, stamp, size)
    if zlib.crc32(body, zlib.crc32(prefix)) != crc:
        raise ValueError("snapshot checksum (CRC32) does not match: the file is damaged")
    return stamp, content[end + 1 :].split(b"\n")


_Parsed = tuple[bytes, dict[str, StoredNode], dict[str, bytes]]


def _parse_lines(lines: list[bytes], *, outputs: bool) -> _Parsed | None:
    """Fast path: fragments sliced from the layout dump_snapshot writes; None if not it."""
    if (
        len(lines) < 8
        or lines[0] != _OPEN
        or not lines[1].startswith(_HEADER)
        or not lines[1].endswith(b",")
        or lines[2] != _NODES
        or lines[-3:] != [_DATA_END, _CLOSE, b""]
    ):
        return None
    try:
        return _parse_entries(lines, outputs)
    except IndexError:  # a section that does not end
        return None


def _parse_entries(lines: list[bytes], outputs: bool) -> _Parsed | None:
    header = lines[1][len(_HEADER) : -1]
    nodes: dict[str, StoredNode] = {}
    i = 3
    while lines[i] != _NODES_END:
        match = _NODE_LINE.fullmatch(lines[i])
        meta = lines[i + 1]
        if match is None or not meta.startswith(_META):
            return None
        output = None
        if meta.endswith(b","):
            line = lines[i + 2]
            if not line.startswith(_OUTPUT):
                return None
            meta = meta[len(_META) : -1]
            if outputs:
                output = line[len(_OUTPUT) :]
            i += 3
        else:
            meta = meta[len(_META) :]
            i += 2
        name = _name(match[1])
        if name is None:
            return None
        nodes[name] = StoredNode(meta, output)
        # The last node closes without a comma, the others with one.
        final = lines[i + 1] == _NODES_END
        if lines[i] != (_NODE_END if final else _NODE_END + b","):
            return None
        i += 1
    if lines[i + 1] != _DATA:
        return None
    data: dict[str, bytes] = {}
    last = len(lines) - 3  # the line _DATA_END
    for j in range(i + 2, last):
        line = lines[j]
        match = _DATA_LINE.match(line)
        # A JSON value never ends with a comma: a trailing one separates entries.
        comma = line.endswith(b",")
        if match is None or comma != (j < last - 1):
            return None
        if outputs:
            name = _name(match[1])
            if name is None:
                return None
            data[name] = line[match.end() : -1] if comma else line[match.end() :]
    return header, nodes, data


def _name(quoted: bytes) -> str | None:
    """A JSON string's value; the regex has excluded raw quotes and control bytes."""
    if b"\\" not in quoted:
        try:
            return quoted[1:-1].decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        name = _loads(quoted)
    except ValueError:
        return None
    return name if type(name) is str else None


def _parse_document(lines: list[bytes], *, outputs: bool) -> _Parsed:
    """Any JSON body of the documented shape: parse it, re-write each fragment."""
    doc = _loads(b"\n".join(lines))
    if type(doc) is not dict or doc.keys() != {"header", "nodes", "data"}:
        raise ValueError("snapshot body is not an object of header, nodes and data")
    data_doc = doc["data"]
    if type(data_doc) is not dict:
        raise ValueError("snapshot's data is not an object")
    header = dump_json(doc["header"])
    nodes = _stored_nodes(doc["nodes"], outputs=outputs)
    data = {key: dump_json(value) for key, value in data_doc.items()} if outputs else {}
    return header, nodes, data


def _stored_nodes(doc: Any, *, outputs: bool) -> dict[str, StoredNode]:
    if type(doc) is not dict:
        raise ValueError("nodes are not an object")
    nodes = {}
    for name, entry in doc.items():
        if type(entry) is not dict or not {"meta"} <= entry.keys() <= {"meta", "output"}:
            raise ValueError(f"node {name!r} is not an object of meta and output")
        output = dump_json(entry["output"]) if outputs and "output" in entry else None
        nodes[name] = StoredNode(dump_json(entry["meta"]), output)
    return nodes


if TYPE_CHECKING:
    _conforms: RunFormat = JSONFormat()
