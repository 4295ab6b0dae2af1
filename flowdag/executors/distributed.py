"""`DaskExecutor`: run nodes on a Dask cluster (``pip install 'flowdag[dask]'``).

Dask only runs node functions; flowdag's driver keeps scheduling, retries,
timeouts and checkpoints, and stays the only writer of the store. Each attempt
is submitted with a unique key and ``pure=False``, so two identical calls are
never merged into one, and with Dask's own retries off, so a failure is
reported to flowdag once. A future stays referenced until its result reaches
the driver (Dask may drop a task nobody holds). A lost worker surfaces as an
exception of the future (``KilledWorker`` and the like), which the runner
treats as a failure of the infrastructure: the attempt is retried without
using up the node's retries.

What must be importable on the workers: flowdag and the packages your node
functions import. The functions themselves travel with cloudpickle, so those
defined in a workflow file need not be importable there; their tracebacks still
name the workflow file and line. A `LocalCluster` of processes started from the
main file's module-level code, outside ``if __name__ == "__main__":``, raises
`MainGuardError`, since its worker processes would import that file again.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from contextlib import suppress
from typing import Any

from flowdag.errors import InvalidArgumentError, OptionalDependencyError
from flowdag.executors._main_guard import check_main_guard
from flowdag.executors.base import Capabilities, ExecutorBase

__all__ = ["DaskExecutor"]


class DaskExecutor(ExecutorBase):
    """An executor backed by a Dask ``distributed`` client.

    Args:
        address: a scheduler address such as ``"tcp://scheduler:8786"``.
        client: an existing ``distributed.Client`` to use (not closed on shutdown).
        max_workers: attempts in flight at once (default: the cluster's threads).
        cluster_options: with neither address nor client, options for the
            ``LocalCluster`` started (and stopped on shutdown), e.g. ``processes=False``.

    Raises:
        OptionalDependencyError: Dask's ``distributed`` is not installed.
        InvalidArgumentError: ``address`` is not a scheduler address.
        OSError: no scheduler answers at ``address`` (e.g. ``TimeoutError``).
    """

    def __init__(
        self,
        address: str | None = None,
        client: Any = None,
        *,
        max_workers: int | None = None,
        **cluster_options: Any,
    ) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise OptionalDependencyError(
                "the dask executor needs Dask's distributed package, which is not installed "
                f"({exc}); install it with: pip install 'flowdag[dask]'"
            ) from exc
        self._cluster: Any = None
        self._owns_client = client is None
        if client is not None:
            self._client = client
        elif address is not None:
            try:
                self._client = Client(address)  # type: ignore[no-untyped-call]
            except (ValueError, TypeError) as exc:  # not an address at all (a bad scheme...)
                raise InvalidArgumentError(
                    f"cannot use {address!r} as a Dask scheduler address ({exc}); "
                    "give one such as tcp://scheduler:8786"
                ) from exc
        else:
            if max_workers is not None:
                cluster_options.setdefault("n_workers", max_workers)
                cluster_options.setdefault("threads_per_worker", 1)
            cluster_options.setdefault("dashboard_address", None)
            if cluster_options.get("processes", True) and _spawns():
                check_main_guard('executor="dask"')
            self._cluster = LocalCluster(**cluster_options)  # type: ignore[no-untyped-call]
            self._client = Client(self._cluster)  # type: ignore[no-untyped-call]
        # A plain remote executor: attempts are pickled, and a timeout counts from submission.
        self.capabilities = Capabilities(
            max_workers=max_workers or max(1, sum(self._client.nthreads().values()))
        )
        self._guard = threading.Lock()
        self._pending: dict[str, Any] = {}  # key -> Dask future, until its result is out

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` in use."""
        return self._client

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        node = getattr(args[0], "node", "task") if args else "task"
        key = f"flowdag-{node}-{uuid.uuid4().hex}"
        remote = self._client.submit(fn, *args, key=key, pure=False, retries=0)
        local: Future[Any] = Future()
        with self._guard:
            self._pending[key] = remote

        def settle(done: Any) -> None:
            with self._guard:
                self._pending.pop(key, None)
            # The driver may cancel the local future at any moment, even between a
            # check of done() and a set: so the set itself is the check (it fails,
            # under the future's lock, on a future already cancelled).
            with suppress(InvalidStateError):
                try:
                    result = done.result()
                except BaseException as exc:  # the attempt's error, passed on
                    local.set_exception(exc)
                else:
                    local.set_result(result)

        def cancel_remote(future: Future[Any]) -> None:
            if future.cancelled():
                remote.cancel()

        local.add_done_callback(cancel_remote)
        remote.add_done_callback(settle)
        return local

    def shutdown(self, wait: bool = True) -> None:
        """Close the client and cluster it started; without ``wait``, cancel what runs."""
        with self._guard:
            pending, self._pending = list(self._pending.values()), {}
        if not wait:
            for remote in pending:
                remote.cancel()
        if self._owns_client:
            self._client.close()
            if self._cluster is not None:
                self._cluster.close()


def _spawns() -> bool:
    """Whether a LocalCluster's worker processes import the main file again (not forked)."""
    import dask

    method = dask.config.get("distributed.worker.multiprocessing-method", "spawn")
    return bool(method != "fork")
