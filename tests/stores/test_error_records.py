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
