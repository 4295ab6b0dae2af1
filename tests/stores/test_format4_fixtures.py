"""Stores of the release with node provenance (header format 4) load, explain and resume.

``fixtures/legacy5`` was written by the release that added node provenance to
meta records (see ``fixtures/legacy5.py``), on every kind, plain and encrypted:
its records hold every provenance field (code digests and named parts, output
and input digests, reasons, a pin, audit entries). Whatever a later release
changes in the record format, these must load with their provenance exactly as
written and their refs readable, explain, resume (reusing what still holds,
keeping the pin), verify and convert.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag import NodeStatus, Ref
from flowdag.cli import main
from flowdag.overrides import audit_of
from flowdag.state import Provenance, Reason, RunState
from flowdag.stores import open_store
from flowdag.stores.base import Store
from flowdag.stores.transfer import copy_run, verify_run
from tests.stores.fixtures import legacy5
from tests.stores.test_history_fixtures import copy_fixture

ENCRYPTED = pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
SCHEMES = pytest.mark.parametrize("scheme", legacy5.SCHEMES)
HEX64 = re.compile(r"[0-9a-f]{64}")

BY = legacy5.BY
PINNED_BY_HAND = Reason("manual", f"marked done by {BY}: {legacy5.PIN_REASON}")
REDO_FORCED = Reason("forced", f"invalidated by {BY}: {legacy5.REDO_REASON}")
FIRST = Reason("new", "first run of this run id")

#: Node -> its status and stored reason, as written.
STORED = {
    "extract": (NodeStatus.COMPLETED, FIRST),
    "report": (NodeStatus.COMPLETED, FIRST),
    "pinned": (NodeStatus.COMPLETED, PINNED_BY_HAND),
    "tuned": (NodeStatus.COMPLETED, Reason("code_changed", "code changed: version=")),
    "summary": (NodeStatus.COMPLETED, Reason("new", "it never ran")),
    "redo": (NodeStatus.PENDING, REDO_FORCED),
    "flaky": (
        NodeStatus.FAILED,
        Reason(
            "new",
            "it failed (RuntimeError: planned failure 2) in an earlier call; "
            "a resume runs it again",
        ),
    ),
    "load": (NodeStatus.SKIPPED, None),
}
#: Node -> the names of the parts of its code fingerprint (None: no fingerprint).
LOG = "function: closure log"
PARTS = {
    "extract": {"function", LOG},
    "report": {
        "function",
        LOG,
        "helper tests.stores.fixtures.legacy5.report_text (legacy5.py)",
        "global REPORT_SIZE",
    },
    "pinned": None,  # marked done: no code ran
    "tuned": {"function", LOG, "version"},
    "summary": {"function", LOG},
    "redo": {"function", LOG},
    "flaky": {"function", LOG, "function: closure fail"},
}
#: Node -> the deps whose output digest it recorded.
INPUTS = {
    "extract": set(),
    "report": {"extract"},
    "pinned": set(),
    "tuned": {"extract"},
    "summary": {"report", "pinned", "tuned"},
    "redo": {"extract"},
    "flaky": {"extract"},
}
#: Node -> its audit entries: (action, by, reason).
AUDIT = {
    "pinned": [("mark_done", BY, legacy5.PIN_REASON)],
    "summary": [("mark_done", BY, f"downstream of 'pinned': {legacy5.PIN_REASON}")],
    "redo": [("invalidate", BY, legacy5.REDO_REASON)],
}


def opened(tmp_path: Path, scheme: str, encrypted: bool) -> Store:
    url = copy_fixture(tmp_path, "legacy5", scheme, encrypted)
    key: dict[str, Any] = {"key": legacy5.KEY} if encrypted else {}
    return open_store(url, **key)


def provenance(state: RunState, name: str) -> Provenance:
    found = state.nodes[name].provenance
    assert found is not None, name
    return found


def check_provenance(state: RunState, *, converted: bool = False) -> None:
    """Every node's provenance is the one `legacy5.make` wrote.

    ``converted``: copied to a store of another codec, whose blob of ``report``
    is re-encoded (another sha256) while the digests keep what was written.
    """
    stored = {n: (s.status, s.provenance and s.provenance.reason) for n, s in state.nodes.items()}
    assert stored == STORED
    assert state.nodes["load"].provenance is None  # skipped before it ever ran
    for name, parts in PARTS.items():
        made = provenance(state, name)
        if parts is None:
            assert (made.fingerprint, made.source, dict(made.parts)) == (None, None, {}), name
        else:
            assert HEX64.fullmatch(made.fingerprint or "") and HEX64.fullmatch(made.source or "")
            assert set(made.parts) == parts, name
            assert all(HEX64.fullmatch(digest) for digest in made.parts.values()), name
        if name == "flaky":
            assert made.output is None  # it never completed
        else:  # redo's is kept by invalidate, for the early cutoff of its next run
            assert HEX64.fullmatch(made.output or ""), name
        assert set(made.inputs) == INPUTS[name], name
        for dep, digest in made.inputs.items():
            assert digest == provenance(state, dep).output, (name, dep)
        assert made.manual is (name == "pinned"), name
        assert [(o.action, o.by, o.reason) for o in made.audit] == AUDIT.get(name, []), name
    report = state.nodes["report"].output
    assert isinstance(report, Ref)
    assert converted or provenance(state, "report").output == report.sha256
    tuned = provenance(state, "tuned").parts
    assert tuned["version"] != tuned["function"]
    audit = audit_of(state)
    assert [(node, entry.action) for node, entry in audit] == [
        ("pinned", "mark_done"),
        ("summary", "mark_done"),
        ("redo", "invalidate"),
    ]
    pinned_at, summary_at, redo_at = (entry.at for _, entry in audit)
    assert pinned_at.utcoffset() == timedelta(0) and pinned_at == summary_at < redo_at
    assert state.nodes["pinned"].finished_at == pinned_at  # marked done at that moment


@ENCRYPTED
@SCHEMES
def test_the_release_with_provenance_loads_with_it_as_written(
    tmp_path: Path, scheme: str, encrypted: bool
) -> None:
    with opened(tmp_path, scheme, encrypted) as store:
        state = store.load(legacy5.RUN_ID)
        assert state.ttl == timedelta(days=36500)
        check_provenance(state)
        history = {name: [a.number for a in node.history] for name, node in state.nodes.items()}
        assert history == {
            "extract": [1],
            "report": [1],
            "pinned": [1],  # its failed attempt, kept by mark_done
            "tuned": [1, 2],
            "summary": [1],
            "redo": [1],
            "flaky": [1, 2, 3, 4],
            "load": [],
        }
        assert state.nodes["pinned"].output == legacy5.PINNED_OUTPUT
        assert state.nodes["redo"].output is None  # invalidate drops it
        assert state.nodes["summary"].output == {
            "chars": legacy5.REPORT_SIZE,
            "pinned": legacy5.PINNED_OUTPUT,
            "tuned": 6,
        }
        report = state.nodes["report"].output
        assert report.load() == legacy5.report_text()
        assert state.data == {"rows": 3}
        life = store.life(legacy5.RUN_ID)
        assert life.blobs == {report.sha256: None} and life.expires_at is not None
        statuses = store.load_statuses(legacy5.RUN_ID)  # what overrides and explain read
        assert {n: s.provenance for n, s in statuses.nodes.items()} == {
            n: s.provenance for n, s in state.nodes.items()
        }
        assert verify_run(store, legacy5.RUN_ID) is None  # None: records and blobs whole


@ENCRYPTED
@SCHEMES
def test_the_release_with_provenance_explains(
    tmp_path: Path,
    scheme: str,
    encrypted: bool,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = copy_fixture(tmp_path, "legacy5", scheme, encrypted)
    if encrypted:
        monkeypatch.setenv("FLOWDAG_KEY", legacy5.KEY)
    else:
        monkeypatch.delenv("FLOWDAG_KEY", raising=False)
    code = main(["explain", legacy5.RUN_ID, "--store", url, "--json"])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    nodes = {item["node"]: item for item in json.loads(out)["nodes"]}
    assert {n: item["status"] for n, item in nodes.items()} == {
        n: str(status) for n, (status, _) in STORED.items()
    }
    for name in ("extract", "report", "pinned", "tuned", "summary", "redo"):
        reason = STORED[name][1]
        assert reason is not None and (nodes[name]["code"], nodes[name]["detail"]) == (
            reason.code,
            reason.detail,
        )
    assert nodes["flaky"]["code"] == "new" and "planned failure 4" in nodes["flaky"]["detail"]
    assert nodes["load"] == {
        "node": "load",
        "status": "skipped",
        "code": "new",
        "detail": "skipped: upstream node 'flaky' failed",
        "finished_at": None,
    }


@ENCRYPTED
@SCHEMES
def test_the_release_with_provenance_resumes(tmp_path: Path, scheme: str, encrypted: bool) -> None:
    with opened(tmp_path, scheme, encrypted) as store:
        calls: list[str] = []
        result = flowdag.run(
            legacy5.build(2, fail=False, calls=calls), run_id=legacy5.RUN_ID, store=store
        )
        assert result.ok and sorted(calls) == ["flaky", "load", "redo"], (result.errors, calls)
        kept = Reason("reused", "its code and inputs are unchanged")
        assert result.explain() == {
            "extract": kept,
            "report": kept,
            "pinned": PINNED_BY_HAND,  # still pinned
            "tuned": kept,  # its code is version 2's, as stored
            "summary": kept,
            "redo": REDO_FORCED,
            "flaky": Reason(
                "new",
                "it failed (RuntimeError: planned failure 4) in an earlier call; "
                "a resume runs it again",
            ),
            "load": Reason("new", "it was skipped in an earlier call; a resume runs it again"),
        }
        assert result.outputs["load"] == 7 + 3 + legacy5.REPORT_SIZE + legacy5.PINNED_OUTPUT + 6
        assert [a.number for a in result.nodes["flaky"].history] == [1, 2, 3, 4, 5]
        state = store.load(legacy5.RUN_ID)
        pinned = provenance(state, "pinned")
        assert pinned.manual and pinned.reason == PINNED_BY_HAND
        assert [(o.action, o.by, o.reason) for o in pinned.audit] == AUDIT["pinned"]
        assert [(o.action, o.reason) for o in provenance(state, "redo").audit] == [
            ("invalidate", legacy5.REDO_REASON)
        ]
        made = provenance(state, "load")
        assert set(made.inputs) == {"flaky", "redo", "summary"}
        for dep, digest in made.inputs.items():
            assert digest == provenance(state, dep).output, dep
        assert verify_run(store, legacy5.RUN_ID) is None


@ENCRYPTED
@SCHEMES
def test_the_release_with_provenance_converts_with_it(
    tmp_path: Path, scheme: str, encrypted: bool
) -> None:
    other = legacy5.SCHEMES[(legacy5.SCHEMES.index(scheme) + 1) % len(legacy5.SCHEMES)]
    with (
        opened(tmp_path, scheme, encrypted) as store,
        open_store(f"{other}://{tmp_path / 'copy'}") as disk,
        open_store("memory://") as memory,
    ):
        for copy in (disk, memory):
            copy_run(store, copy, legacy5.RUN_ID)
            assert verify_run(copy, legacy5.RUN_ID) is None
            state = copy.load(legacy5.RUN_ID)
            check_provenance(state, converted=True)
            assert {n: s.provenance for n, s in state.nodes.items()} == {
                n: s.provenance for n, s in store.load(legacy5.RUN_ID).nodes.items()
            }
            assert state.nodes["report"].output.load() == legacy5.report_text()
