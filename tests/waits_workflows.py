"""What the wait tests share: store kinds (encrypted too), a purchase-order workflow, a clock.

The clock replaces `flowdag._wait_entries.now`, the one place waits read the
time, so a test moves past a deadline without sleeping.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flowdag import NO_DEFAULT, Workflow, _wait_entries
from flowdag.stores import generate_key, open_store
from flowdag.stores.base import Store

PLAIN = ["memory", "lmdb", "json", "flatbuffers"]
ENCRYPTED = ["lmdb-encrypted", "json-encrypted", "flatbuffers-encrypted"]
KINDS = PLAIN + ENCRYPTED
DISK_KINDS = KINDS[1:]

CALLS: list[str] = []  # the nodes called, in order

APPROVAL = {
    "type": "object",
    "properties": {
        "approved": {"type": "boolean"},
        "by": {"type": "string", "minLength": 1},
    },
    "required": ["approved", "by"],
    "additionalProperties": False,
}
YES = {"approved": True, "by": "ana"}
NO = {"approved": False, "by": "nobody"}
PROMPT_TEXT = "Approve purchase order PO-PROMPT-TEXT-4711?"


@dataclass(slots=True)
class Opened:
    """A store of one kind, and how to open it again (same directory, same key)."""

    kind: str
    url: str
    options: dict[str, Any]
    root: Path | None

    def open(self) -> Store:
        return open_store(self.url, **self.options)


def opener(kind: str, root: Path) -> Opened:
    scheme, _, encrypted = kind.partition("-")
    if scheme == "memory":
        return Opened(kind, "memory://", {}, None)
    options = {"key": generate_key()} if encrypted else {}
    return Opened(kind, f"{scheme}://{root / kind}", options, root / kind)


class Clock:
    """The waits' time: starts now and moves only when told."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC).replace(microsecond=0)

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    clock = Clock()
    monkeypatch.setattr(_wait_entries, "now", clock.now)
    yield clock


def draft() -> dict[str, Any]:
    CALLS.append("draft")
    return {"id": "PO-1", "total": 120}


def audit() -> str:
    CALLS.append("audit")
    return "audited"


def ask(draft: dict[str, Any]) -> dict[str, Any]:
    CALLS.append("ask")
    return {"text": PROMPT_TEXT, "total": draft["total"]}


def send(draft: dict[str, Any], approval: dict[str, Any]) -> str:
    CALLS.append("send")
    return f"{draft['id']} sent" if approval["approved"] else f"{draft['id']} dropped"


def po_workflow(
    *,
    schema: object = APPROVAL,
    timeout: float | None = None,
    default: Any = NO_DEFAULT,
    prompt: Any = ask,
) -> Workflow:
    """draft -> approval (input) -> send, and audit beside them."""
    wf = Workflow("po")
    wf.add_node("draft", draft)
    wf.add_node("audit", audit)
    wf.add_input(
        "approval", deps=["draft"], schema=schema, timeout=timeout, default=default, prompt=prompt
    )
    wf.add_node("send", send, deps=["draft", "approval"])
    return wf


def all_bytes(root: Path) -> bytes:
    """Every byte of every file under ``root``."""
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())
