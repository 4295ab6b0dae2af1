"""copy_run, verify_run and same_value: the library behind ``flowdag store convert|verify``."""

from __future__ import annotations

import math
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
import pytest

from flowdag.codec import Codec
from flowdag.errors import CorruptStateError, RunLockedError, RunNotFoundError, StoreError
from flowdag.json_codec import JSONCodec
from flowdag.state import NodeRecord, NodeState, NodeStatus, RunState
from flowdag.stores import FlatBuffersStore, JSONStore, LMDBStore, MemoryStore, open_store, transfer
from flowdag.stores.base import Store, StoredRun
from flowdag.stores.transfer import copy_run, same_value, verify_run
from tests.forkserver import ForkServer
from tests.stores.conformance import (
    assert_same_state,
    files_under,
    make_state,
    pending_state,
)
from tests.stores.kill_steps import KillAt


@pytest.fixture
def src(tmp_path: Path) -> Iterator[JSONStore]:
    with JSONStore(tmp_path / "src") as store:
        yield store


@pytest.fixture
def dst(tmp_path: Path) -> Iterator[LMDBStore]:
    with LMDBStore(tmp_path / "dst") as store:
        yield store


def damage_json_run(store: JSONStore, run_id: str) -> Path:
    """Flip one byte in the middle of a run's snapshot; return the file."""
    path = store.path / "runs" / run_id / f"snapshot{store.format.suffix}"
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01
    path.write_bytes(content)
    return path


class TamperingStore(MemoryStore):
    """Loads back something other than what was saved: a backend with a bug."""

    def _load(self, run_id: str) -> StoredRun:
        run = super()._load(run_id)
        run.data["tampered"] = self.codec.encode(True)
        return run


# -- copy_run -----------------------------------------------------------------------------


def test_copy_run(src: JSONStore, dst: LMDBStore) -> None:
    src.save(make_state("a"))
    src.save(make_state("b"))
    src.commit("a", [NodeRecord("pending", NodeStatus.COMPLETED, 1, output=src.codec.encode(2.0))])
    copy_run(src, dst, "a")
    assert dst.list_runs() == ["a"]
    assert_same_state(dst.load("a"), src.load("a"))
    assert dst.load("a").nodes["pending"].output == 2.0


def test_copy_run_replaces_a_run_of_the_same_id(src: JSONStore, dst: LMDBStore) -> None:
    src.save(pending_state("a", "x"))
    dst.save(make_state("a"))
    copy_run(src, dst, "a")
    assert dst.load("a") == pending_state("a", "x")


def test_copy_run_of_a_missing_run(src: JSONStore, dst: LMDBStore) -> None:
    with pytest.raises(RunNotFoundError, match="ghost"):
        copy_run(src, dst, "ghost")
    assert dst.list_runs() == []


def test_copy_run_of_a_damaged_run_leaves_the_destination_alone(
    src: JSONStore, dst: LMDBStore
) -> None:
    src.save(make_state("a"))
    dst.save(pending_state("a", "old"))
    path = damage_json_run(src, "a")
    with pytest.raises(CorruptStateError) as info:
        copy_run(src, dst, "a")
    assert "run 'a'" in str(info.value) and str(path) in str(info.value)
    assert dst.load("a") == pending_state("a", "old")


def test_copy_that_differs_is_reported_and_not_kept(src: JSONStore) -> None:
    src.save(make_state("a"))
    dst = TamperingStore()
    with pytest.raises(StoreError, match=r"copy of run 'a' to memory:// differs") as info:
        copy_run(src, dst, "a")
    assert not isinstance(info.value, CorruptStateError)  # not the source's fault
    assert "data" in str(info.value) and "the copy was not kept" in str(info.value)
    assert dst.list_runs() == []


def test_copy_that_cannot_be_read_back_is_reported_and_not_kept(src: JSONStore) -> None:
    class Unreadable(MemoryStore):
        def _load(self, run_id: str) -> StoredRun:
            raise CorruptStateError(f"run '{run_id}' is damaged: test")

    src.save(make_state("a"))
    dst = Unreadable()
    with pytest.raises(StoreError, match="cannot be read back") as info:
        copy_run(src, dst, "a")
    assert not isinstance(info.value, CorruptStateError)
    assert dst.list_runs() == []


def test_copy_run_respects_the_destination_lock(src: JSONStore, dst: LMDBStore) -> None:
    src.save(make_state("a"))
    dst.save(pending_state("a", "running-there"))
    with dst.lock("a"), pytest.raises(RunLockedError):
        copy_run(src, dst, "a")
    assert dst.load("a") == pending_state("a", "running-there")
    copy_run(src, dst, "a")  # the lock was released
    with dst.lock("a"):
        pass


def test_copy_run_checks_the_run_id(src: JSONStore, dst: LMDBStore) -> None:
    with pytest.raises(ValueError, match="invalid run id"):
        copy_run(src, dst, "../escape")


# -- verify_run ---------------------------------------------------------------------------


def test_verify_run(src: JSONStore) -> None:
    src.save(make_state("good"))
    src.save(make_state("bad"))
    path = damage_json_run(src, "bad")
    assert verify_run(src, "good") is None
    reason = verify_run(src, "bad")
    assert reason is not None
    assert "run 'bad'" in reason and str(path) in reason
    with pytest.raises(RunNotFoundError):
        verify_run(src, "ghost")


def test_verify_run_loads_outputs_too(dst: LMDBStore) -> None:
    dst.save(pending_state("r", "a"))
    dst._save("r", StoredRun(header=b"\x00 not a header"))
    assert "run 'r'" in (verify_run(dst, "r") or "")


def test_verify_run_does_not_hide_a_closed_store(src: JSONStore) -> None:
    src.save(make_state("a"))
    src.close()
    with pytest.raises(StoreError, match="closed"):
        verify_run(src, "a")


# -- same_value ---------------------------------------------------------------------------

NOW = datetime(2026, 11, 22, 3, 4, 5, tzinfo=UTC)

SAME: list[tuple[Any, Any]] = [
    (None, None),
    (1, 1),
    (5.0, 5.0),
    (math.nan, math.nan),
    (math.inf, math.inf),
    ("a", "a"),
    (b"a", b"a"),
    ([1, (2, 3)], [1, (2, 3)]),
    ({"a": [math.nan]}, {"a": [math.nan]}),
    ({1, 2}, {2, 1}),
    (frozenset({1}), frozenset({1})),
    (NOW, NOW),
    (NOW, NOW.astimezone(timezone(timedelta(hours=0)))),
    (date(2026, 1, 1), date(2026, 1, 1)),
    (Decimal("1.10"), Decimal("1.10")),
    (Decimal("NaN"), Decimal("NaN")),
    (UUID(int=5), UUID(int=5)),
    (np.array([1.0, math.nan]), np.array([1.0, math.nan])),
    (np.arange(3), np.arange(3)),
]

DIFFERENT: list[tuple[Any, Any]] = [
    (5.0, 5),
    (1, True),
    (0, None),
    ((1, 2), [1, 2]),
    ([1, 2], [1, 2, 3]),
    ({"a": 1}, {"a": 1, "b": 2}),
    ({"a": 1}, {"b": 1}),
    ({"a": 1.0}, {"a": 1}),
    ({1}, frozenset({1})),
    (math.nan, 0.0),
    (-0.0, 0.0),
    (NOW, NOW.replace(tzinfo=None)),
    (NOW, NOW.astimezone(timezone(timedelta(hours=1)))),
    (NOW, NOW.date()),
    (Decimal("1.10"), Decimal("1.1")),
    (np.arange(3), np.arange(3.0)),
    (np.arange(4), np.arange(4).reshape(2, 2)),
    (np.array([1.0, math.nan]), np.array([1.0, 2.0])),
    (np.arange(3), [0, 1, 2]),
]


@pytest.mark.parametrize(("a", "b"), SAME, ids=repr)
def test_same_value(a: Any, b: Any) -> None:
    assert same_value(a, b) and same_value(b, a)


@pytest.mark.parametrize(("a", "b"), DIFFERENT, ids=repr)
def test_different_value(a: Any, b: Any) -> None:
    assert not same_value(a, b) and not same_value(b, a)


def nested(depth: int, leaf: Any = 0) -> Any:
    """A value nested ``depth`` levels: alternately lists and dicts."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def test_same_value_at_the_codec_nesting_limit() -> None:
    # The codecs store lists and dicts nested 1024 levels: the copy check must compare them.
    deep = nested(1024)
    assert same_value(deep, nested(1024))
    assert not same_value(deep, nested(1024, leaf=0.0))
    assert not same_value(deep, nested(1023))


@pytest.mark.parametrize("dst_url", ["flatbuffers://", "json://", "lmdb://"])
def test_copy_of_a_value_nested_at_the_limit(tmp_path: Path, dst_url: str) -> None:
    with LMDBStore(tmp_path / "src") as src, open_store(f"{dst_url}{tmp_path / 'dst'}") as dst:
        state = RunState("deep", "wf")
        state.nodes["n"] = NodeState(NodeStatus.COMPLETED, 1, output=nested(1000))
        src.save(state)
        src.save(make_state("fine"))
        if dst_url == "json://":  # JSON nests at most 256 levels: refused, nothing written
            with pytest.raises(StoreError, match=r"run 'deep' cannot be stored in .*256"):
                copy_run(src, dst, "deep")
            assert files_under(tmp_path / "dst" / "runs") == []
        else:
            copy_run(src, dst, "deep")
            assert same_value(dst.load("deep").nodes["n"].output, nested(1000))
        copy_run(src, dst, "fine")
        assert dst.list_runs() == (["fine"] if dst_url == "json://" else ["deep", "fine"])


class Incomparable:
    """A value whose ``==`` raises (stored with pickle)."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no comparing")

    __hash__ = object.__hash__


@pytest.mark.parametrize("kind", [LMDBStore, JSONStore, FlatBuffersStore])
def test_copy_that_cannot_be_compared_is_not_kept(tmp_path: Path, kind: type[Store]) -> None:
    codec = JSONCodec(allow_pickle=True) if kind is JSONStore else Codec(allow_pickle=True)
    with MemoryStore(codec=codec) as src, kind(tmp_path / "dst", codec=codec) as dst:  # type: ignore[call-arg]
        state = RunState("a", "wf")
        state.nodes["n"] = NodeState(NodeStatus.COMPLETED, 1, output=Incomparable())
        src.save(state)
        with pytest.raises(StoreError, match=r"cannot be compared \(RuntimeError: no comparing"):
            copy_run(src, dst, "a")
        assert dst.list_runs() == []
    # Nothing of the refused copy is left, not even an empty run directory.
    assert not (tmp_path / "dst" / "runs" / "a").exists()


def test_copy_names_the_nodes_that_differ(src: JSONStore) -> None:
    class Shuffled(MemoryStore):
        def _load(self, run_id: str) -> StoredRun:
            run = super()._load(run_id)
            for node in run.nodes.values():
                node.output = self.codec.encode("wrong") if node.output is not None else None
            return run

    state = RunState("r", "wf")
    for i in range(8):
        state.nodes[f"n{i}"] = make_state().nodes["out_float"]
    src.save(state)
    with pytest.raises(StoreError) as info:
        copy_run(src, Shuffled(), "r")
    message = str(info.value)
    assert "'n0', 'n1', 'n2', 'n3', 'n4' and 3 more" in message
    assert "data" not in message


# -- a copy killed at any point ----------------------------------------------------------


def killed_copy_job(src_url: str, dst_url: str, kill_at: int) -> None:
    """In a forked child: copy run "r", SIGKILLing itself at the ``kill_at``-th step.

    The steps: each sync, rename or link, and the check of the copy read back.
    """
    kill = KillAt(kill_at)
    with open_store(src_url) as src, open_store(dst_url) as dst:
        kill.patch(os, "fsync", "fdatasync", "replace", "rename", "link", "unlink")
        kill.patch(transfer, "_difference")
        transfer.copy_run(src, dst, "r")
    print("copied", kill.calls)


def killed_copy(
    server: ForkServer,
    job: Callable[..., None],
    src_url: str,
    dst_url: str,
    kill_at: int,
    *more: str,
) -> subprocess.CompletedProcess[str]:
    """Run ``job`` (a copy that kills itself at its ``kill_at``-th step) into a new store."""
    with open_store(dst_url):
        pass  # created before the copy, as `flowdag store convert` does
    return server.run(job, src_url, dst_url, kill_at, *more)


def copy_finished(proc: subprocess.CompletedProcess[str]) -> bool:
    """Whether the copy of `killed_copy` finished (else it was killed, and nothing else)."""
    if proc.returncode == 0:
        assert proc.stdout.startswith("copied")
        return True
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return False


@pytest.mark.parametrize(("src_scheme", "dst_scheme"), [
    ("json", "lmdb"), ("lmdb", "json"), ("lmdb", "flatbuffers"),
])  # fmt: skip
def test_copy_killed_at_any_point_leaves_no_run_or_a_checked_one(
    tmp_path: Path, fork_server: ForkServer, src_scheme: str, dst_scheme: str
) -> None:
    src_url = f"{src_scheme}://{tmp_path / 'src'}"
    state = make_state("r")
    with open_store(src_url) as src:
        src.save(state)
        expected = src.load("r")
    outcomes = []
    for kill_at in range(1, 40):
        dst_url = f"{dst_scheme}://{tmp_path / f'dst-{kill_at}'}"
        proc = killed_copy(fork_server, killed_copy_job, src_url, dst_url, kill_at)
        with open_store(dst_url) as dst:
            if dst.list_runs():
                assert dst.list_runs() == ["r"]
                assert_same_state(dst.load("r"), expected, f"killed at step {kill_at}")
                outcomes.append("copied")
            else:
                with pytest.raises(RunNotFoundError):
                    dst.load("r")
                outcomes.append("none")
            with open_store(src_url) as src:
                copy_run(src, dst, "r")  # leftovers never get in the way
            assert_same_state(dst.load("r"), expected)
        if copy_finished(proc):
            break
    else:
        pytest.fail("the copy never finished")
    assert outcomes[0] == "none" and outcomes[-1] == "copied", outcomes
    assert len(outcomes) >= 2  # killed before publishing at least once
