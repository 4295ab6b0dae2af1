"""Stores of the release with outputs by reference (header format 3) load and resume.

``fixtures/legacy4`` was written by the release that added refs, run ttls and
the blobs field of meta records (see ``fixtures/legacy4.py``), on every kind,
plain and encrypted. Whatever a later release changes in the record format,
these must load with their refs readable, resume, verify and convert.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

import flowdag
from flowdag import NodeStatus, Ref
from flowdag.stores import open_store
from flowdag.stores.base import Store
from flowdag.stores.transfer import copy_run, verify_run
from tests.stores.fixtures import legacy4
from tests.stores.test_history_fixtures import copy_fixture

ENCRYPTED = pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
SCHEMES = pytest.mark.parametrize("scheme", legacy4.SCHEMES)


def opened(tmp_path: Path, scheme: str, encrypted: bool) -> Store:
    url = copy_fixture(tmp_path, "legacy4", scheme, encrypted)
    return open_store(url, **({"key": legacy4.KEY} if encrypted else {}))


@ENCRYPTED
@SCHEMES
def test_the_release_with_refs_loads_with_its_refs_readable(
    tmp_path: Path, scheme: str, encrypted: bool
) -> None:
    with opened(tmp_path, scheme, encrypted) as store:
        state = store.load(legacy4.RUN_ID)
        assert state.ttl == timedelta(days=36500)
        statuses = {name: node.status for name, node in state.nodes.items()}
        assert statuses == {
            "extract": NodeStatus.COMPLETED,
            "report": NodeStatus.COMPLETED,
            "dump": NodeStatus.COMPLETED,
            "wrap": NodeStatus.COMPLETED,
            "wobbly": NodeStatus.COMPLETED,
            "flaky": NodeStatus.FAILED,
            "load": NodeStatus.SKIPPED,
        }
        assert [a.number for a in state.nodes["wobbly"].history] == [1, 2]
        assert [a.number for a in state.nodes["flaky"].history] == [1, 2]
        report = state.nodes["report"].output
        assert isinstance(report, Ref) and report.expires_at is not None
        assert report.extracted == {"chars": legacy4.REPORT_SIZE}
        assert report.preview == legacy4.report_text()[:20]
        assert report.load() == legacy4.report_text()
        assert state.nodes["wrap"].output["report"].load() == legacy4.report_text()
        with state.nodes["dump"].output.open() as stream:
            assert stream.read() == legacy4.dump_bytes()
        assert state.data == {"rows": 3}
        life = store.life(legacy4.RUN_ID)
        dump = state.nodes["dump"].output
        assert life.blobs == {report.sha256: report.expires_at, dump.sha256: None}
        assert life.expires_at is not None
        assert verify_run(store, legacy4.RUN_ID) is None  # None: records and blobs whole


@ENCRYPTED
@SCHEMES
def test_the_release_with_refs_resumes_converts_and_collects(
    tmp_path: Path, scheme: str, encrypted: bool
) -> None:
    with opened(tmp_path, scheme, encrypted) as store:
        calls: list[str] = []
        result = flowdag.run(
            legacy4.build(fail=False, calls=calls), run_id=legacy4.RUN_ID, store=store
        )
        assert result.ok and calls == ["flaky", "load"], (result.errors, calls)
        assert result.outputs["load"] == 7 + 3 + legacy4.REPORT_SIZE + len(legacy4.dump_bytes())
        assert [a.number for a in result.nodes["flaky"].history] == [1, 2, 3]
        report = flowdag.gc(store, grace=0)  # nothing is expired, every blob is held
        assert (report.runs, report.blobs) == (0, 0)
        with open_store("memory://") as copy:
            copy_run(store, copy, legacy4.RUN_ID)
            assert copy.load(legacy4.RUN_ID).nodes["report"].output.load() == (
                legacy4.report_text()
            )
