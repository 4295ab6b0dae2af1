"""Fuzzed loads: random and mutated bytes fed to every store's load path.

Targets: snapshot files and journal files of the journaled stores, LMDB values
(headers, node metas, outputs, data), codec blobs (msgpack and JSON), each in
plain and encrypted stores. The only outcomes allowed are the correct state
and `CorruptStateError` (`DecryptionError` is one): no other exception, no
hang (every load runs under a time limit), no unbounded memory (bombs are
refused by the codecs' limits, checked with tracemalloc).

"Correct" is exact for damage a checksum covers. Two cases widen it, as the
format documents: a journal cut or damaged at its end is a torn tail, which
loads as the state after one of the earlier commits; and bytes whose checksums
were recomputed after the mutation (to drive the parsers beyond the checksum)
may load as another well-formed state.

CI runs ``FUZZ_EXAMPLES`` (default 40) examples per target; for a long run:
``FUZZ_EXAMPLES=2000 pytest tests/stores/test_fuzz_loads.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import tempfile
import tracemalloc
import zlib
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from ipaddress import ip_interface
from pathlib import Path, PurePosixPath
from typing import Any

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowdag
from flowdag.codec import Codec
from flowdag.errors import CorruptStateError, SerializationError
from flowdag.json_codec import JSONCodec
from flowdag.state import AttemptInfo, ErrorInfo, NodeRecord, NodeState, NodeStatus, RunState
from flowdag.stores import open_store
from flowdag.stores._format import Stamp
from flowdag.stores._framing import journal as journal_of
from flowdag.stores._framing import read_journal
from flowdag.stores.base import Store, StoredNode, StoredRun
from flowdag.stores.flatbuffers_format import FlatBuffersFormat
from flowdag.stores.json_format import JSONFormat
from tests import usertypes_models as models

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
TIME_LIMIT = 5.0  # seconds per load: far above any legitimate load here
MEMORY_LIMIT = 64 << 20  # bytes allocated per load, at peak
KEY = "3c" * 32
RUN_ID = "fuzzed"
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # the time limit below is enforced by a signal, hangs included
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)
T0 = datetime(2026, 11, 22, 3, 4, 5, tzinfo=UTC)


# -- a run with a journal: every state along the way ------------------------------------


def base_state() -> RunState:
    nodes = {f"n{i}": NodeState(deps=(f"n{i - 1}",) if i else ()) for i in range(6)}
    nodes["n0"] = NodeState(NodeStatus.COMPLETED, 1, T0, T0, {"rows": [1, 2, 3], "t": (1, "a")})
    return RunState(RUN_ID, "fuzz", nodes, {"seed": 42}, {"owner": "fuzz"})


def build(store: Store) -> list[RunState]:
    """Save the base state, commit five batches; return the state after each step."""
    codec = store.codec
    state = base_state()
    store.save(state)
    states = [store.load(RUN_ID)]
    for i in range(1, 6):
        if i == 4:
            error = ErrorInfo("KeyError", "'x'", "Traceback ...")
            first = AttemptInfo(1, T0, T0, ErrorInfo("OSError", "first", "Traceback ..."))
            history = (first, AttemptInfo(2, T0, T0, error))
            record = NodeRecord(f"n{i}", NodeStatus.FAILED, 2, T0, T0, error, history=history)
        else:
            output = {"i": i, "blob": bytes(range(i * 40 % 256)) * 3, "when": T0, "s": {i}}
            data: dict[str, bytes | None] = {f"k{i}": codec.encode([i] * i)}
            if i == 5:
                data["seed"] = None  # a deleted ctx.data key
            record = NodeRecord(
                f"n{i}",
                NodeStatus.COMPLETED,
                1,
                T0,
                T0,
                None,
                codec.encode(output),
                data,
                (AttemptInfo(1, T0, T0),),
            )
        store.commit(RUN_ID, [record])
        states.append(store.load(RUN_ID))
    return states


def equal_states(a: RunState, b: RunState) -> bool:
    from flowdag.stores.transfer import same_value

    return (
        a.workflow == b.workflow
        and a.metadata == b.metadata
        and a.nodes.keys() == b.nodes.keys()
        and all(
            (x.status, x.attempts, x.started_at, x.finished_at, x.error, x.deps, x.history)
            == (y.status, y.attempts, y.started_at, y.finished_at, y.error, y.deps, y.history)
            and same_value(x.output, y.output)
            for x, y in zip(a.nodes.values(), b.nodes.values(), strict=True)
        )
        and same_value(a.data, b.data)
    )


# -- limits: time and memory ---------------------------------------------------------


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in this (the main) thread if the block runs too long."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"a load took more than {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def guarded(load: Callable[[], Any]) -> Any:
    """``load()`` under the time and memory limits; CorruptStateError is returned, not raised."""
    tracemalloc.start()
    try:
        with time_limit(TIME_LIMIT):
            try:
                return load()
            except CorruptStateError as exc:
                return exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < MEMORY_LIMIT, f"a load allocated {peak} bytes"


# -- mutations ---------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """``original`` with a few random edits: flips, overwrites, cuts, inserts, splices."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "byte", "cut", "insert", "delete", "dup", "zero"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and data:
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x22, 0x5C, 0xDD, 0xC1]))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif kind == "dup":
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        elif kind == "zero":
            end = at + draw(st.integers(1, 64))
            data[at:end] = bytes(len(data[at:end]))
    return bytes(data)


def fuzzed(original: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(mutated(original), st.binary(max_size=256))


# -- journaled stores ---------------------------------------------------------------

JOURNALED = [
    pytest.param("json", None, id="json"),
    pytest.param("flatbuffers", None, id="flatbuffers"),
    pytest.param("json", KEY, id="json-encrypted"),
    pytest.param("flatbuffers", KEY, id="flatbuffers-encrypted"),
]


class JournaledRun:
    """One built run: the files' bytes and the state after each commit."""

    def __init__(self, scheme: str, key: str | None, directory: Path) -> None:
        self.scheme = scheme
        self.key = key
        # A large compaction floor: all five commits stay in the journal.
        with open_store(f"{scheme}://{directory}", key=key, compact_min_bytes=1 << 30) as store:
            self.states = build(store)
        run_dir = directory / "runs" / RUN_ID
        self.snapshot_name = next(p.name for p in run_dir.iterdir() if p.name.startswith("snap"))
        self.journal_name = next(p.name for p in run_dir.iterdir() if p.name.startswith("jour"))
        self.snapshot = (run_dir / self.snapshot_name).read_bytes()
        self.journal = (run_dir / self.journal_name).read_bytes()

    def load(self, snapshot: bytes, journal: bytes) -> Any:
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = Path(tmp) / "runs" / RUN_ID
            run_dir.mkdir(parents=True)
            (run_dir / self.snapshot_name).write_bytes(snapshot)
            (run_dir / self.journal_name).write_bytes(journal)
            options: dict[str, Any] = {"key": self.key} if self.key else {}
            with open_store(f"{self.scheme}://{tmp}", **options) as store:
                return guarded(lambda: store.load(RUN_ID)), guarded(
                    lambda: store.load_statuses(RUN_ID)
                )


@pytest.fixture(scope="module")
def journaled_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, Any], Any]:
    runs = {}
    for scheme in ("json", "flatbuffers"):
        for key in (None, KEY):
            runs[scheme, key] = JournaledRun(scheme, key, tmp_path_factory.mktemp(scheme))
    return runs


def check_outcome(outcome: Any, allowed: list[RunState], *, strict: bool) -> None:
    """The load gave one of the allowed states, or CorruptStateError; nothing else."""
    if isinstance(outcome, CorruptStateError):
        return
    assert isinstance(outcome, RunState), outcome
    if strict:
        assert any(equal_states(outcome, state) for state in allowed), "wrong data returned"


def check_statuses(outcome: Any, allowed: list[RunState], *, strict: bool) -> None:
    if isinstance(outcome, CorruptStateError):
        return
    assert isinstance(outcome, RunState), outcome
    if strict:
        statuses = {n: (s.status, s.attempts, s.error) for n, s in outcome.nodes.items()}
        assert any(
            statuses == {n: (s.status, s.attempts, s.error) for n, s in state.nodes.items()}
            for state in allowed
        ), "wrong statuses returned"


@pytest.mark.parametrize(("scheme", "key"), JOURNALED)
def test_fuzzed_journal(journaled_runs: Any, scheme: str, key: str | None) -> None:
    run = journaled_runs[scheme, key]

    @FUZZ
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        journal = data.draw(fuzzed(run.journal))
        full, statuses = run.load(run.snapshot, journal)
        # Whole records that survived at the front, plus a torn tail: an earlier state.
        check_outcome(full, run.states, strict=True)
        check_statuses(statuses, run.states, strict=True)

    check()


@pytest.mark.parametrize(("scheme", "key"), JOURNALED)
def test_fuzzed_snapshot(journaled_runs: Any, scheme: str, key: str | None) -> None:
    run = journaled_runs[scheme, key]

    @FUZZ
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        snapshot = data.draw(fuzzed(run.snapshot))
        full, statuses = run.load(snapshot, run.journal)
        check_outcome(full, run.states[-1:], strict=True)
        check_statuses(statuses, run.states[-1:], strict=True)

    check()


def _rechecksum_snapshot(scheme: str, content: bytes, stamp: Stamp) -> bytes:
    """Make the file's own checksum match again, so that the parser sees the damage."""
    if scheme == "flatbuffers":
        body = content[:-8] if len(content) >= 8 else content
        return body + struct.pack("<I4s", zlib.crc32(body), b"FDG2")
    from flowdag.stores.json_format import _first_line_prefix

    _, _, body = content.partition(b"\n")
    prefix = _first_line_prefix(2, stamp, len(body))
    return prefix + b"%d}\n" % zlib.crc32(body, zlib.crc32(prefix)) + body


def _plain_parts(run: JournaledRun) -> tuple[bytes, bytes, list[bytes]]:
    """The unencrypted snapshot, its id and the journal payloads of a plain run."""
    snapshot_id, payloads, _ = read_journal(run.journal)
    return run.snapshot, snapshot_id, payloads


def _stamp(scheme: str, snapshot: bytes) -> Stamp:
    run_format = FlatBuffersFormat() if scheme == "flatbuffers" else JSONFormat()
    return run_format.load_snapshot_metas(snapshot)[2]


@pytest.mark.parametrize("scheme", ["json", "flatbuffers"])
def test_fuzzed_parsers_behind_valid_checksums(journaled_runs: Any, scheme: str) -> None:
    run = journaled_runs[scheme, None]
    snapshot, snapshot_id, payloads = _plain_parts(run)
    stamp = _stamp(scheme, snapshot)

    @FUZZ
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        if data.draw(st.booleans()):
            body = data.draw(mutated(snapshot))
            full, statuses = run.load(_rechecksum_snapshot(scheme, body, stamp), run.journal)
        else:
            at = data.draw(st.integers(0, len(payloads) - 1))
            changed = list(payloads)
            changed[at] = data.draw(fuzzed(payloads[at]))
            full, statuses = run.load(snapshot, journal_of(snapshot_id, changed))
        check_outcome(full, [], strict=False)
        check_statuses(statuses, [], strict=False)

    check()


def test_json_snapshot_nested_too_deep_behind_a_valid_checksum(journaled_runs: Any) -> None:
    # A body that re-indents JSON goes through the full JSON parser: nesting
    # deep enough to exhaust Python's recursion must be damage, not a crash.
    run = journaled_runs["json", None]
    deep = b'{"header": ' + b"[" * 200_000 + b"]" * 200_000 + b', "nodes": {}, "data": {}}\n'
    stamp = _stamp("json", run.snapshot)
    full, statuses = run.load(_rechecksum_snapshot("json", b"x\n" + deep, stamp), b"")
    assert isinstance(full, CorruptStateError)
    assert isinstance(statuses, CorruptStateError)


# -- LMDB values ----------------------------------------------------------------------


@pytest.fixture(scope="module", params=[None, KEY], ids=["lmdb", "lmdb-encrypted"])
def lmdb_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory = tmp_path_factory.mktemp("lmdb")
    key = request.param
    with open_store(f"lmdb://{directory}", key=key) as store:
        states = build(store)
    env = lmdb.open(str(directory), max_dbs=4, subdir=True)
    entries: list[tuple[bytes, bytes, bytes]] = []
    with env.begin() as txn:
        for db_name in (b"runs", b"nodes", b"outputs", b"data"):
            db = env.open_db(db_name, txn=txn)
            entries.extend((db_name, k, v) for k, v in txn.cursor(db))
    env.close()
    return directory, key, states[-1], entries


def test_fuzzed_lmdb_values(lmdb_run: Any, tmp_path: Path) -> None:
    directory, key, state, entries = lmdb_run
    options: dict[str, Any] = {"key": key} if key else {}

    @FUZZ
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        db_name, entry_key, value = data.draw(st.sampled_from(entries))
        damaged = data.draw(fuzzed(value))
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("data.mdb", "lock.mdb"):
                (Path(tmp) / name).write_bytes((directory / name).read_bytes())
            env = lmdb.open(tmp, max_dbs=4, subdir=True)
            with env.begin(write=True) as txn:
                txn.put(entry_key, damaged, db=env.open_db(db_name, txn=txn))
            env.close()
            with open_store(f"lmdb://{tmp}", **options) as store:
                full = guarded(lambda: store.load(RUN_ID))
                statuses = guarded(lambda: store.load_statuses(RUN_ID))
        check_outcome(full, [state], strict=True)
        check_statuses(statuses, [state], strict=True)

    check()


def test_lmdb_encrypted_values_cannot_be_swapped(lmdb_run: Any) -> None:
    # With a key, a value copied over another entry's (same run, same kind) is refused.
    directory, key, _, entries = lmdb_run
    if key is None:
        pytest.skip("plain stores do not authenticate entries")
    marker = RUN_ID.encode() + b"\x00"  # the run's marker (layout, next number)
    nodes = [(k, v) for db, k, v in entries if db == b"nodes" and k != marker]
    for target, what in ((nodes[0][0], "node entry"), (marker, "marker entry")):
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("data.mdb", "lock.mdb"):
                (Path(tmp) / name).write_bytes((directory / name).read_bytes())
            env = lmdb.open(tmp, max_dbs=4, subdir=True)
            with env.begin(write=True) as txn:
                txn.put(target, nodes[1][1], db=env.open_db(b"nodes", txn=txn))
            env.close()
            with open_store(f"lmdb://{tmp}", key=key) as store:
                from flowdag.errors import DecryptionError

                with pytest.raises(DecryptionError, match=what):
                    store.load(RUN_ID)


# -- codec blobs ----------------------------------------------------------------------

flowdag.register_types("tests.usertypes_models")

VALUES: list[Any] = [
    None,
    {"a": [1, 2.5, "x", b"\x00"], "b": {1: (2, 3)}},
    [T0, {1, 2}, frozenset({"z"})],
    "x" * 5000,  # compressed
    list(range(3000)),
    # Standard-library types: their payloads nest through the codec.
    [
        Counter({"a": 1, (2,): 3}),
        OrderedDict(z=deque([1, 2], maxlen=3)),
        defaultdict(list, k=[Fraction(1, 3), 1 + 2j]),
        PurePosixPath("a/b"),
        ip_interface("10.0.0.1/8"),
        # User types, allowed above.
        models.Event("x", ("a",), datetime(2026, 1, 2)),
        models.Pair(models.Color.GREEN),
        models.Sealed(1, models.Box("b", [2])),  # attrs
        models.Loose(a=1, b=models.Item(name="n", price=Decimal(1))),  # pydantic
    ],
]


def _codec_blob_fixed(blob: bytes) -> bytes:
    """Recompute a codec blob's CRC (header: format, flags, crc32 of flags + rest)."""
    if len(blob) < 6:
        return blob
    flags = blob[1]
    rest = blob[6:]
    return blob[:2] + struct.pack("<I", zlib.crc32(rest, zlib.crc32(bytes([flags])))) + rest


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_fuzzed_codec_blobs(value: Any) -> None:
    codec = Codec()
    blob = codec.encode(value)

    @FUZZ
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        damaged = data.draw(fuzzed(blob))
        outcome = guarded(lambda: codec.decode(damaged))
        if not isinstance(outcome, CorruptStateError) and damaged[:6] == blob[:6]:
            assert outcome == value  # a checksum that matches: the value itself
        # Behind a recomputed checksum: any value, or damage; nothing else.
        guarded(lambda: codec.decode(_codec_blob_fixed(damaged)))

    check()


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_fuzzed_json_codec_blobs(value: Any) -> None:
    codec = JSONCodec()
    blob = codec.encode(value)

    @FUZZ
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        # JSON fragments carry no checksum (the files around them do): any value
        # that parses, or damage.
        guarded(lambda: codec.decode(data.draw(fuzzed(blob))))

    check()


# -- bombs: limits that bound memory -------------------------------------------------


def _raw_blob(payload: bytes) -> bytes:
    return _codec_blob_fixed(b"\xf1\x00\x00\x00\x00\x00" + payload)


def _zstd_bomb(claimed: int, real: int, *, content_size: bool = True) -> bytes:
    import zstandard

    compressor = zstandard.ZstdCompressor(write_content_size=content_size)
    frame = compressor.compress(bytes(real))
    return _codec_blob_fixed(b"\xf1\x01\x00\x00\x00\x00" + struct.pack("<Q", claimed) + frame)


# name -> (blob, codec settings); the bombs are built lazily: some take a moment.
BOMBS: dict[str, tuple[Callable[[], bytes], dict[str, int]]] = {
    "zstd header claims 1 TiB": (lambda: _zstd_bomb(1 << 40, 1 << 10), {}),
    "zstd frame larger than its header says": (lambda: _zstd_bomb(1000, 1 << 26), {}),
    "zstd frame of unknown size, larger than the header": (
        lambda: _zstd_bomb(1000, 1 << 26, content_size=False),
        {},
    ),
    "zstd 64 MiB of zeros over a 1 MiB limit": (
        lambda: _zstd_bomb(1 << 26, 1 << 26),
        {"max_decoded_size": 1 << 20},
    ),
    "msgpack array of 2**32-1 items": (lambda: _raw_blob(b"\xdd\xff\xff\xff\xff"), {}),
    "msgpack map of 2**32-1 items": (lambda: _raw_blob(b"\xdf\xff\xff\xff\xff"), {}),
    "msgpack str of 4 GiB": (lambda: _raw_blob(b"\xdb\xff\xff\xff\xff"), {}),
    "msgpack nested 100k deep": (lambda: _raw_blob(b"\x91" * 100_000 + b"\xc0"), {}),
    "msgpack list of 100k items over a 1000-item limit": (
        lambda: Codec().encode([0] * 100_000),
        {"max_items": 1000},
    ),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_bombs_are_refused_within_bounded_memory(name: str) -> None:
    make, limits = BOMBS[name]
    blob = make()
    outcome = guarded(lambda: Codec(**limits).decode(blob))  # peak memory checked
    assert isinstance(outcome, CorruptStateError)


def test_decode_limits_are_configurable() -> None:
    small = Codec(max_decoded_size=1 << 16, max_items=100)
    big_list = Codec().encode(list(range(5000)))
    assert isinstance(guarded(lambda: small.decode(big_list)), CorruptStateError)
    compressed = Codec().encode("x" * (1 << 17))
    outcome = guarded(lambda: small.decode(compressed))
    assert isinstance(outcome, CorruptStateError)
    assert "max_decoded_size" in str(outcome)
    assert Codec().decode(big_list) == list(range(5000))
    json_small = JSONCodec(max_blob_size=1000, max_items=10)
    outcome = guarded(lambda: json_small.decode(b"[" + b"1," * 50 + b"1]"))
    assert isinstance(outcome, CorruptStateError)
    assert "max_items" in str(outcome)


# -- forged shapes: well-formed blobs of any value, behind valid checksums ----------------

# Values a codec can hold, as a forger would write them in place of a record.
FORGED_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.sampled_from([str(status) for status in NodeStatus]),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
GOOD_META = ["failed", 2, 1_795_000_000_000_000, 1_795_000_000_000_042, ["E", "m", "tb"]]
GOOD_HISTORY: list[Any] = [[1, 1_795_000_000_000_000, 1_795_000_000_000_001, ["E", "m", "tb"]], 2]
GOOD_HEADER = {"format": 2, "workflow": "wf", "metadata": {}, "deps": {"a": [], "b": ["a"]}}


@st.composite
def forged_meta(draw: st.DrawFn) -> Any:
    """A meta record with one field (or the whole record, or a part of its history)
    replaced by any value."""
    choice = draw(st.sampled_from(["whole", "field", "history entry", "history field"]))
    if choice == "whole":
        return draw(FORGED_VALUES)
    history: list[Any] = [list(GOOD_HISTORY[0]), GOOD_HISTORY[1]]
    meta: list[Any] = [*GOOD_META, history]
    if choice == "field":
        meta[draw(st.integers(0, 5))] = draw(FORGED_VALUES)
        return meta if draw(st.booleans()) else meta[:5]  # with history or without
    if choice == "history entry":
        history[draw(st.integers(0, 1))] = draw(FORGED_VALUES)
    else:
        history[0][draw(st.integers(0, 3))] = draw(FORGED_VALUES)
    return meta


@st.composite
def forged_header(draw: st.DrawFn) -> Any:
    """A run header with one field (or the whole header, or one node's deps) replaced."""
    choice = draw(st.sampled_from(["whole", "field", "deps"]))
    if choice == "whole":
        return draw(FORGED_VALUES)
    header = dict(GOOD_HEADER)
    if choice == "field":
        header[draw(st.sampled_from(sorted(header)))] = draw(FORGED_VALUES)
    else:
        header["deps"] = {"a": draw(FORGED_VALUES), "b": ["a"]}
    return header


def check_well_formed(state: RunState) -> None:
    """A state that loads holds the types a RunState promises, all the way."""
    assert type(state.workflow) is str and type(state.metadata) is dict
    for name, node in state.nodes.items():
        assert type(name) is str and all(type(dep) is str for dep in node.deps)
        assert isinstance(node.status, NodeStatus) and type(node.attempts) is int
        assert node.attempts >= 0
        for moment in (node.started_at, node.finished_at):
            assert moment is None or (type(moment) is datetime and moment.tzinfo is not None)
        error = node.error
        assert error is None or all(type(part) is str for part in vars_of(error))
        assert type(node.history) is tuple
        for attempt in node.history:
            assert type(attempt) is AttemptInfo and type(attempt.number) is int
            assert attempt.number >= 1
            for moment in (attempt.started_at, attempt.finished_at):
                assert type(moment) is datetime and moment.tzinfo is not None
            error = attempt.error
            assert error is None or all(type(part) is str for part in vars_of(error))
        assert node.duration is None or type(node.duration) is float
    assert state.status is not None  # derived fields work


def vars_of(error: ErrorInfo) -> tuple[Any, ...]:
    return (error.type, error.message, error.traceback)


@pytest.fixture(scope="module", params=["memory", "lmdb", "json", "flatbuffers"])
def forging_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    scheme = request.param
    url = "memory://" if scheme == "memory" else f"{scheme}://{tmp_path_factory.mktemp(scheme)}"
    with open_store(url) as store:
        yield store


def test_forged_shapes_behind_valid_checksums(forging_store: Store) -> None:
    store = forging_store
    encode = store.codec.encode

    @FUZZ
    @given(header=forged_header(), meta=forged_meta())
    def check(header: Any, meta: Any) -> None:
        try:
            header_blob, meta_blob = encode(header), encode(meta)
        except SerializationError:
            return  # a value this codec cannot write (JSON's limits): nothing to forge
        # Written by the store itself: valid checksums and framing around any value.
        store._save(RUN_ID, StoredRun(header_blob, {"a": StoredNode(meta_blob)}))
        for outcome in (
            guarded(lambda: store.load(RUN_ID)),
            guarded(lambda: store.load_statuses(RUN_ID)),
        ):
            if isinstance(outcome, CorruptStateError):
                assert f"run '{RUN_ID}'" in str(outcome)
            else:
                check_well_formed(outcome)

    check()
