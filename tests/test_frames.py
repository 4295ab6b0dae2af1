"""DataFrames and Arrow tables: exact round trips on every store, hostile payloads, no extra."""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pa = pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")
pl = pytest.importorskip("polars")

from msgpack import ExtType  # noqa: E402

from flowdag._frames import _buffers, _message_header, decode_frame, encode_frame  # noqa: E402
from flowdag.codec import Codec  # noqa: E402
from flowdag.errors import CorruptStateError, SerializationError  # noqa: E402
from flowdag.json_codec import JSONCodec  # noqa: E402
from flowdag.stores import open_store  # noqa: E402
from flowdag.stores.transfer import copy_run, same_value  # noqa: E402
from tests.stores.conformance import make_state  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCHEMES = ["memory", "lmdb", "json", "flatbuffers"]
CODECS = [Codec(), JSONCodec()]


def pandas_frames() -> dict[str, Any]:
    mixed = pd.DataFrame(
        {
            "int": [1, 2, 3],
            "nullable_int": pd.array([1, None, 3], dtype="Int64"),
            "float_nan": [1.5, float("nan"), -0.0],
            "str": ["a", None, "ü"],
            "cat": pd.Categorical(["x", "y", "x"], categories=["y", "x"], ordered=True),
            "tz": pd.date_range("2024-03-31 01:00", periods=3, freq="h", tz="Europe/Paris"),
            "naive": pd.to_datetime(["2024-01-01", None, "2024-01-03"]),
            "bool": [True, False, True],
            "bytes": [b"\x00", b"", b"\xff"],
        },
        index=pd.Index([10, 30, 20], name="row"),
    )
    mixed.columns.name = "fields"
    multi = pd.DataFrame(
        {("a", "x"): [1.0, 2.0], ("b", "y"): [3.0, 4.0]},
        index=pd.MultiIndex.from_tuples([("p", 1), ("q", 2)], names=["k1", "k2"]),
    )
    return {
        "mixed": mixed,
        "range_index": pd.DataFrame({"v": [1.0, 2.0]}, index=pd.RangeIndex(5, 9, 2)),
        "multi": multi,
        "empty": pd.DataFrame({"a": pd.Series([], dtype="int32")}),
        "tz_index": pd.DataFrame(
            {"v": [1, 2]}, index=pd.DatetimeIndex(["2024-01-01", "2024-06-01"], tz="UTC")
        ),
    }


def polars_frames() -> dict[str, Any]:
    return {
        "mixed": pl.DataFrame(
            {
                "int": pl.Series([1, None, 3], dtype=pl.Int16),
                "str": ["a", None, "ü"],
                "cat": pl.Series(["x", "y", None], dtype=pl.Categorical),
                "tz": pl.Series([0, 1, None]).cast(pl.Datetime("us", "Asia/Tokyo")),
                "list": [[1, 2], None, []],
                "struct": [{"a": 1}, {"a": None}, None],
            }
        ),
        "empty": pl.DataFrame(schema={"a": pl.Float32}),
    }


def arrow_tables() -> dict[str, Any]:
    dictionary = pa.array(["x", "y", "x", None]).dictionary_encode()
    return {
        "mixed": pa.table(
            {
                "int": pa.array([1, None, 3, 4], pa.int8()),
                "dict": dictionary,
                "ts": pa.array([0, 1, None, 3], pa.timestamp("ns", "America/New_York")),
                "dec": pa.array([None, 1, 2, 3], pa.decimal128(10, 2)),
            },
            metadata={b"source": b"test"},
        ),
        "no_rows": pa.table({"a": pa.array([], pa.string())}),
    }


def all_frames() -> dict[str, Any]:
    return {
        **{f"pandas_{k}": v for k, v in pandas_frames().items()},
        **{f"polars_{k}": v for k, v in polars_frames().items()},
        **{f"arrow_{k}": v for k, v in arrow_tables().items()},
    }


def assert_same_frame(actual: Any, expected: Any) -> None:
    assert type(actual) is type(expected)
    if isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(actual, expected, check_exact=True)
        assert actual.index.names == expected.index.names
        assert actual.columns.names == expected.columns.names
    elif isinstance(expected, pl.DataFrame):
        assert actual.schema == expected.schema
        assert actual.equals(expected)
    else:
        assert actual.equals(expected, check_metadata=True)


@pytest.mark.parametrize("codec", CODECS, ids=["msgpack", "json"])
@pytest.mark.parametrize("name", list(all_frames()))
def test_codec_round_trip(codec: Any, name: str) -> None:
    value = all_frames()[name]
    assert_same_frame(codec.decode(codec.encode(value)), value)
    nested = {"frames": [value, (1, value)]}
    back = codec.decode(codec.encode(nested))
    assert_same_frame(back["frames"][1][1], value)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_store_round_trips_frames(scheme: str, tmp_path: Path) -> None:
    url = "memory://" if scheme == "memory" else f"{scheme}://{tmp_path / 's'}"
    frames = all_frames()
    state = make_state(outputs=frames)
    state.data["frame"] = frames["pandas_mixed"]
    with open_store(url) as store:
        store.save(state)
        if scheme == "memory":
            loaded = store.load(state.run_id)
    if scheme != "memory":
        with open_store(url) as store:
            loaded = store.load(state.run_id)
    for name, value in frames.items():
        assert_same_frame(loaded.nodes[f"out_{name}"].output, value)
    assert_same_frame(loaded.data["frame"], frames["pandas_mixed"])
    assert loaded == state  # RunState equality compares frames exactly


@pytest.mark.parametrize("dst", ["json", "flatbuffers"])
def test_store_convert_copies_frames(dst: str, tmp_path: Path) -> None:
    state = make_state(outputs=all_frames())
    with (
        open_store(f"lmdb://{tmp_path / 'a'}") as src,
        open_store(f"{dst}://{tmp_path / 'b'}") as to,
    ):
        src.save(state)
        copy_run(src, to, state.run_id)
        assert to.load(state.run_id) == state


def test_equality_tells_frames_apart() -> None:
    df = pandas_frames()["mixed"]
    other = df.copy()
    other.index.name = "other"
    assert make_state(outputs={"f": df}) == make_state(outputs={"f": df.copy()})
    assert make_state(outputs={"f": df}) != make_state(outputs={"f": other})
    assert make_state(outputs={"f": df}) != make_state(outputs={"f": df.astype({"int": "int32"})})
    polars = polars_frames()["mixed"]
    assert make_state(outputs={"f": polars}) != make_state(outputs={"f": polars.head(2)})
    table = arrow_tables()["mixed"]
    assert make_state(outputs={"f": table}) != make_state(outputs={"f": pl.from_arrow(table)})
    assert not same_value(df, other)


def test_frame_blob_is_header_then_plain_ipc(tmp_path: Path) -> None:
    """The by-reference layout: the ext payload, written as a file, maps without a copy."""
    table = pa.table({"a": pa.array(range(1000), pa.int64())})
    blob = encode_frame(table)
    assert blob[:4] == b"FDAF"
    stream = pa.ipc.open_stream(pa.py_buffer(blob[8:]))
    assert stream.read_all().equals(table)
    path = tmp_path / "frame.arrow"
    path.write_bytes(blob)
    with pa.memory_map(str(path)) as mapped:
        assert decode_frame(mapped.read_buffer(), 1 << 30).equals(table)


def test_unsupported_column_fails_with_serialization_error() -> None:
    df = pd.DataFrame({"mixed": [1, "a", object()]})
    for codec in CODECS:
        with pytest.raises(SerializationError, match="Arrow"):
            codec.encode(df)


def test_decompression_bomb_is_refused() -> None:
    table = pa.table({"zeros": pa.array(bytes(8 << 20), pa.uint8())})  # compresses to ~KiB
    codec = Codec(max_decoded_size=1 << 20)
    blob = Codec().encode(table)
    assert len(blob) < 1 << 20
    with pytest.raises(CorruptStateError, match="max_decoded_size"):
        codec.decode(blob)
    with pytest.raises(CorruptStateError, match="max_decoded_size"):
        decode_frame(encode_frame(table), 1 << 20)


def test_a_lying_decompressed_length_is_refused_before_decompressing() -> None:
    """A compressed buffer that claims 8 GiB: refused from the metadata, nothing allocated."""
    blob = bytearray(encode_frame(pa.table({"a": pa.array(range(100), pa.int64())})))
    reader = pa.ipc.MessageReader.open_stream(pa.py_buffer(bytes(blob[8:])))
    batch = next(m for m in reader if m.type == "record batch")
    body = bytes(batch.body)
    start = blob.find(body)
    meta = memoryview(batch.metadata)
    _, header = _message_header(meta)
    offset = next(o for o, n in _buffers(meta, header) if n)
    blob[start + offset : start + offset + 8] = (8 << 30).to_bytes(8, "little")
    for codec in (Codec(max_decoded_size=1 << 30), Codec()):
        with pytest.raises(CorruptStateError, match="max_decoded_size"):
            codec.decode(Codec().encode(ExtType(41, bytes(blob))))


def _damaged(blob: bytes, rng: random.Random) -> bytes:
    data = bytearray(blob)
    action = rng.randrange(4)
    if action == 0:
        return bytes(data[: rng.randrange(len(data))])
    if action == 1:
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if action == 2:
        at = rng.randrange(8, len(data) - 8)
        data[at : at + 8] = rng.randbytes(8)
        return bytes(data)
    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


@pytest.mark.parametrize("name", ["pandas_mixed", "polars_mixed", "arrow_mixed"])
def test_fuzzed_frames_decode_or_raise_corrupt(name: str) -> None:
    """Damaged payloads with a valid outer checksum: CorruptStateError or a value, never a crash."""
    frame = encode_frame(all_frames()[name])
    rng = random.Random(name)
    msgpack_codec, json_codec = Codec(max_decoded_size=1 << 24), JSONCodec()
    for _ in range(300):
        damaged = _damaged(frame, rng)
        blob = msgpack_codec.encode(ExtType(41, damaged))  # a valid blob around it
        text = json.dumps({"$arrow": base64.b64encode(damaged).decode()}).encode()
        for codec, data in ((msgpack_codec, blob), (json_codec, text)):
            try:
                value = codec.decode(data)
            except CorruptStateError:
                continue
            assert type(value).__name__ in ("DataFrame", "Table")  # validated in full


def test_invalid_headers_are_corrupt() -> None:
    frame = encode_frame(arrow_tables()["mixed"])
    for bad in (
        b"",
        b"FDAF",
        b"XXXX" + frame[4:],
        frame[:4] + b"\x02" + frame[5:],
        frame[:5] + b"\x07" + frame[6:],
        frame[:6] + b"\x01\x00" + frame[8:],
    ):
        with pytest.raises(CorruptStateError):
            decode_frame(bad, 1 << 30)
    with pytest.raises(CorruptStateError):
        JSONCodec().decode(b'{"$arrow": "not base64!"}')
    with pytest.raises(CorruptStateError):
        JSONCodec().decode(b'{"$arrow": 3}')


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )


def test_import_flowdag_imports_no_frame_library() -> None:
    done = _python(
        "import sys, flowdag, flowdag.codec, flowdag.json_codec, flowdag.stores\n"
        "from flowdag.stores import MemoryStore, JSONStore, LMDBStore\n"
        "flowdag.codec.Codec().decode(flowdag.codec.Codec().encode({'a': [1, 2.0]}))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pyarrow', 'pandas', 'polars')))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


_BLOCK = (
    "import sys\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] == 'pyarrow':\n"
    "            raise ImportError('blocked: ' + name)\n"
    "sys.meta_path.insert(0, Block())\n"
)


def test_without_pyarrow_encode_says_how_and_decode_raises_optional(tmp_path: Path) -> None:
    blob = tmp_path / "frame.blob"
    blob.write_bytes(Codec().encode(pd.DataFrame({"a": [1]})))
    text = tmp_path / "frame.json"
    text.write_bytes(JSONCodec().encode(pd.DataFrame({"a": [1]})))
    done = _python(
        _BLOCK + "import pathlib, pandas, flowdag\n"
        "from flowdag.codec import Codec\n"
        "from flowdag.json_codec import JSONCodec\n"
        "from flowdag.errors import OptionalDependencyError, SerializationError\n"
        "df = pandas.DataFrame({'a': [1]})\n"
        "for codec in (Codec(), JSONCodec()):\n"
        "    try:\n"
        "        codec.encode(df)\n"
        "    except SerializationError as exc:\n"
        "        print('encode:', exc)\n"
        f"for codec, path in ((Codec(), {str(blob)!r}), (JSONCodec(), {str(text)!r})):\n"
        "    try:\n"
        "        codec.decode(pathlib.Path(path).read_bytes())\n"
        "    except OptionalDependencyError as exc:\n"
        "        print('decode:', exc)\n"
        "wf = flowdag.Workflow('frames')\n"
        "wf.add_node('make', lambda: pandas.DataFrame({'a': [1]}))\n"
        "result = flowdag.run(wf, run_id='r', store='memory://')\n"
        "print('node:', result.node_status['make'], result.errors['make'].type)\n"
        "print('modules:', 'pyarrow' in sys.modules)\n"
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sum("encode:" in line and "pip install 'flowdag[frames]'" in line for line in lines) == 2
    assert sum("decode:" in line and "pip install 'flowdag[frames]'" in line for line in lines) == 2
    assert any(line.startswith("node: failed SerializationError") for line in lines), lines
    assert "modules: False" in lines


def test_a_node_returning_a_dataframe_resumes_from_every_store(tmp_path: Path) -> None:
    import flowdag

    calls = []

    def make() -> Any:
        calls.append(1)
        return pandas_frames()["mixed"]

    for scheme in SCHEMES[1:]:
        wf = flowdag.Workflow("frames")
        wf.add_node("make", make)
        wf.add_node("rows", lambda make: len(make), deps=["make"])
        url = f"{scheme}://{tmp_path / scheme}"
        first = flowdag.run(wf, run_id="r", store=url)
        again = flowdag.run(wf, run_id="r", store=url)
        assert first.ok and again.ok and again.outputs["rows"] == 3
        assert_same_frame(again.outputs["make"], pandas_frames()["mixed"])
    assert len(calls) == 3
