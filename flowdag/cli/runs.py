"""``flowdag list``, and what ``status``, ``show`` and ``graph`` share: is a run
live, and a run as JSON (and the ``store`` command's parsers).

None of these runs a workflow. ``status`` (`flowdag.cli.status`) and ``list``
only read, and never create a store (a missing one is an error, exit 2).
``status`` shows an output kept by reference by its ref (size, extracted
fields) and reads no blob. The ``store convert|verify`` commands are in
``store.py``. Each command's docstring is its ``--help`` text.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flowdag.cli.base import (
    Commands,
    Exit,
    add_command,
    add_store_option,
    flatten,
    log,
    open_store,
)
from flowdag.cli.gc import add_compact_parser
from flowdag.cli.overrides import audit_json, reason_json
from flowdag.cli.render import (
    count,
    describe_counts,
    error_text,
    local_time,
    output_console,
    plain_table,
    seconds,
    text_table,
)
from flowdag.cli.store import cmd_store_convert, cmd_store_verify
from flowdag.cli.waits import waiting_nodes, waits_by_run, with_waiting
from flowdag.errors import FlowdagError, RunNotFoundError
from flowdag.json_codec import JSONCodec
from flowdag.refs import Ref
from flowdag.state import ErrorInfo, NodeState, NodeStatus, RunState, RunStatus
from flowdag.stores import Store
from flowdag.waits import list_waits

__all__ = [
    "Liveness",
    "add_parsers",
    "attempts_table",
    "cmd_list",
    "cmd_store_convert",
    "cmd_store_verify",
    "json_value",
    "liveness",
    "node_json",
    "ref_json",
    "shown_state",
    "state_json",
]


def add_parsers(commands: Commands) -> None:
    """Add ``flowdag list`` and ``store`` to ``commands`` (``status``: `flowdag.cli.status`)."""
    listing = add_command(commands, "list", cmd_list)
    add_store_option(listing)
    listing.add_argument("--json", action="store_true", help="machine-readable output")

    store = commands.add_parser("store", help="convert, verify or compact whole stores")
    store_commands = store.add_subparsers(title="commands", metavar="COMMAND", required=True)
    convert = add_command(store_commands, "convert", cmd_store_convert)
    convert.add_argument("src", metavar="SRC_URL", help="store to copy from, e.g. json://old")
    convert.add_argument("dst", metavar="DST_URL", help="store to copy to, e.g. lmdb://.flowdag")
    convert.add_argument(
        "--run-id",
        dest="run_ids",
        action="append",  # one id per option: a list would swallow SRC_URL DST_URL
        metavar="ID",
        help="copy only this run; repeat for several",
    )
    verify = add_command(store_commands, "verify", cmd_store_verify)
    verify.add_argument("url", metavar="URL", help="store to check, e.g. lmdb://.flowdag")
    add_compact_parser(store_commands)


# -- live, or interrupted ----------------------------------------------------------------

#: Shown for a run (or a node) left unfinished by a process that is gone.
INTERRUPTED = "interrupted"
#: Shown for a run no process holds whose input nodes wait (`flowdag waits`).
SUSPENDED = str(RunStatus.SUSPENDED)


@dataclass(frozen=True, slots=True)
class Liveness:
    """A stored run as an operator needs it: is someone still running it?"""

    status: str  # the stored status; "interrupted" or "suspended" when no live process holds it
    pid: int | None  # the live holder's pid (0: held, holder not named)
    last_commit: datetime | None  # when the newest node finished

    @property
    def interrupted(self) -> bool:
        return self.status == INTERRUPTED

    def text(self) -> str:
        """``running (pid 4121)``, ``interrupted (last commit ...)`` or the status."""
        if self.pid:
            return f"{self.status} (pid {self.pid})"
        if self.interrupted:
            return f"{self.status} (last commit {local_time(self.last_commit)})"
        return self.status

    def node_status(self, node: NodeState) -> str:
        return self.shown(node.status)

    def shown(self, status: NodeStatus) -> str:
        """A node status as shown: ``interrupted`` for running in an interrupted run."""
        # A node recorded as running (its start record) when its process died is
        # running no more: an attempt was in flight at the crash; resume runs it again.
        if self.interrupted and status is NodeStatus.RUNNING:
            return INTERRUPTED
        return str(status)


def liveness(store: Store, state: RunState, waiting: frozenset[str] = frozenset()) -> Liveness:
    """Whether a live process still runs ``state``; see `Liveness`.

    ``waiting``: its nodes that wait for input (`flowdag.cli.waits.waiting_nodes`);
    with some, and no node left running by a dead process, a run no one holds
    is suspended, not interrupted.
    """
    finished = [node.finished_at for node in state.nodes.values() if node.finished_at]
    last = max(finished, default=None)
    if state.status not in (RunStatus.PENDING, RunStatus.RUNNING):
        return Liveness(str(state.status), None, last)  # finished: no one to ask
    # Stored statuses cannot tell a run in flight from one whose process died:
    # the run's lock can (the OS drops it with its process, even on kill -9).
    holder = store.lock_holder(state.run_id)
    if holder is None:
        running = any(node.status is NodeStatus.RUNNING for node in state.nodes.values())
        return Liveness(SUSPENDED if waiting and not running else INTERRUPTED, None, last)
    return Liveness(str(RunStatus.RUNNING), holder, last)


def shown_state(store: Store, state: RunState) -> tuple[RunState, Liveness]:
    """``state`` as shown, its waiting nodes `NodeStatus.WAITING` (the waits table
    says which; the run stores them pending), and its `Liveness`."""
    waits = list_waits(store, state.run_id)
    waiting = waiting_nodes(state, (wait.node for wait in waits))
    return with_waiting(state, waiting), liveness(store, state, waiting)


# -- the JSON of flowdag status (its text: status.py) ---------------------------------


def attempts_table(
    state: RunState, *, node: str | None = None, failed_only: bool = False
) -> Table | None:
    """The attempts of one node (or of every node), one line each; None if there are none.

    Each line: the node (when every node is shown), attempt number, start,
    duration and the error as one line.
    """
    table = plain_table()
    columns = ("attempt", "started", "duration", "error")
    for column in columns if node is not None else ("node", *columns):
        table.add_column(column, justify="right" if column in {"attempt", "duration"} else "left")
    names = state.nodes if node is None else (node,)
    for name in names:
        for attempt in state.nodes[name].history:
            if failed_only and attempt.error is None:
                continue
            row = [
                str(attempt.number),
                local_time(attempt.started_at),
                seconds(attempt.duration),
                escape(error_text(attempt.error)),
            ]
            table.add_row(*row if node is not None else (escape(name), *row))
    return table if table.row_count else None


def state_json(state: RunState, live: Liveness, *, values: bool = False) -> dict[str, Any]:
    """A run as ``status --json`` prints it; with ``values``, outputs and ``data`` too."""
    document = {
        "run_id": state.run_id,
        "workflow": state.workflow,
        "status": live.status,
        "pid": live.pid,
        "last_commit": _moment(live.last_commit),
        # run(ttl=...): seconds, and when the run expires (None until a node finished).
        "ttl": None if state.ttl is None else state.ttl.total_seconds(),
        "expires_at": _moment(state.expires_at),
        "nodes": {name: node_json(node, live, values=values) for name, node in state.nodes.items()},
        "audit": audit_json(state),  # mark_done and invalidate, oldest first
    }
    if values:
        document["data"] = {key: json_value(value) for key, value in state.data.items()}
    return document


def node_json(node: NodeState, live: Liveness, *, values: bool = False) -> dict[str, Any]:
    """One node as ``status --json`` prints it; with ``values``, its output too.

    ``ref`` describes an output kept by reference (see `ref_json`), else is None;
    with ``values``, such an output is the ref as the JSON store writes it
    (``{"$ref": {...}}``): its blob is not read.
    """
    document = {
        "status": live.node_status(node),
        "attempts": node.attempts,
        "started_at": _moment(node.started_at),
        "finished_at": _moment(node.finished_at),
        "duration": node.duration,
        "deps": list(node.deps),
        "error": _error_json(node.error),
        "ref": ref_json(node.output) if type(node.output) is Ref else None,
        "reason": reason_json(node),  # why it last ran, was marked done or invalidated
        "history": [
            {
                "number": attempt.number,
                "started_at": _moment(attempt.started_at),
                "finished_at": _moment(attempt.finished_at),
                "duration": attempt.duration,
                "error": _error_json(attempt.error),
            }
            for attempt in node.history
        ],
    }
    if values:
        document["output"] = json_value(node.output)
    return document


def json_value(value: Any) -> Any:
    """A stored value as JSON, exactly: as the JSON store writes it (tags such as
    ``{"$tuple": [...]}`` for what JSON lacks); ``{"$repr": ...}`` if even that fails."""
    try:
        return json.loads(_JSON.encode(value))
    except (FlowdagError, ValueError, TypeError):  # e.g. a value stored with pickle
        return {"$repr": repr(value)}


_JSON = JSONCodec()


def ref_json(ref: Ref) -> dict[str, Any]:
    """An output kept by reference as plain JSON: the ref's fields, its blob unread."""
    return {
        "uri": ref.uri,
        "sha256": ref.sha256,
        "size": ref.size,
        "stored_size": ref.stored_size,
        "compression": ref.compression,
        "expires_at": _moment(ref.expires_at),
        "expired": ref.expires_at is not None and ref.expires_at <= datetime.now(UTC),
        "extracted": json_value(ref.extracted),
        "preview": json_value(ref.preview),
        "preview_truncated": ref.preview_truncated,
        "encoding": ref.encoding,
    }


def _error_json(info: ErrorInfo | None) -> dict[str, str] | None:
    if info is None:
        return None
    return {"type": info.type, "message": info.message, "traceback": info.traceback}


def _moment(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


# -- flowdag list ------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace, err: Console) -> int:
    """List the runs in a store: id, workflow, status and node counts.

    One line per run, columns aligned; coloured only on a terminal. With
    --json, a JSON array with one object per run.
    """
    out = output_console()
    with open_store(args.store, create=False) as store:
        waits = waits_by_run(list_waits(store))  # one scan of the waits table, not one per run
        rows = [
            row
            for run_id in store.list_runs()
            if (row := _list_row(store, run_id, waits.get(run_id, ())))
        ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return Exit.OK
    if not rows:
        err.print(f"flowdag: no runs in {escape(args.store)}", soft_wrap=True)
        return Exit.OK
    # Lines built by hand, not a rich Table: 10,000 rows take milliseconds, not seconds.
    cells = [
        [row["run_id"], row["workflow"] or "?", _status_cell(row), _counts_text(row["nodes"])]
        for row in rows
    ]
    out.file.write(text_table(out, ("run id", "workflow", "status", "nodes"), cells, status=2))
    out.file.flush()
    return Exit.OK


def _list_row(store: Store, run_id: str, waits: Iterable[str]) -> dict[str, Any] | None:
    """One run as `flowdag list --json` shows it; a damaged run says so and why.

    ``waits``: the nodes of the run that have a wait (those still pending wait).

    None for a run that expired (gone for every reader: gc deletes it) or was
    deleted since the store listed it.
    """
    try:
        state = store.load_statuses(run_id)
    except RunNotFoundError:
        return None
    except FlowdagError as exc:  # one damaged run must not hide the others
        why = flatten(str(exc))
        log.warning("%s", why)
        return {"run_id": run_id, "workflow": None, "status": "damaged", "pid": None,
                "last_commit": None, "nodes": None, "error": why}  # fmt: skip
    waiting = waiting_nodes(state, waits)
    live = liveness(store, state, waiting)
    counts = count(with_waiting(state, waiting).nodes.values())
    nodes = {live.shown(status): number for status, number in counts.items() if number}
    nodes["total"] = len(state.nodes)
    return {"run_id": run_id, "workflow": state.workflow, "status": live.status,
            "pid": live.pid, "last_commit": None if live.last_commit is None
            else live.last_commit.isoformat(), "nodes": nodes, "error": None}  # fmt: skip


def _status_cell(row: dict[str, Any]) -> str:
    if row["pid"]:
        return f"{row['status']} (pid {row['pid']})"
    if row["status"] == INTERRUPTED and row["last_commit"]:
        return (
            f"{INTERRUPTED} (last commit {local_time(datetime.fromisoformat(row['last_commit']))})"
        )
    return str(row["status"])


_STATUSES = tuple(NodeStatus)


def _counts_text(nodes: dict[str, int] | None) -> str:
    if nodes is None:
        return ""
    counts = {status: nodes.get(status, 0) for status in _STATUSES}
    counts[NodeStatus.RUNNING] += nodes.get(INTERRUPTED, 0)
    return describe_counts(counts, interrupted=INTERRUPTED in nodes)
