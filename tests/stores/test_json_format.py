"""JSONFormat: snapshots a person can read, one-line commits, checksums, fast and slow parse."""

from __future__ import annotations

import json
import time
import zlib
from typing import Any

import pytest

from flowdag.codec import Codec
from flowdag.json_codec import JSONCodec
from flowdag.state import NodeStatus
from flowdag.stores import json_format
from flowdag.stores._format import RunFormat, Stamp
from flowdag.stores.base import StoredNode, StoredRun
from flowdag.stores.json_format import JSONFormat
from flowdag.stores.memory import MemoryStore
from tests.stores.conformance import RICH_VALUES, assert_same_state, make_state

FORMAT = JSONFormat()
ID, PARENT = bytes(range(16)), bytes(range(16, 32))


def stamp(generation: int) -> Stamp:
    return Stamp(generation, ID, PARENT)


CODEC = JSONCodec()
encode = CODEC.encode


def meta(status: str = "completed", attempts: int = 1) -> bytes:
    """A meta blob shaped like the store's: status, attempts, times, error."""
    return encode([status, attempts, 1795000000000000, 1795000000000042, None])


def header(*names: str) -> bytes:
    deps: dict[str, list[str]] = {name: [] for name in names}
    return encode({"format": 1, "workflow": "etl", "metadata": {}, "deps": deps})


RUNS: dict[str, StoredRun] = {
    "empty": StoredRun(header()),
    "one_node": StoredRun(header("a"), {"a": StoredNode(meta(), encode(1))}),
    "no_output": StoredRun(header("a"), {"a": StoredNode(meta("failed"))}),
    "output_none": StoredRun(header("a"), {"a": StoredNode(meta(), b"null")}),
    "data_only": StoredRun(header(), data={"k": encode([1, 2]), "none": b"null"}),
    "mixed": StoredRun(
        header("a", "b", "c"),
        {
            "a": StoredNode(meta(), encode({"rows": [1, 2], "when": (1, {2})})),
            "b": StoredNode(meta("failed", 3)),
            "c": StoredNode(meta(), encode("x")),
        },
        {"rows_loaded": encode(2), "cursor": encode({"$page": 3}), "gone": encode(None)},
    ),
    "odd_names": StoredRun(
        header(),
        {
            'quote " and \\ backslash': StoredNode(meta(), encode(1)),
            "new\nline\ttab\x00nul": StoredNode(meta()),
            "héllo ✓ \u2028": StoredNode(meta(), encode("é")),
            "lone \ud800 surrogate": StoredNode(meta(), encode("\udfff")),
            "$tuple": StoredNode(meta(), encode({"$x": 1})),
            "": StoredNode(meta()),
            "    }": StoredNode(meta(), encode("    },")),
            '  },\n  "data": {': StoredNode(meta()),
        },
        {'"k"': encode(1), "": encode(""), "\n": encode("\n"), "a\ud800": encode(0)},
    ),
}


@pytest.mark.parametrize("run", RUNS.values(), ids=RUNS.keys())
def test_snapshot_round_trip(run: StoredRun) -> None:
    content = FORMAT.dump_snapshot(run, stamp(7))
    assert FORMAT.load_snapshot(content) == (run, stamp(7))
    head, metas, generation = FORMAT.load_snapshot_metas(content)
    assert (head, generation) == (run.header, stamp(7))
    assert metas == {name: node.meta for name, node in run.nodes.items()}
    body = json.loads(content.split(b"\n", 1)[1])  # the body is one JSON document
    assert list(body) == ["header", "nodes", "data"]
    assert list(body["nodes"]) == list(run.nodes)
    assert list(body["data"]) == list(run.data)


@pytest.mark.parametrize("run", RUNS.values(), ids=RUNS.keys())
def test_snapshots_we_write_take_the_fast_path(
    run: StoredRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a snapshot of ours was parsed as a JSON document")

    monkeypatch.setattr(json_format, "_parse_document", slow)
    content = FORMAT.dump_snapshot(run, stamp(1))
    assert FORMAT.load_snapshot(content) == (run, stamp(1))
    FORMAT.load_snapshot_metas(content)


def test_snapshot_layout() -> None:
    run = StoredRun(
        b'{"format":1}',
        {"a": StoredNode(b'["completed"]', b"[1,2]"), "b": StoredNode(b'["failed"]')},
        {"k": b'"v"'},
    )
    content = FORMAT.dump_snapshot(run, stamp(3))
    first, body = content.split(b"\n", 1)
    assert body == (
        b"{\n"
        b'  "header": {"format":1},\n'
        b'  "nodes": {\n'
        b'    "a": {\n'
        b'      "meta": ["completed"],\n'
        b'      "output": [1,2]\n'
        b"    },\n"
        b'    "b": {\n'
        b'      "meta": ["failed"]\n'
        b"    }\n"
        b"  },\n"
        b'  "data": {\n'
        b'    "k": "v"\n'
        b"  }\n"
        b"}\n"
    )
    prefix = (
        b'{"flowdag": "json-store", "format": 2, "generation": 3, "id": "%s", "parent": "%s", '
        b'"size": %d, "crc32": ' % (ID.hex().encode(), PARENT.hex().encode(), len(body))
    )
    assert first == prefix + b"%d}" % zlib.crc32(body, zlib.crc32(prefix))
    assert json.loads(first) == {
        "flowdag": "json-store",
        "format": 2,
        "generation": 3,
        "id": ID.hex(),
        "parent": PARENT.hex(),
        "size": len(body),
        "crc32": zlib.crc32(body, zlib.crc32(prefix)),
    }
    # No parent: an empty string, read back as none.
    first = FORMAT.dump_snapshot(run, Stamp(1, ID)).split(b"\n", 1)[0]
    assert json.loads(first)["parent"] == ""
    assert FORMAT.load_snapshot(FORMAT.dump_snapshot(run, Stamp(1, ID)))[1] == Stamp(1, ID)


def test_format_1_snapshots_are_read_without_ids() -> None:
    run = RUNS["mixed"]
    body = FORMAT.dump_snapshot(run, stamp(4)).split(b"\n", 1)[1]
    prefix = b'{"flowdag": "json-store", "format": 1, "generation": 4, "size": %d, "crc32": ' % (
        len(body)
    )
    content = prefix + b"%d}\n" % zlib.crc32(body, zlib.crc32(prefix)) + body
    assert FORMAT.load_snapshot(content) == (run, Stamp(4))
    assert FORMAT.load_snapshot_metas(content)[2] == Stamp(4)
    # A format 2 first line without ids, or a format 1 one with them: not ours.
    for first in (
        content.replace(b'"format": 1', b'"format": 2'),
        FORMAT.dump_snapshot(run, stamp(4)).replace(b'"format": 2', b'"format": 1'),
    ):
        with pytest.raises(ValueError, match="format"):
            FORMAT.load_snapshot(first)


def test_a_snapshot_is_written_with_an_id() -> None:
    with pytest.raises(ValueError, match="id"):
        FORMAT.dump_snapshot(RUNS["mixed"], Stamp(1))


def test_a_user_reads_statuses_outputs_and_data() -> None:
    # The whole path a JSONStore takes: RunState -> blobs -> snapshot file.
    store = MemoryStore(codec=JSONCodec())
    state = make_state()
    state.nodes["extract"] = state.nodes["out_list"]
    state.nodes["extract"].output = [{"id": 1, "amount": 10.0}, {"id": 2, "amount": 32}]
    content = FORMAT.dump_snapshot(store._to_stored(state), stamp(1))
    doc = json.loads(content.split(b"\n", 1)[1])
    extract = doc["nodes"]["extract"]
    assert extract["meta"][0] == "completed"
    assert extract["output"] == [{"id": 1, "amount": 10.0}, {"id": 2, "amount": 32}]
    assert type(extract["output"][0]["amount"]) is float  # 10.0 stays a float in the file
    assert doc["nodes"]["failed"]["meta"][0] == NodeStatus.FAILED
    assert "output" not in doc["nodes"]["failed"]
    assert doc["nodes"]["out_float_whole"]["output"] == 5.0
    assert doc["data"]["rows_loaded"] == 2
    assert doc["data"]["cursor"] == {"page": 3}
    assert doc["header"]["workflow"] == "nightly-etl"
    assert doc["data"]["blob"] == {"$bytes": "AQ=="}  # non-JSON values as small tags


@pytest.mark.parametrize("outputs", [None, RICH_VALUES], ids=["plain", "rich"])
def test_run_state_round_trip(outputs: dict[str, Any] | None) -> None:
    store = MemoryStore(codec=JSONCodec())
    state = make_state(outputs=outputs)
    content = FORMAT.dump_snapshot(store._to_stored(state), stamp(2))
    stored, generation = FORMAT.load_snapshot(content)
    assert generation == stamp(2)
    assert_same_state(store._from_stored(state.run_id, stored), state)


# -- damage ----------------------------------------------------------------------------


def small_snapshot() -> bytes:
    return FORMAT.dump_snapshot(RUNS["mixed"], stamp(12))


def test_checksum_catches_a_changed_digit() -> None:
    content = small_snapshot()
    assert b'"rows_loaded": 2' in content
    for damaged in (
        content.replace(b'"rows_loaded": 2', b'"rows_loaded": 3'),
        content.replace(b'"generation": 12', b'"generation": 13'),
        content.replace(b'"generation": 12', b'"generation": 02'),
        content.replace(ID.hex().encode(), PARENT.hex().encode()),
    ):
        for load in (FORMAT.load_snapshot, FORMAT.load_snapshot_metas):
            with pytest.raises(ValueError, match="checksum"):
                load(damaged)


def test_every_byte_flip_and_truncation_is_caught() -> None:
    content = small_snapshot()
    for offset in range(len(content)):
        for mask in (0x01, 0x04, 0x20, 0x80, 0xFF):
            damaged = bytearray(content)
            damaged[offset] ^= mask
            with pytest.raises(ValueError):
                FORMAT.load_snapshot(bytes(damaged))
    for end in range(len(content)):
        with pytest.raises(ValueError):
            FORMAT.load_snapshot_metas(content[:end])
    with pytest.raises(ValueError, match="bytes"):
        FORMAT.load_snapshot(content + b"\n")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a JSON store snapshot"),
        (b"{}\n{}", "not a JSON store snapshot"),
        (Codec().encode({"a": 1}), "not a JSON store snapshot"),
        (b'{"flowdag": "json-store", "format": 1}\n{}', "not a JSON store snapshot"),
        (
            b'{"flowdag": "json-store", "format": 3, "generation": 1, "size": 0, "crc32": 0}\n',
            "format 3",
        ),
        (
            b'{"flowdag": "json-store", "format": 1, "generation": 1, "size": 5, "crc32": 0}\n',
            "0 bytes",
        ),
    ],
    ids=["empty", "json", "msgpack", "short_first_line", "format_3", "size"],
)
def test_not_a_snapshot(content: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FORMAT.load_snapshot(content)


def seal(body: bytes, generation: int = 5) -> bytes:
    """A snapshot around any body, with a valid first line (the documented checksum)."""
    prefix = json_format._first_line_prefix(2, stamp(generation), len(body))
    return prefix + b"%d}\n" % zlib.crc32(body, zlib.crc32(prefix)) + body


# -- any layout with a valid checksum ----------------------------------------------------


@pytest.mark.parametrize("indent", [None, 0, 1, 4], ids=["compact", "0", "1", "4"])
@pytest.mark.parametrize("run", RUNS.values(), ids=RUNS.keys())
def test_re_indented_body_is_parsed_as_json(run: StoredRun, indent: int | None) -> None:
    doc = json.loads(FORMAT.dump_snapshot(run, stamp(1)).split(b"\n", 1)[1])
    try:
        body = json.dumps(doc, indent=indent, ensure_ascii=indent == 4).encode()
    except UnicodeEncodeError:  # lone surrogates: only as \u escapes
        body = json.dumps(doc, indent=indent).encode()
    loaded, generation = FORMAT.load_snapshot(seal(body))
    assert generation == stamp(5)
    assert loaded.nodes.keys() == run.nodes.keys() and loaded.data.keys() == run.data.keys()
    decode = CODEC.decode
    assert decode(loaded.header) == decode(run.header)
    for name, node in run.nodes.items():
        assert decode(loaded.nodes[name].meta) == decode(node.meta)
        output = loaded.nodes[name].output
        if node.output is None or output is None:
            assert output is node.output is None
        else:
            assert repr(decode(output)) == repr(decode(node.output))
    for key, value in run.data.items():
        assert repr(decode(loaded.data[key])) == repr(decode(value))
    metas = FORMAT.load_snapshot_metas(seal(body))[1]
    assert metas == {name: node.meta for name, node in loaded.nodes.items()}


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'{"header": 1, "nodes": {}}',
        b'{"header": 1, "nodes": {}, "data": {}, "x": 1}',
        b'{"header": 1, "nodes": [], "data": {}}',
        b'{"header": 1, "nodes": {"a": 1}, "data": {}}',
        b'{"header": 1, "nodes": {"a": {"output": 1}}, "data": {}}',
        b'{"header": 1, "nodes": {"a": {"meta": 1, "x": 1}}, "data": {}}',
        b'{"header": 1, "nodes": {}, "data": []}',
        b'{"header": NaN, "nodes": {}, "data": {}}',
        b'{"header": 1e999, "nodes": {}, "data": {}}',
        b'{"header": 1, "nodes": {}, "data": {}} x',
        b'{"header": "\xff", "nodes": {}, "data": {}}',
        b'{"header": ' + b"[" * 100_000 + b"]" * 100_000 + b', "nodes": {}, "data": {}}',
        # Our own layout, broken: a missing comma between nodes.
        b'{\n  "header": 1,\n  "nodes": {\n    "a": {\n      "meta": 1\n    }\n'
        b'    "b": {\n      "meta": 1\n    }\n  },\n  "data": {\n  }\n}\n',
        # ... or a trailing one after the last data entry.
        b'{\n  "header": 1,\n  "nodes": {\n  },\n  "data": {\n    "k": 1,\n  }\n}\n',
    ],
)
def test_body_of_the_wrong_shape_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        FORMAT.load_snapshot(seal(body))


def test_dump_refuses_blobs_that_are_not_compact_json() -> None:
    msgpack_blob = Codec().encode([1])
    for run in (
        StoredRun(msgpack_blob),
        StoredRun(b"1", {"a": StoredNode(msgpack_blob)}),
        StoredRun(b"1", {"a": StoredNode(b"1", b"[1,\n2]")}),
        StoredRun(b"1", data={"k": b""}),
    ):
        with pytest.raises(ValueError, match="JSONCodec"):
            FORMAT.dump_snapshot(run, stamp(1))
    with pytest.raises(ValueError, match="JSONCodec"):
        FORMAT.dump_commit({"a": StoredNode(msgpack_blob)}, {})
    with pytest.raises(ValueError, match="JSONCodec"):
        FORMAT.dump_commit({}, {"k": msgpack_blob})
    with pytest.raises(ValueError, match="generation"):
        FORMAT.dump_snapshot(StoredRun(b"1"), Stamp(-1, ID))


# -- commits --------------------------------------------------------------------------

COMMITS: dict[str, tuple[dict[str, StoredNode], dict[str, bytes | None]]] = {
    "one_node": ({"a": StoredNode(meta(), encode([1, 2.0]))}, {}),
    "no_output": ({"a": StoredNode(meta("failed"))}, {"k": None}),
    "output_none": ({"a": StoredNode(meta(), b"null")}, {"k": b"null"}),
    "several": (
        {"a": StoredNode(meta(), encode((1, {2}))), "b": StoredNode(meta("skipped"))},
        {"set": encode({"$x": b"\x00"}), "deleted": None, "also deleted": None},
    ),
    "nothing": ({}, {}),
    "odd_names": (
        {'q"\\\n\ud800': StoredNode(meta(), encode("é\u2028"))},
        {"\x00": encode(1), "\ud800": None, "$": encode(2)},
    ),
}


@pytest.mark.parametrize(("nodes", "data"), COMMITS.values(), ids=COMMITS.keys())
def test_commit_round_trip(nodes: dict[str, StoredNode], data: dict[str, bytes | None]) -> None:
    payload = FORMAT.dump_commit(nodes, data)
    assert b"\n" not in payload  # one line
    assert FORMAT.load_commit(payload) == (nodes, data)
    doc = json.loads(payload)
    assert list(doc) == ["nodes", "data", "delete"]
    assert doc["delete"] == [key for key, value in data.items() if value is None]


def test_commit_is_readable_json() -> None:
    payload = FORMAT.dump_commit(
        {"load": StoredNode(meta(), encode(42))}, {"rows": encode(2), "old": None}
    )
    assert json.loads(payload) == {
        "nodes": {
            "load": {
                "meta": ["completed", 1, 1795000000000000, 1795000000000042, None],
                "output": 42,
            }
        },
        "data": {"rows": 2},
        "delete": ["old"],
    }


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"[]",
        b"\xff",
        b'{"nodes":{},"data":{}}',
        b'{"nodes":{},"data":{},"delete":[],"x":1}',
        b'{"nodes":[],"data":{},"delete":[]}',
        b'{"nodes":{"a":1},"data":{},"delete":[]}',
        b'{"nodes":{"a":{}},"data":{},"delete":[]}',
        b'{"nodes":{"a":{"meta":1,"extra":1}},"data":{},"delete":[]}',
        b'{"nodes":{},"data":[],"delete":[]}',
        b'{"nodes":{},"data":{},"delete":{}}',
        b'{"nodes":{},"data":{},"delete":[1]}',
        b'{"nodes":{},"data":{"k":1},"delete":["k"]}',
        b'{"nodes":{},"data":{"k":NaN},"delete":[]}',
        b'{"nodes":{},"data":{"k":1e999},"delete":[]}',
        b'{"nodes":{},"data":{},"delete":[]}{}',
        b'{"nodes":{},"data":{"k":' + b"[" * 100_000 + b"]" * 100_000 + b'},"delete":[]}',
    ],
)
def test_bad_commit_is_refused(payload: bytes) -> None:
    with pytest.raises(ValueError):
        FORMAT.load_commit(payload)


# -- the format object ------------------------------------------------------------------


def test_is_a_run_format() -> None:
    fmt: RunFormat = JSONFormat()  # mypy checks the protocol; this checks it runs
    assert fmt.suffix == ".json"


def test_ten_thousand_nodes_are_quick() -> None:
    # Not a benchmark: a guard against a format that parses every fragment again.
    nodes = {
        f"node-{i}": StoredNode(meta(), encode({"i": i, "x": [i, "y"]})) for i in range(10_000)
    }
    run = StoredRun(header(*nodes), nodes, {f"k{i}": encode(i) for i in range(1000)})
    start = time.perf_counter()
    content = FORMAT.dump_snapshot(run, stamp(1))
    assert FORMAT.load_snapshot(content) == (run, stamp(1))
    assert time.perf_counter() - start < 2.0
