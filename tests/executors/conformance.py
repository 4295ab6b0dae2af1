"""Tests every executor must pass: subclass `ExecutorTests` and override ``executor``.

Like ``create_executor_tests`` in CPython's ``test_concurrent_futures``: this module
is not collected itself (its name does not start with ``test_``); each executor's
test module subclasses the class as ``TestXExecutor``, overrides the ``executor``
fixture (a name ``run(executor=...)`` accepts, or an instance to reuse across
runs) and sets the class attributes that say what the executor can do.

Everything goes through ``flowdag.run``. Node functions often run in another
process, so they report through files rather than shared memory: `record`
appends one line per event to a log opened with ``O_APPEND`` (one ``write`` per
line, so lines from several processes never interleave), stamped with
``time.monotonic()``, which is one clock for every process on a machine.
Concurrency is checked by the overlap of the intervals recorded, never by timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag import NodeStatus, RunEvent
from flowdag.errors import FlowdagError
from flowdag.stores import LMDBStore

C, F, S = NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.SKIPPED

# -- what nodes use to report ---------------------------------------------------


def record(log: str | Path, event: str) -> None:
    """Append ``event``, a timestamp and this pid to ``log``: one atomic line."""
    line = f"{event} {time.monotonic():.6f} {os.getpid()}\n".encode()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def events(log: Path) -> list[tuple[str, float, int]]:
    """The lines `record` wrote: (event, time, pid)."""
    if not log.exists():
        return []
    rows = []
    for line in log.read_text().splitlines():
        event, stamp, pid = line.rsplit(" ", 2)
        rows.append((event, float(stamp), int(pid)))
    return rows


def called(log: Path) -> list[str]:
    """Nodes in the order their calls started (events ``call NAME``)."""
    return [e.split(" ", 1)[1] for e, _, _ in events(log) if e.startswith("call ")]


def max_overlap(log: Path, prefix: str = "") -> int:
    """Most intervals (``start NAME`` .. ``end NAME``) open at once, for names with ``prefix``."""
    points = []
    for event, stamp, _ in events(log):
        kind, _, name = event.partition(" ")
        if kind in ("start", "end") and name.startswith(prefix):
            points.append((stamp, 0 if kind == "end" else 1))  # ends first at a tie
    peak = running = 0
    for _, is_start in sorted(points):
        running += 1 if is_start else -1
        peak = max(peak, running)
    return peak


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_until(predicate: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds or ``seconds`` pass; its last value."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- node factories: closures, so that they travel by value to other processes -----


def working(log: Path, name: str, seconds: float = 0.0, result: Any = None) -> Callable[..., Any]:
    """A node that records its start and end around ``seconds`` of sleep."""

    def node() -> Any:
        record(log, f"start {name}")
        time.sleep(seconds)
        record(log, f"end {name}")
        return name if result is None else result

    return node


def counted(log: Path, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (taking ``ctx``), with each call recorded as ``call NAME``."""

    def node(ctx: flowdag.Context) -> Any:
        record(log, f"call {name}")
        return fn(ctx)

    return node


def stuck(log: Path, release: Path, name: str, *, once: bool = False) -> Callable[..., Any]:
    """A node that hangs (until ``release`` exists, at most 10 s) and records its pid.

    With ``once``, only its first attempt hangs; later ones return at once.
    """

    def node(ctx: flowdag.Context) -> str:
        record(log, f"stuck {name} {ctx.attempt}")
        if once and ctx.attempt > 1:
            return f"attempt {ctx.attempt}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not release.exists():
            time.sleep(0.01)
        record(log, f"unstuck {name}")
        return "finished after all"

    return node


class Unprintable(Exception):
    """An exception whose ``str()`` and ``repr()`` raise one of its own kind."""

    def __str__(self) -> str:
        raise Unprintable

    def __repr__(self) -> str:
        raise Unprintable


def run_within(seconds: float, call: Callable[[], Any]) -> Any:
    """``call()`` on a daemon thread; fail the test if it has not returned in ``seconds``."""
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds}s: it hangs"
    assert box, "it raised (see the thread's traceback above)"
    return box[0]


def pids_of(log: Path, prefix: str) -> list[int]:
    return [pid for event, _, pid in events(log) if event.startswith(prefix)]


class ExecutorTests:
    """The behaviour ``flowdag.run`` promises under every executor."""

    #: Node functions run in other processes: they travel by cloudpickle.
    remote: bool = False
    #: How a timeout stops a running sync attempt: "abandoned" (it runs on),
    #: "terminated" (its worker process is killed) or "cancelled".
    stops_sync_attempt: str = "abandoned"
    #: Nodes run in worker processes of their own, which a node may kill, and
    #: which cannot import what only the driver's process has loaded.
    worker_processes: bool = False

    @pytest.fixture
    def executor(self) -> Any:
        """What to pass as ``run(executor=...)``: override in each subclass."""
        raise NotImplementedError

    @pytest.fixture
    def log(self, tmp_path: Path) -> Path:
        return tmp_path / "events.log"

    @pytest.fixture
    def release(self, tmp_path: Path) -> Iterator[Path]:
        """Create this file to let `stuck` nodes go (done at teardown in any case)."""
        path = tmp_path / "release"
        yield path
        path.touch()

    # -- values ---------------------------------------------------------------

    def test_outputs_inputs_and_data(self, executor: Any) -> None:
        when = datetime(2026, 11, 22, 3, 4, 5, tzinfo=UTC)

        def source(ctx: flowdag.Context) -> dict[str, Any]:
            ctx.data["rows"] = 3
            ctx.data["gone"] = "soon"
            return {"ids": (1, 2, 3), "tags": {"a", "b"}, "raw": b"\x00\xff", "when": when}

        def left(source: dict[str, Any], ctx: flowdag.Context) -> int:
            ctx.data["left"] = [ctx.node, ctx.attempt, ctx.run_id]
            return int(sum(source["ids"]) * ctx.data["rows"])

        def right(source: dict[str, Any], ctx: flowdag.Context) -> list[str]:
            del ctx.data["gone"]
            return sorted(source["tags"])

        def join(ctx: flowdag.Context, **inputs: Any) -> dict[str, Any]:
            return {"inputs": sorted(ctx.inputs), "left": inputs["left"], "seen": dict(ctx.data)}

        wf = flowdag.Workflow("values")
        wf.add_node("source", source)
        wf.add_node("left", left, deps=["source"])
        wf.add_node("right", right, deps=["source"])
        wf.add_node("join", join, deps=["left", "right"])
        result = flowdag.run(wf, run_id="v-1", executor=executor)

        assert result.ok, result.errors
        assert result.outputs["source"]["ids"] == (1, 2, 3)
        assert result.outputs["source"]["tags"] == {"a", "b"}
        assert result.outputs["source"]["when"] == when
        assert result.outputs["left"] == 18
        assert result.outputs["right"] == ["a", "b"]
        expected_data = {"rows": 3, "left": ["left", 1, "v-1"]}
        assert result.data == expected_data
        assert result.outputs["join"] == {
            "inputs": ["left", "right"],
            "left": 18,
            "seen": expected_data,
        }

    def test_sync_and_async_nodes_in_one_dag(self, executor: Any) -> None:
        async def fetch(ctx: flowdag.Context) -> int:
            await asyncio.sleep(0.01)
            ctx.data["fetched"] = True
            return 20

        def parse(fetch: int) -> int:
            return fetch + 1

        async def store(parse: int, fetch: int) -> int:
            await asyncio.sleep(0)
            return parse + fetch

        async def broken() -> None:
            await asyncio.sleep(0)
            raise ValueError("async failure")

        wf = flowdag.Workflow("mixed")
        wf.add_node("fetch", fetch)
        wf.add_node("parse", parse, deps=["fetch"])
        wf.add_node("store", store, deps=["parse", "fetch"])
        wf.add_node("broken", broken)
        result = flowdag.run(wf, executor=executor)
        assert result.outputs == {"fetch": 20, "parse": 21, "store": 41}
        assert result.data == {"fetched": True}
        assert result.errors["broken"].type == "ValueError"
        assert "async failure" in result.errors["broken"].message

    def test_lambdas_and_closures_are_nodes(self, executor: Any) -> None:
        factor = 7
        seen: list[int] = []  # in another process, a copy is appended to

        def closure(base: int) -> int:
            seen.append(base)
            return base * factor

        wf = flowdag.Workflow("closures")
        wf.add_node("base", lambda: 6)
        wf.add_node("closure", closure, deps=["base"])
        wf.add_node("lam", lambda closure, base: (closure, base), deps=["closure", "base"])
        result = flowdag.run(wf, executor=executor)
        assert result.ok, result.errors
        assert result.outputs["lam"] == (42, 6)
        assert seen == ([] if self.remote else [6])

    def test_node_that_cannot_be_sent_fails_alone(self, executor: Any) -> None:
        lock = threading.Lock()  # no pickle can carry a lock

        def holds_lock() -> int:
            with lock:
                return 1

        wf = flowdag.Workflow("unsendable")
        wf.add_node("holds_lock", holds_lock, retries=2)
        wf.add_node("after", lambda holds_lock: holds_lock, deps=["holds_lock"])
        wf.add_node("fine", lambda: "fine")
        result = flowdag.run(wf, executor=executor)
        assert result.outputs["fine"] == "fine"
        if not self.remote:  # nothing to send: it just runs
            assert result.ok
            return
        assert result.node_status == {"holds_lock": F, "after": S, "fine": C}
        error = result.errors["holds_lock"]
        assert error.type == "SerializationError"
        assert "'holds_lock'" in error.message
        assert "lock" in error.message
        assert result.nodes["holds_lock"].attempts == 1  # a retry would fail the same way

    def test_function_the_worker_cannot_load_fails_alone(
        self, executor: Any, tmp_path: Path
    ) -> None:
        # A module loaded under a name of its own, as a plugin loader does: cloudpickle
        # sends its functions by reference, which only this process can resolve.
        source = tmp_path / "plugin_source.py"
        source.write_text("def plugged():\n    return 'plugged'\n")
        name = f"_flowdag_test_plugin_{tmp_path.name}"
        spec = importlib.util.spec_from_file_location(name, source)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
            wf = flowdag.Workflow("unloadable")
            wf.add_node("plugged", module.plugged, retries=1)
            wf.add_node("fine", lambda: "fine")
            result = flowdag.run(wf, executor=executor)
        finally:
            del sys.modules[name]
        assert result.outputs["fine"] == "fine"
        if not self.worker_processes:
            assert result.outputs["plugged"] == "plugged"
            return
        error = result.errors["plugged"]
        assert error.type == "SerializationError"
        assert "node 'plugged'" in error.message
        assert name in error.message
        assert result.nodes["plugged"].attempts == 1

    def test_system_exit_fails_only_its_node(self, executor: Any) -> None:
        def leaves() -> None:
            sys.exit(3)

        async def leaves_async() -> None:
            await asyncio.sleep(0)
            raise SystemExit(4)

        async def fine() -> str:
            await asyncio.sleep(0.01)
            return "fine"

        wf = flowdag.Workflow("exits")
        wf.add_node("leaves", leaves)
        wf.add_node("leaves_async", leaves_async)
        wf.add_node("after", fine, deps=["leaves_async"])
        wf.add_node("fine", fine)
        result = flowdag.run(wf, executor=executor)
        assert result.node_status == {"leaves": F, "leaves_async": F, "after": S, "fine": C}
        assert str(result.errors["leaves"]) == "SystemExit: 3"
        assert str(result.errors["leaves_async"]) == "SystemExit: 4"
        # A node's own failure, not a lost worker: no silent extra attempts.
        assert result.nodes["leaves"].attempts == result.nodes["leaves_async"].attempts == 1

    def test_error_crosses_back_with_type_message_and_traceback(self, executor: Any) -> None:
        def explode() -> None:
            raise KeyError("no such row")

        wf = flowdag.Workflow("errors")
        wf.add_node("explode", explode)
        result = flowdag.run(wf, executor=executor)
        error = result.errors["explode"]
        assert (error.type, error.message) == ("KeyError", "'no such row'")
        # The function travels by value to remote workers: its frame still names
        # this file and the raising line, with the line's source.
        line = explode.__code__.co_firstlineno + 1
        assert f'File "{__file__}", line {line}, in explode' in error.traceback
        assert 'raise KeyError("no such row")' in error.traceback
        assert "<dynamic-code>" not in error.traceback
        with pytest.raises(flowdag.RunFailedError, match="explode"):
            result.raise_on_failure()

    def test_exception_that_cannot_be_shown_fails_only_its_node(self, executor: Any) -> None:
        # Its str() and repr() raise another of its kind: building the failure's
        # message fails too. The outcome must still reach the driver, not hang it.
        def raises_unprintable() -> None:
            raise Unprintable

        wf = flowdag.Workflow("unprintable")
        wf.add_node("bad", raises_unprintable)
        wf.add_node("after", lambda bad: bad, deps=["bad"])
        wf.add_node("fine", lambda: "fine")
        result = run_within(60, lambda: flowdag.run(wf, executor=executor))
        assert result.node_status == {"bad": F, "after": S, "fine": C}
        error = result.errors["bad"]
        assert error.type == "Unprintable"
        assert "could not be shown" in error.message
        assert result.nodes["bad"].attempts == 1  # the node's failure, not a lost worker

    # -- failures, retries, timeouts ---------------------------------------------

    def test_retries_with_backoff(self, executor: Any, log: Path) -> None:
        def flaky(ctx: flowdag.Context) -> int:
            record(log, f"try {ctx.attempt}")
            if ctx.attempt < 3:
                raise ConnectionError(f"attempt {ctx.attempt} failed")
            return ctx.attempt

        seen: list[RunEvent] = []
        wf = flowdag.Workflow("retries")
        wf.add_node("flaky", flaky, retries=2, retry_delay=0.05, backoff=2.0)
        wf.add_node("after", lambda flaky: flaky * 10, deps=["flaky"])
        result = flowdag.run(wf, executor=executor, on_event=seen.append)

        assert result.outputs == {"flaky": 3, "after": 30}
        assert result.nodes["flaky"].attempts == 3
        retried = [e for e in seen if e.kind == "node_retrying"]
        assert [(e.attempt, e.error and e.error.type) for e in retried] == [
            (1, "ConnectionError"),
            (2, "ConnectionError"),
        ]
        starts = [stamp for event, stamp, _ in events(log)]
        assert len(starts) == 3
        # Lower bounds only: 0.05 s then 0.1 s, less the 10% jitter.
        assert starts[1] - starts[0] >= 0.045
        assert starts[2] - starts[1] >= 0.09

    def test_failed_node_skips_descendants_only(self, executor: Any) -> None:
        def bad() -> None:
            raise RuntimeError("bad node")

        wf = flowdag.Workflow("skips")
        wf.add_node("a", lambda: 1)
        wf.add_node("bad", bad, deps=["a"], retries=1)
        wf.add_node("child", lambda bad: bad, deps=["bad"])
        wf.add_node("grandchild", lambda child: child, deps=["child"])
        wf.add_node("sibling", lambda a: a + 1, deps=["a"])
        result = flowdag.run(wf, executor=executor)
        assert result.node_status == {
            "a": C,
            "bad": F,
            "child": S,
            "grandchild": S,
            "sibling": C,
        }
        assert result.nodes["bad"].attempts == 2
        assert result.errors["bad"].message == "bad node"

    def test_timeout_fails_the_node(
        self, executor: Any, tmp_path: Path, log: Path, release: Path
    ) -> None:
        wf = flowdag.Workflow("timeouts")
        wf.add_node("hangs", stuck(log, release, "hangs"), timeout=0.3)
        wf.add_node("child", lambda hangs: hangs, deps=["hangs"])
        wf.add_node("other", lambda: "other")
        result = flowdag.run(wf, executor=executor)

        assert result.node_status == {"hangs": F, "child": S, "other": C}
        error = result.errors["hangs"]
        assert error.type == "NodeTimeoutError"
        assert "'hangs'" in error.message
        assert "0.3s" in error.message
        if self.stops_sync_attempt == "abandoned":
            assert "abandoned" in error.message
        else:
            assert "cancelled" in error.message
        [pid] = pids_of(log, "stuck hangs")
        if self.stops_sync_attempt == "terminated":
            assert wait_until(lambda: not alive(pid)), f"worker {pid} still runs"
        release.touch()
        if self.stops_sync_attempt == "abandoned":  # it ran on, and now returns
            assert wait_until(lambda: bool(pids_of(log, "unstuck hangs")))

    def test_timed_out_attempt_is_retried_and_later_nodes_run(
        self, executor: Any, log: Path, release: Path
    ) -> None:
        seen: list[RunEvent] = []
        wf = flowdag.Workflow("timeout-retry")
        # 1 s: under Dask the timeout counts from submission, and the retry's round
        # trip through a process cluster can take longer than 0.3 s on a busy machine.
        wf.add_node("hangs", stuck(log, release, "hangs", once=True), timeout=1.0, retries=1)
        wf.add_node("later", lambda hangs: f"after {hangs}", deps=["hangs"])
        # One slot: "later" can start only once the stuck attempt gave its slot back.
        result = flowdag.run(wf, executor=executor, max_workers=1, on_event=seen.append)

        assert result.ok, result.errors
        assert result.outputs["later"] == "after attempt 2"
        assert result.nodes["hangs"].attempts == 2
        [retrying] = [e for e in seen if e.kind == "node_retrying"]
        assert retrying.error is not None
        assert retrying.error.type == "NodeTimeoutError"
        if self.stops_sync_attempt == "terminated":
            first, second = pids_of(log, "stuck hangs")
            assert first != second
            assert wait_until(lambda: not alive(first)), f"worker {first} still runs"

    def test_node_killing_its_worker_is_retried(self, executor: Any, tmp_path: Path) -> None:
        if not self.worker_processes:
            pytest.skip("nodes run in the driver's process")
        marker = tmp_path / "died-once"

        def dies_once() -> int:
            if not marker.exists():
                marker.touch()
                os._exit(1)  # the worker process dies mid-attempt
            return os.getpid()

        wf = flowdag.Workflow("worker-death")
        wf.add_node("dies_once", dies_once)  # no retries: a lost worker is not the node's fault
        wf.add_node("after", lambda dies_once: dies_once, deps=["dies_once"])
        result = flowdag.run(wf, executor=executor)
        assert result.ok, result.errors
        assert marker.exists()
        assert result.outputs["dies_once"] != os.getpid()

    # -- concurrency limits -----------------------------------------------------

    def test_pools_cap_their_nodes(self, executor: Any, log: Path) -> None:
        wf = flowdag.Workflow("pools")
        for i in range(5):
            wf.add_node(f"db{i}", working(log, f"db{i}", 0.08), pool="db")
        for i in range(3):
            wf.add_node(f"api{i}", working(log, f"api{i}", 0.08), pool="api")
        for i in range(2):
            wf.add_node(f"free{i}", working(log, f"free{i}", 0.08), pool="untracked")
        result = flowdag.run(wf, executor=executor, max_workers=4, pools={"db": 2, "api": 1})
        assert result.ok, result.errors
        assert len(called_intervals(log)) == 10
        assert max_overlap(log, "db") <= 2
        assert max_overlap(log, "api") <= 1
        assert max_overlap(log) <= 4

    def test_max_workers_caps_all_nodes(self, executor: Any, log: Path) -> None:
        wf = flowdag.Workflow("cap")
        for i in range(4):
            wf.add_node(f"n{i}", working(log, f"n{i}", 0.03))
        wf.add_node("sink", lambda **kw: len(kw), deps=[f"n{i}" for i in range(4)])
        result = flowdag.run(wf, executor=executor, max_workers=1)
        assert result.outputs["sink"] == 4
        assert max_overlap(log) == 1

    @pytest.mark.parametrize("cap", [0, -1, 1.5, True, "2", None])
    def test_bad_pool_cap_is_refused(self, executor: Any, log: Path, cap: Any) -> None:
        wf = flowdag.Workflow("bad-pools")
        wf.add_node("q", working(log, "q"), pool="db")
        with pytest.raises(FlowdagError, match=r"pools\['db'\]"):
            flowdag.run(wf, executor=executor, pools={"db": cap})
        assert not log.exists()

    def test_pools_must_be_a_mapping_of_names(self, executor: Any) -> None:
        wf = flowdag.Workflow("bad-pools")
        wf.add_node("q", lambda: 1, pool="db")
        with pytest.raises(FlowdagError, match="pools"):
            flowdag.run(wf, executor=executor, pools=["db"])  # type: ignore[arg-type]
        with pytest.raises(FlowdagError, match="pool names"):
            flowdag.run(wf, executor=executor, pools={1: 2})  # type: ignore[dict-item]

    # -- resume -------------------------------------------------------------------

    def test_fail_then_resume_reruns_only_the_failed_node(
        self, executor: Any, tmp_path: Path, log: Path
    ) -> None:
        flag = tmp_path / "fail"
        flag.touch()

        def first(ctx: flowdag.Context) -> int:
            ctx.data["first"] = True
            return 1

        def flaky(ctx: flowdag.Context) -> int:
            if flag.exists():
                raise RuntimeError("flag is set")
            ctx.data["flaky"] = True
            return int(ctx.inputs["first"]) + 1

        wf = flowdag.Workflow("resume")
        wf.add_node("first", counted(log, "first", first))
        wf.add_node("flaky", counted(log, "flaky", flaky), deps=["first"])
        wf.add_node(
            "last", counted(log, "last", lambda ctx: ctx.inputs["flaky"] * 10), deps=["flaky"]
        )
        wf.add_node("aside", counted(log, "aside", lambda ctx: "aside"))
        with LMDBStore(tmp_path / "store") as store:
            failed = flowdag.run(wf, run_id="r", store=store, executor=executor)
            assert failed.node_status == {"first": C, "flaky": F, "last": S, "aside": C}
            assert sorted(called(log)) == ["aside", "first", "flaky"]

            flag.unlink()
            resumed = flowdag.run(wf, run_id="r", store=store, executor=executor)
            assert resumed.ok, resumed.errors
            assert sorted(called(log)[3:]) == ["flaky", "last"]
            assert resumed.outputs == {"first": 1, "flaky": 2, "last": 20, "aside": "aside"}
            assert resumed.data == {"first": True, "flaky": True}

            again = flowdag.run(wf, run_id="r", store=store, executor=executor)
            assert again.ok
            assert len(called(log)) == 5


def called_intervals(log: Path) -> list[str]:
    return [e for e, _, _ in events(log) if e.startswith("start ")]


# -- a driver killed with SIGKILL -------------------------------------------------

KILLED_DRIVER = textwrap.dedent(
    """
    import os, sys, time
    import flowdag

    LOG = os.environ["KILL_LOG"]
    NODES = 30

    def make(i):
        def node(ctx):
            fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            # The tag read as it runs: a global the resume changes would change the
            # node's code fingerprint, and a resume would run it again.
            os.write(fd, f"{os.environ['KILL_TAG']} n{i}\\n".encode())
            os.close(fd)
            time.sleep(0.04)
            ctx.data[f"k{i}"] = i * i
            return i + sum(ctx.inputs.values())
        return node

    wf = flowdag.Workflow("killed")
    for i in range(NODES):
        deps = [f"n{d}" for d in (i - 1, i // 2) if 0 <= d < i]
        wf.add_node(f"n{i}", make(i), deps=sorted(set(deps)))

    def make_executor():
        return EXECUTOR

    if __name__ == "__main__":
        executor = make_executor()
        try:
            with flowdag.LMDBStore(sys.argv[1]) as store:
                result = flowdag.run(wf, run_id="killed", store=store, executor=executor)
        finally:
            executor.shutdown()
        sys.exit(0 if result.ok else 1)
    """
)
KILLED_NODES = 30


def _killed_expected() -> tuple[dict[str, int], dict[str, int]]:
    outputs: dict[str, int] = {}
    for i in range(KILLED_NODES):
        deps = sorted({d for d in (i - 1, i // 2) if 0 <= d < i})
        outputs[f"n{i}"] = i + sum(outputs[f"n{d}"] for d in deps)
    return outputs, {f"k{i}": i * i for i in range(KILLED_NODES)}


def kill_driver_then_resume(tmp_path: Path, executor_source: str) -> None:
    """SIGKILL a driver mid-run (``executor_source`` builds its executor), then resume.

    The resumed run must complete without calling any node the store held as
    completed after the kill, and end with the outputs and data of a clean run.
    """
    script = tmp_path / "killed_flow.py"
    script.write_text(KILLED_DRIVER.replace("EXECUTOR", executor_source))
    store_dir = tmp_path / "store"
    log = tmp_path / "calls.log"

    def calls(tag: str) -> list[str]:
        lines = log.read_text().splitlines() if log.exists() else []
        return [line.split()[1] for line in lines if line.split()[0] == tag]

    def start(tag: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "KILL_LOG": str(log), "KILL_TAG": tag}
        return subprocess.Popen(
            [sys.executable, str(script), str(store_dir)],
            env=env,
            cwd=tmp_path,
            start_new_session=True,  # its workers too, to clean up after the kill
        )

    first = start("first")
    try:
        # Kill once a third of the nodes were called: mid-run, whatever the speed.
        assert wait_until(lambda: len(calls("first")) >= 10 or first.poll() is not None, 120)
        assert first.poll() is None, "the run ended before it could be killed"
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        _kill_group(first)
    with LMDBStore(store_dir) as store:  # the store loads after the kill
        state = store.load("killed")
    done = {name for name, node in state.nodes.items() if node.status is C}
    assert done, "nothing was checkpointed before the kill"
    assert len(done) < KILLED_NODES

    second = start("second")
    try:
        assert second.wait(120) == 0
    finally:
        _kill_group(second)
    again = set(calls("second"))
    assert not again & done, f"completed nodes ran again: {sorted(again & done)}"
    assert again == {f"n{i}" for i in range(KILLED_NODES)} - done
    outputs, data = _killed_expected()
    with LMDBStore(store_dir) as store:
        state = store.load("killed")
    assert {name: node.output for name, node in state.nodes.items()} == outputs
    assert state.data == data


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """End what is left of a driver's session (orphaned workers), by its id."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
