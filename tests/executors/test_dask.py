"""DaskExecutor on LocalClusters of threads and of processes, module-scoped to stay fast.

Skipped only without Dask's ``distributed`` (``pip install 'flowdag[dask]'``); CI
installs the dev extra, which includes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("distributed")
pytestmark = pytest.mark.filterwarnings("ignore:Port .* is already in use")

from distributed import Client, LocalCluster  # noqa: E402

import flowdag  # noqa: E402
from flowdag.executors import DaskExecutor  # noqa: E402
from tests.executors.conformance import ExecutorTests, kill_driver_then_resume  # noqa: E402
from tests.executors.scripts import python  # noqa: E402


@pytest.fixture(scope="module")
def thread_cluster() -> Iterator[LocalCluster]:
    # Four threads: a timed-out task keeps its thread until it returns.
    with LocalCluster(  # type: ignore[no-untyped-call]
        processes=False, n_workers=1, threads_per_worker=4, dashboard_address=None
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def thread_client(thread_cluster: LocalCluster) -> Iterator[Client]:
    with Client(thread_cluster) as client:  # type: ignore[no-untyped-call]
        yield client


@pytest.fixture(scope="module")
def process_client() -> Iterator[Client]:
    with (
        LocalCluster(  # type: ignore[no-untyped-call]
            processes=True, n_workers=2, threads_per_worker=2, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,  # type: ignore[no-untyped-call]
    ):
        yield client


class TestDaskThreads(ExecutorTests):
    """``LocalCluster(processes=False)``: workers in this process, functions still pickled."""

    remote = True
    stops_sync_attempt = "cancelled"

    @pytest.fixture
    def executor(self, thread_client: Client) -> Any:
        return DaskExecutor(client=thread_client)


class TestDaskProcesses(ExecutorTests):
    """``LocalCluster(processes=True)``: workers are processes a node may kill."""

    remote = True
    stops_sync_attempt = "cancelled"
    worker_processes = True

    @pytest.fixture
    def executor(self, process_client: Client) -> Any:
        return DaskExecutor(client=process_client)


def test_attempts_are_never_merged(thread_client: Client, tmp_path: Path) -> None:
    # Identical calls (same function, same inputs): pure=False and unique keys keep them apart.
    log = tmp_path / "calls.log"

    def same() -> int:
        with open(log, "a") as out:
            out.write("x\n")
        return 1

    wf = flowdag.Workflow("same")
    for i in range(4):
        wf.add_node(f"n{i}", same)
    executor = DaskExecutor(client=thread_client)
    assert flowdag.run(wf, executor=executor).ok
    assert flowdag.run(wf, executor=executor).ok  # a new run: every node runs again
    assert log.read_text().count("x") == 8


def test_address_connects_to_a_running_cluster(thread_cluster: LocalCluster) -> None:
    executor = DaskExecutor(address=thread_cluster.scheduler_address)
    try:
        assert executor.max_workers == 4  # the cluster's threads
        wf = flowdag.Workflow("remote")
        wf.add_node("a", lambda: 20)
        wf.add_node("b", lambda a: a + 1, deps=["a"])
        assert flowdag.run(wf, executor=executor).outputs == {"a": 20, "b": 21}
    finally:
        executor.shutdown()
    assert thread_cluster.scheduler_address  # the cluster itself is not ours to close


def test_with_block_closes_its_client(thread_cluster: LocalCluster) -> None:
    wf = flowdag.Workflow("with")
    wf.add_node("a", lambda: 1)
    with DaskExecutor(address=thread_cluster.scheduler_address) as executor:
        client = executor.client
        assert flowdag.run(wf, executor=executor).ok
    assert client.status == "closed"
    assert thread_cluster.scheduler_address  # the cluster is not the executor's to close


def test_cli_dask_address(
    thread_cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowdag.cli import main

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "flow.py"
    path.write_text(
        "import flowdag\n"
        "wf = flowdag.Workflow('cli-dask')\n"
        "def local_helper(x):\n"
        "    return x * 3\n"
        "@wf.node\n"
        "def a():\n"
        "    return local_helper(7)\n"
    )
    url = f"lmdb://{tmp_path / 'store'}"
    address = thread_cluster.scheduler_address
    code = main(["run", str(path), "--run-id", "d", "--store", url, "--dask-address", address])
    assert code == 0
    with flowdag.open_store(url) as store:
        assert store.load("d").nodes["a"].output == 21


def test_cli_bad_dask_address_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "flow.py").write_text("import flowdag\nwf = flowdag.Workflow('w')\n")
    args = ("-m", "flowdag", "run", "flow.py", "--store", "memory://")
    done = python(*args, "--dask-address", "bogus://scheduler:8786", cwd=tmp_path)
    assert done.returncode == 2
    [line] = done.stderr.splitlines()  # one line, no traceback
    assert line.startswith(
        "flowdag: error: cannot use 'bogus://scheduler:8786' as a Dask scheduler address "
        "(unknown address scheme 'bogus'"
    )
    assert line.endswith("; give one such as tcp://scheduler:8786")


def test_sigkill_of_the_driver_then_resume(tmp_path: Path) -> None:
    kill_driver_then_resume(
        tmp_path,
        "flowdag.executors.DaskExecutor(processes=False, n_workers=1, threads_per_worker=2,"
        " dashboard_address=None)",
    )


class _Remote:
    """A Dask future stand-in whose ``result()`` first runs ``meanwhile``."""

    def __init__(self) -> None:
        self.callbacks: list[Any] = []
        self.meanwhile: Any = None
        self.error: BaseException | None = None

    def add_done_callback(self, callback: Any) -> None:
        self.callbacks.append(callback)

    def result(self) -> str:
        self.meanwhile()
        if self.error is not None:
            raise self.error
        return "value"

    def cancel(self) -> None:
        pass

    def finish(self) -> None:
        for callback in self.callbacks:
            callback(self)  # as Dask calls it, on a thread of its own


class _Client:
    def __init__(self) -> None:
        self.remote = _Remote()

    def submit(self, fn: Any, *args: Any, **options: Any) -> _Remote:
        return self.remote

    def nthreads(self) -> dict[str, int]:
        return {"worker": 1}


@pytest.mark.parametrize("fails", [False, True])
def test_cancel_while_the_result_arrives(fails: bool) -> None:
    # The driver cancels (a timeout) just as Dask hands the result over: after
    # any check of done(), before the result is set. Settling must not raise.
    client = _Client()
    executor = DaskExecutor(client=client)
    local = executor.submit(print)
    client.remote.meanwhile = local.cancel
    if fails:
        client.remote.error = KeyError("lost")
    client.remote.finish()
    assert local.cancelled()
    assert executor._pending == {}
