"""A failed node is always recordable, even when its error is over the codec's limits."""

from __future__ import annotations

from pathlib import Path

import pytest

import flowdag
from flowdag.codec import Codec
from flowdag.state import NodeStatus
from flowdag.stores import open_store


def _fail_loudly() -> None:
    raise RuntimeError("x" * 50_000)  # message and traceback far over max_blob_size


@pytest.mark.parametrize("scheme", ["memory", "lmdb", "flatbuffers"])
def test_failure_over_the_blob_limit_is_recorded_and_loads(scheme: str, tmp_path: Path) -> None:
    url = "memory://" if scheme == "memory" else f"{scheme}://{tmp_path / 's'}"
    store = open_store(url, codec=Codec(max_blob_size=1000, compress_threshold=None))
    wf = flowdag.Workflow("w")
    wf.add_node("a", _fail_loudly)
    wf.add_node("b", lambda a: a, deps=["a"])
    result = flowdag.run(wf, run_id="r", store=store)
    # The node's own error reaches the result, not a failed checkpoint.
    assert result.errors["a"].type == "RuntimeError"
    assert result.node_status == {"a": NodeStatus.FAILED, "b": NodeStatus.SKIPPED}
    stored = store.load("r").nodes["a"]
    assert stored.status is NodeStatus.FAILED
    assert stored.error is not None and stored.error.type == "RuntimeError"
    assert stored.error.message.startswith("xxx") and len(stored.error.message) <= 500
    assert "over the codec's limits" in stored.error.traceback
    store.close()


def _fail_loudly_every_time(ctx: flowdag.Context) -> None:
    raise RuntimeError(f"{ctx.attempt}" + "x" * 50_000)


@pytest.mark.parametrize("scheme", ["memory", "lmdb", "flatbuffers"])
@pytest.mark.parametrize(("limit", "kept"), [(2500, [1, 2, 3]), (1000, [3])])
def test_failed_attempts_over_the_blob_limit_are_recorded_and_load(
    scheme: str, tmp_path: Path, limit: int, kept: list[int]
) -> None:
    # Each error keeps its type and the start of its message; when even that is
    # over the limit, the history keeps the node's last attempt only.
    url = "memory://" if scheme == "memory" else f"{scheme}://{tmp_path / 's'}"
    store = open_store(url, codec=Codec(max_blob_size=limit, compress_threshold=None))
    wf = flowdag.Workflow("w")
    wf.add_node("a", _fail_loudly_every_time, retries=2)
    result = flowdag.run(wf, run_id="r", store=store)
    assert result.errors["a"].type == "RuntimeError"  # not a failed checkpoint
    stored = store.load("r").nodes["a"]
    assert stored.status is NodeStatus.FAILED and stored.attempts == 3
    assert [attempt.number for attempt in stored.history] == kept
    for attempt in stored.history:
        assert attempt.error is not None and attempt.error.type == "RuntimeError"
        assert attempt.error.message.startswith(f"{attempt.number}xx")
        assert len(attempt.error.message) <= 500
        assert "over the codec's limits" in attempt.error.traceback
    store.close()
