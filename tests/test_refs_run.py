"""run() keeps large outputs by reference, on every store and executor.

What a user relies on: an output above its inline limit is written once to the
store's blob area and its record holds a `flowdag.Ref`; downstream nodes get
the value (or the Ref when they ask for it); results and loads read no blob
until asked; extract/preview fields live inline; a resume re-runs a completed
node whose blob is gone when a pending node needs it.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag import BlobMissingError, NodeStatus, Ref
from flowdag.errors import DAGError, InvalidArgumentError, RunNotFoundError, SerializationError
from flowdag.stores import generate_key, open_store
from flowdag.stores.base import Store

KINDS = ["memory", "lmdb", "json", "flatbuffers", "lmdb-encrypted"]
BIG = list(range(100_000))  # about 360 KiB of msgpack, above the default 256 KiB


def open_kind(kind: str, root: Path) -> Store:
    scheme, _, encrypted = kind.partition("-")
    if scheme == "memory":
        return open_store("memory://")
    return open_store(f"{scheme}://{root}", **({"key": generate_key()} if encrypted else {}))


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with open_kind(request.param, tmp_path) as opened:
        yield opened


def blob_count(store: Store) -> int:
    return len(store.blobs.entries())


def fetch_workflow(**options: Any) -> flowdag.Workflow:
    wf = flowdag.Workflow("refs")

    @wf.node(**options)
    def fetch() -> list[int]:
        return BIG

    @wf.node(deps=["fetch"])
    def total(fetch: list[int]) -> int:
        return sum(fetch)

    @wf.node(deps=["fetch"])
    def route(fetch: flowdag.Ref) -> list[Any]:
        return [type(fetch).__name__, fetch.size, fetch.extracted]

    return wf


def test_a_large_output_is_kept_by_reference_and_loaded_where_needed(store: Store) -> None:
    wf = fetch_workflow(extract=lambda rows: {"rows": len(rows)}, preview=lambda rows: rows[:3])
    result = flowdag.run(wf, run_id="r1", store=store)

    assert result.ok, result.errors
    ref = result.refs["fetch"]
    assert list(result.refs) == ["fetch"]  # small outputs stay inline
    assert ref.extracted == {"rows": 100_000} and ref.preview == [0, 1, 2]
    assert not ref.preview_truncated
    assert ref.size == store.codec.plain_size(store.codec.encode(BIG))
    assert result.outputs["total"] == sum(BIG)
    assert result.outputs["route"] == ["Ref", ref.size, {"rows": 100_000}]
    assert result.outputs["fetch"] == BIG
    stored = store.load("r1").nodes["fetch"].output
    assert stored == ref and stored.load() == BIG
    assert store.life("r1").blobs == {ref.sha256: None}
    assert blob_count(store) == 1


def test_loading_a_run_and_its_refs_reads_no_blob(store: Store) -> None:
    result = flowdag.run(fetch_workflow(), run_id="r1", store=store)
    name = store.blobs.name_of(result.refs["fetch"].sha256)
    store.blobs.delete(name)  # anything that reads it now fails

    state = store.load("r1")
    assert state.nodes["fetch"].status is NodeStatus.COMPLETED
    assert isinstance(state.nodes["fetch"].output, Ref)
    store.load_statuses("r1")
    again = flowdag.run(fetch_workflow(), run_id="r1", store=store)  # nothing left to run
    assert again.refs["fetch"] == result.refs["fetch"]
    assert again.outputs["total"] == sum(BIG)
    with pytest.raises(BlobMissingError, match=r"run 'r1', node 'fetch'"):
        again.outputs["fetch"]


def test_the_limit_compares_the_size_before_compression(store: Store) -> None:
    wf = flowdag.Workflow("zeros")
    wf.add_node("zeros", lambda: bytes(300_000))  # compresses to a few hundred bytes
    result = flowdag.run(wf, store=store)
    ref = result.refs["zeros"]
    assert ref.size > 300_000
    assert ref.stored_size < 10_000 or store.blobs.compression is None


def test_limits_per_run_and_per_node(store: Store) -> None:
    wf = flowdag.Workflow("limits")
    wf.add_node("small", lambda: "s" * 2_000)
    wf.add_node("pinned", lambda: "p" * 2_000, inline_limit=None)
    wf.add_node("tiny", lambda: "t" * 200, inline_limit="100B")
    wf.add_node("big", lambda: BIG, inline_limit="1MiB")
    result = flowdag.run(wf, store=store, inline_limit="1KiB")
    assert sorted(result.refs) == ["small", "tiny"]
    assert result.outputs["small"] == "s" * 2_000 and result.outputs["tiny"] == "t" * 200

    never = flowdag.run(wf, store=store, inline_limit=None)
    assert sorted(never.refs) == ["tiny"]


def test_the_same_value_is_one_blob_across_nodes_and_runs(store: Store) -> None:
    wf = flowdag.Workflow("dedup")
    for i in range(5):
        wf.add_node(f"n{i}", lambda: BIG)
    first = flowdag.run(wf, run_id="a", store=store)
    second = flowdag.run(wf, run_id="b", store=store)
    assert len({ref.sha256 for ref in [*first.refs.values(), *second.refs.values()]}) == 1
    assert blob_count(store) == 1


def test_a_long_preview_is_cut_and_says_so(store: Store) -> None:
    wf = fetch_workflow(preview=lambda rows: rows, extract=lambda rows: {"first": rows[0]})
    ref = flowdag.run(wf, store=store).refs["fetch"]
    assert ref.preview_truncated
    assert ref.preview == BIG[: len(ref.preview)]
    assert 100 < len(store.codec.encode(ref.preview)) <= 2048


def test_a_preview_of_an_unsliceable_value_is_its_repr_cut(store: Store) -> None:
    wf = flowdag.Workflow("odd")
    wf.add_node("odd", lambda: BIG, preview=lambda rows: frozenset(rows))
    ref = flowdag.run(wf, store=store).refs["odd"]
    assert ref.preview_truncated and isinstance(ref.preview, str)
    assert ref.preview.startswith("frozenset({")


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"extract": lambda rows: 1 / 0}, "ZeroDivisionError"),
        ({"preview": lambda rows: rows.nope}, "AttributeError"),
        ({"extract": lambda rows: [len(rows)]}, "InvalidArgumentTypeError"),
        ({"extract": lambda rows: {"f": object()}}, "SerializationError"),
        ({"preview": lambda rows: object()}, "SerializationError"),
        ({"preview": lambda rows: range(len(rows))}, "SerializationError"),
    ],
)
def test_extract_or_preview_failing_fails_the_node_and_commits_no_ref(
    store: Store, options: dict[str, Any], error: str
) -> None:
    result = flowdag.run(fetch_workflow(**options), run_id="r1", store=store)
    assert result.nodes["fetch"].status is NodeStatus.FAILED
    assert result.errors["fetch"].type == error
    assert result.node_status["total"] is NodeStatus.SKIPPED
    state = store.load("r1")
    assert state.nodes["fetch"].output is None
    assert store.life("r1").blobs == {}


def test_a_node_ttl_makes_its_blob_expire(store: Store) -> None:
    result = flowdag.run(fetch_workflow(ttl=0.5), run_id="r1", store=store)
    ref = result.refs["fetch"]
    finished = result.nodes["fetch"].finished_at
    assert ref.expires_at is not None and finished is not None
    assert timedelta(0) < ref.expires_at - finished <= timedelta(seconds=0.5)
    assert store.life("r1").blobs == {ref.sha256: ref.expires_at}
    time.sleep(0.6)
    with pytest.raises(BlobMissingError, match="expired"):
        store.load("r1").nodes["fetch"].output.load()


def test_a_run_ttl_counts_from_its_end(store: Store) -> None:
    wf = flowdag.Workflow("slow")
    wf.add_node("slow", lambda: time.sleep(0.4))
    result = flowdag.run(wf, run_id="r1", store=store, ttl=0.3)  # lasts longer than its ttl
    node = result.nodes["slow"]
    assert node.started_at is not None and node.finished_at is not None
    expires_at = store.life("r1").expires_at
    assert expires_at == node.finished_at + timedelta(seconds=0.3)
    assert expires_at > node.started_at + timedelta(seconds=0.3)  # from its end, not its start
    time.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 0.01)
    with pytest.raises(RunNotFoundError, match="expired"):
        store.load("r1")
    again = flowdag.run(wf, run_id="r1", store=store)  # the same id starts afresh
    assert again.nodes["slow"].attempts == 1
    assert store.load("r1").ttl is None


def test_a_resume_reruns_a_completed_node_whose_needed_blob_is_gone(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    fail = [True]
    wf = flowdag.Workflow("lost")

    @wf.node
    def fetch() -> list[int]:
        calls.append("fetch")
        return BIG

    @wf.node
    def other() -> list[int]:
        calls.append("other")
        return BIG[::-1]

    @wf.node(deps=["fetch"])
    def total(fetch: list[int]) -> int:
        calls.append("total")
        if fail[0]:
            raise RuntimeError("first time")
        return sum(fetch)

    first = flowdag.run(wf, run_id="r1", store=store)
    assert first.node_status["total"] is NodeStatus.FAILED
    for ref in first.refs.values():
        store.blobs.delete(store.blobs.name_of(ref.sha256))
    fail[0] = False
    calls.clear()
    with caplog.at_level(logging.WARNING, logger="flowdag"):
        second = flowdag.run(wf, run_id="r1", store=store)
    assert second.ok
    assert sorted(calls) == ["fetch", "total"]  # `other` is needed by no one: not re-run
    assert second.nodes["fetch"].attempts == 2  # its attempt numbers go on
    assert "node 'fetch' runs again: its output's blob" in caplog.text
    assert second.outputs["total"] == sum(BIG)


def test_ctx_output_file_streams_a_bytes_output(store: Store) -> None:
    wf = flowdag.Workflow("stream")

    @wf.node(preview=lambda ref: ref.open().read(4))
    def dump(ctx: flowdag.Context) -> None:
        with ctx.output_file() as f:
            for i in range(64):
                f.write(bytes([i]) * 4096)

    @wf.node(deps=["dump"])
    def size(dump: bytes) -> int:
        return len(dump)

    result = flowdag.run(wf, run_id="r1", store=store)
    assert result.ok, result.errors
    ref = result.refs["dump"]
    assert ref.encoding == "raw" and ref.size == 64 * 4096 and ref.preview == bytes(4)
    assert result.outputs["size"] == 64 * 4096
    with store.load("r1").nodes["dump"].output.open() as stream:
        assert stream.read(4096) == bytes(4096)
        assert stream.read() == b"".join(bytes([i]) * 4096 for i in range(1, 64))


def test_a_small_streamed_output_is_a_ref_too(store: Store) -> None:
    wf = flowdag.Workflow("small")

    def dump(ctx: flowdag.Context) -> None:
        with ctx.output_file() as f:
            f.write(b"hi")

    wf.add_node("dump", dump, inline_limit=None)
    result = flowdag.run(wf, store=store)
    assert result.refs["dump"].size == 2 and result.outputs["dump"] == b"hi"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("return 1", "also returned int"),
        ("raise_inside", "boom"),
        ("twice", "already called"),
    ],
)
def test_output_file_misuse_fails_the_node_and_keeps_no_blob(
    store: Store, body: str, message: str
) -> None:
    wf = flowdag.Workflow("misuse")

    def dump(ctx: flowdag.Context) -> int | None:
        with ctx.output_file() as f:
            f.write(b"x" * 100_000)
            if body == "raise_inside":
                raise RuntimeError("boom")
            if body == "twice":
                ctx.output_file()
        return 1 if body == "return 1" else None

    wf.add_node("dump", dump)
    result = flowdag.run(wf, run_id="r1", store=store)
    assert message in result.errors["dump"].message
    assert store.life("r1").blobs == {}
    if body == "raise_inside":
        assert blob_count(store) == 0


@pytest.mark.parametrize(
    ("option", "value", "error", "example"),
    [
        ("inline_limit", "lots", InvalidArgumentError, "256KiB"),
        ("inline_limit", -1, InvalidArgumentError, "256KiB"),
        ("ttl", "forever", InvalidArgumentError, "30m"),
        ("ttl", 0, InvalidArgumentError, "30d"),
    ],
)
def test_bad_run_options_name_the_option_and_a_valid_value(
    option: str, value: Any, error: type[Exception], example: str
) -> None:
    with pytest.raises(error, match=option) as info:
        flowdag.run(fetch_workflow(), **{option: value})
    assert example in str(info.value)


@pytest.mark.parametrize(
    ("option", "value"),
    [("inline_limit", "lots"), ("ttl", "forever"), ("ttl", -3), ("extract", 3)],
)
def test_bad_node_options_are_dag_errors(option: str, value: Any) -> None:
    with pytest.raises(DAGError, match=f"node 'fetch': {option}"):
        fetch_workflow(**{option: value})


def test_remote_tasks_carry_the_ref_not_the_value(tmp_path: Path) -> None:
    from flowdag.attempt import Attempt
    from flowdag.launcher import Launcher

    class Capture:
        capabilities = flowdag.executors.Capabilities(in_process=False)

        def __init__(self) -> None:
            self.tasks: list[Any] = []

        def submit(self, fn: Any, *args: Any) -> Any:
            from concurrent.futures import Future

            self.tasks.append(args)
            return Future()

        def shutdown(self, wait: bool = True) -> None:
            pass

    with open_store(f"lmdb://{tmp_path}") as store:
        data = store.codec.encode(bytes(50 << 20))  # 50 MiB
        ref = store.blobs.put(store.codec.plain(data)).ref(encoding="msgpack")
        ref = ref.bind(store.ref_source)
        wf = flowdag.Workflow("w")
        wf.add_node("src", lambda: None)
        wf.add_node("use", lambda src: len(src), deps=["src"])
        spec = wf.build().specs["use"]
        capture = Capture()
        launcher = Launcher(capture, store.codec, lambda a, o: None, lambda a: None)
        attempt = Attempt(spec, "r", 1, {"src": ref}, {}, store.codec)
        attempt.inline_limit, attempt.source = 1 << 18, store.ref_source
        launcher.launch(attempt)
        [(task,)] = capture.tasks
        assert len(pickle.dumps(task)) < 8192
        from flowdag.launcher import execute_remote

        outcome = execute_remote(pickle.loads(pickle.dumps(task)))
        assert outcome.error is None and store.codec.decode(outcome.output) == 50 << 20


@pytest.mark.parametrize("executor", ["processes", "asyncio"])
def test_other_executors_keep_outputs_by_reference(tmp_path: Path, executor: str) -> None:
    from tests import refs_workflow

    with open_store(f"flatbuffers://{tmp_path}") as store:
        result = flowdag.run(refs_workflow.wf, store=store, executor=executor, max_workers=2)
        assert result.ok, result.errors
        assert sorted(result.refs) == ["dump", "fetch"]
        assert result.outputs["total"] == sum(refs_workflow.BIG)
        assert result.outputs["route"] == "Ref"
        assert result.outputs["dumped"] == 100 * 1000


def test_a_value_that_cannot_be_stored_is_still_a_serialization_error(store: Store) -> None:
    wf = flowdag.Workflow("bad")
    wf.add_node("bad", lambda: [object()] * 100_000)
    result = flowdag.run(wf, store=store)
    assert result.errors["bad"].type == SerializationError.__name__


@pytest.mark.parametrize("kind", ["memory", "lmdb-encrypted"])
def test_workers_that_cannot_reach_the_blob_area_get_values_and_the_driver_keeps_refs(
    tmp_path: Path, kind: str
) -> None:
    from tests import refs_workflow

    with open_kind(kind, tmp_path) as store:
        result = flowdag.run(refs_workflow.values_only, store=store, executor="processes")
        assert result.ok, result.errors
        assert result.refs["fetch"].extracted == {"rows": len(refs_workflow.BIG)}
        assert result.outputs["total"] == sum(refs_workflow.BIG)
        assert result.outputs["route"] == "Ref"  # an unbound Ref: no key travelled
        assert store.load(result.run_id).nodes["fetch"].output.load() == refs_workflow.BIG

        streamed = flowdag.run(refs_workflow.wf, store=store, executor="processes")
        assert "ctx.output_file() needs the store's blob area" in streamed.errors["dump"].message


def test_result_outputs_load_a_blob_once(store: Store) -> None:
    result = flowdag.run(fetch_workflow(), run_id="r1", store=store)
    assert result.outputs["fetch"] == BIG
    store.blobs.delete(store.blobs.name_of(result.refs["fetch"].sha256))
    assert result.outputs["fetch"] == BIG  # kept from the first read
    assert "fetch" in repr(result.outputs) and "99999" in repr(result.outputs)


def test_a_loaded_ref_names_its_run_and_node_however_deep(store: Store) -> None:
    wf = flowdag.Workflow("deep")

    @wf.node(inline_limit="1KiB")
    def fetch() -> bytes:
        return b"x" * 4096

    @wf.node(deps=["fetch"])
    def wrap(fetch: flowdag.Ref) -> dict[str, Any]:
        return {"rows": [fetch]}  # a Ref nested in a small, inline output

    @wf.node()
    def plain() -> int:
        return 1

    assert flowdag.run(wf, run_id="r1", store=store).ok
    (name,) = [entry.name for entry in store.blobs.entries()]
    store.blobs.delete(name)
    state = store.load("r1")
    assert state.nodes["plain"].output == 1
    with pytest.raises(BlobMissingError, match="run 'r1', node 'fetch'"):
        state.nodes["fetch"].output.load()
    with pytest.raises(BlobMissingError, match="run 'r1', node 'wrap'"):
        state.nodes["wrap"].output["rows"][0].load()
