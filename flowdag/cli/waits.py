"""``flowdag waits`` and ``flowdag provide``: input waits from a shell (see `flowdag.waits`).

``waits`` lists the waits of a store (never their keys) and, with
``--reissue RUN NODE``, prints a fresh key for one of them. ``provide`` gives
a wait its value, checked against the JSON Schema stored with the wait: no
workflow code is loaded. A wrong, used or expired key, text that is not JSON
and a value that does not fit are errors (exit 2). The helpers at the end show
waits where other commands show runs: ``flowdag run`` when a run suspends,
``status``, ``list`` and ``graph`` (a waiting node is stored as pending).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.markup import escape

from flowdag.cli.base import (
    DEFAULT_STORE,
    CLIError,
    Commands,
    Exit,
    add_command,
    add_store_option,
    flatten,
    open_store,
)
from flowdag.cli.render import local_time, output_console, text_table
from flowdag.errors import CorruptStateError, InputValidationError, RunNotFoundError
from flowdag.state import NodeStatus, RunState
from flowdag.stores import Store
from flowdag.stores.base import check_run_id
from flowdag.waits import Wait, list_waits, provide_input, reissue_key

__all__ = [
    "add_parsers",
    "cmd_provide",
    "cmd_waits",
    "print_waits",
    "wait_json",
    "waiting_nodes",
    "waits_by_run",
    "with_waiting",
]

_PROMPT_WIDTH = 60  # characters of a prompt in a table row


def add_parsers(commands: Commands) -> None:
    """Add ``flowdag waits`` and ``flowdag provide`` to ``commands``."""
    waits = add_command(commands, "waits", cmd_waits)
    add_store_option(waits)
    waits.add_argument("--json", action="store_true", help="machine-readable output")
    waits.add_argument("--run", metavar="RUN", help="only the waits of run RUN")
    waits.add_argument(
        "--reissue",
        nargs=2,
        metavar=("RUN", "NODE"),
        help="print a new key for the wait of NODE in run RUN; the old key stops working",
    )
    provide = add_command(commands, "provide", cmd_provide)
    provide.add_argument("key", metavar="KEY", help="the key the run printed when it suspended")
    value = provide.add_mutually_exclusive_group(required=True)
    value.add_argument("--json", dest="value", metavar="VALUE", help="the value, as JSON text")
    value.add_argument("--file", metavar="F", help="read the value as JSON from F ('-': stdin)")
    add_store_option(provide)


# -- flowdag waits -------------------------------------------------------------------------


def cmd_waits(args: argparse.Namespace, err: Console) -> int:
    """List the waits for input: run, node, state, deadline, start and prompt; never a key.

    A wait is waiting, expired (the next run of its run applies its default, or
    fails the node) or provided (the next run takes the value). Deadlines
    are checked now, as the list is made. --reissue RUN NODE prints a new key
    for one open wait, once, and revokes the old one. With --json, a JSON list
    (times in ISO 8601, UTC) with each wait's JSON Schema.
    """
    if args.reissue is not None:
        if args.run is not None:
            raise CLIError("--reissue RUN NODE names its run: drop --run")
        return _reissue(args, *args.reissue)
    if args.run is not None:
        check_run_id(args.run)
    with open_store(args.store, create=False) as store:
        waits = _live(store, list_waits(store, args.run))
    now = datetime.now(UTC)
    if args.json:
        print(json.dumps([wait_json(wait, now) for wait in waits], indent=2))
        return Exit.OK
    if not waits:
        what = f"run {args.run}" if args.run is not None else args.store
        err.print(f"flowdag: no waits in {escape(what)}", soft_wrap=True)
        return Exit.OK
    out = output_console()
    header = ("run id", "node", "state", "deadline", "started", "prompt")
    rows = [
        [
            wait.run_id,
            wait.node,
            _state_text(wait, now),
            _deadline_text(wait, now),
            local_time(wait.started_at),
            _prompt_text(wait.prompt),
        ]
        for wait in waits
    ]
    out.file.write(text_table(out, header, rows, status=2))
    out.file.flush()
    return Exit.OK


def _reissue(args: argparse.Namespace, run_id: str, node: str) -> int:
    check_run_id(run_id)
    with open_store(args.store, create=False) as store:
        wait = reissue_key(store, run_id, node)
    assert wait.key is not None
    command = provide_command(wait.key, args.store)
    if args.json:
        record = {"run_id": run_id, "node": node, "key": wait.key, "command": command}
        print(json.dumps(record, indent=2))
        return Exit.OK
    out = output_console()
    out.print(f"new key for node {escape(node)} of run {escape(run_id)} (shown once; "
              "the old key no longer works):", soft_wrap=True)  # fmt: skip
    out.print(f"  {wait.key}", soft_wrap=True, markup=False)
    out.print(f"answer with: {command}", soft_wrap=True, markup=False)
    return Exit.OK


def _live(store: Store, waits: list[Wait]) -> list[Wait]:
    """``waits`` without those of runs that are gone (deleted or expired: gc removes them)."""
    gone: dict[str, bool] = {}
    for run_id in {wait.run_id for wait in waits}:
        try:
            store.load_statuses(run_id)
            gone[run_id] = False
        except RunNotFoundError:
            gone[run_id] = True
        except CorruptStateError:
            gone[run_id] = False  # damaged, not gone: its waits stay in sight
    return [wait for wait in waits if not gone[wait.run_id]]


def wait_json(wait: Wait, now: datetime | None = None) -> dict[str, Any]:
    """A wait as ``flowdag waits --json`` prints it (no key): times ISO 8601, UTC."""
    now = now or datetime.now(UTC)
    return {
        "run_id": wait.run_id,
        "node": wait.node,
        "state": _state(wait, now),
        "next_run": _next_run(wait, now),
        "prompt": wait.prompt,
        "expires_at": _iso(wait.expires_at),
        "started_at": _iso(wait.started_at),
        "provided_at": _iso(wait.provided_at),
        "has_default": wait.has_default,
        "schema": wait.schema,
    }


def _state(wait: Wait, now: datetime) -> str:
    if wait.provided_at is not None:
        return "provided"
    return "expired" if wait.expired(now) else "waiting"


def _next_run(wait: Wait, now: datetime) -> str:
    """What the next ``flowdag run`` of the wait's run does with it."""
    state = _state(wait, now)
    if state == "provided":
        return "the next run takes it"
    if state == "expired":
        return "default applies on the next run" if wait.has_default else "fails on the next run"
    return "waits for input"


def _state_text(wait: Wait, now: datetime) -> str:
    state = _state(wait, now)
    return state if state == "waiting" else f"{state}: {_next_run(wait, now)}"


def _deadline_text(wait: Wait, now: datetime) -> str:
    if wait.expires_at is None:
        return "none"
    left = (wait.expires_at - now).total_seconds()
    when = local_time(wait.expires_at)
    return when if left <= 0 or wait.provided_at is not None else f"{when} (in {_span(left)})"


def _span(seconds: float) -> str:
    """``45s``, ``12m``, ``5h``, ``3d``: roughly how long."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _prompt_text(prompt: Any, width: int = _PROMPT_WIDTH) -> str:
    """A prompt in one line: text as it is, other JSON values as compact JSON; cut to ``width``."""
    text = prompt if isinstance(prompt, str) else json.dumps(prompt, separators=(",", ":"))
    text = flatten(text) if "\n" in text else text
    return text if len(text) <= width else text[: width - 3] + "..."


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


# -- flowdag provide -----------------------------------------------------------------------


def cmd_provide(args: argparse.Namespace, err: Console) -> int:
    """Give a waiting input node its value, checked against the wait's JSON Schema.

    KEY is the key the run printed when it suspended (or `flowdag waits
    --reissue RUN NODE` gave); it works once. The value is JSON text (--json)
    or a JSON file (--file, '-' for stdin). The next `flowdag run` of the
    wait's run id continues the run with it. A bad key or a value that does not
    fit (each failing field is named) exits with 2; the wait stays open.
    """
    value = _value(args)
    with open_store(args.store, create=False) as store:
        try:
            wait = provide_input(store, args.key, value)
        except InputValidationError as exc:
            lines = [f"{p.field}: {p.message}" for p in exc.fields]
            head = str(exc).partition(":")[0] if lines else flatten(str(exc))
            print(f"flowdag: error: {head}:" if lines else f"flowdag: error: {head}",
                  file=sys.stderr)  # fmt: skip
            for line in lines:
                print(f"  {flatten(line)}", file=sys.stderr)
            return Exit.USAGE
    output_console().print(
        f"input recorded for node {escape(wait.node)} of run {escape(wait.run_id)}; "
        f"the next `flowdag run` of run id {escape(wait.run_id)} continues it",
        soft_wrap=True,
    )
    return Exit.OK


def _value(args: argparse.Namespace) -> Any:
    """The value ``--json`` or ``--file`` gives, parsed; `CLIError` saying where it is not JSON."""
    if args.value is not None:
        text, where = args.value, "--json"
    elif args.file == "-":
        text, where = sys.stdin.read(), "the value on stdin"
    else:
        with open(args.file, encoding="utf-8") as file:
            text, where = file.read(), args.file
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(f"{where} is not JSON: {exc}") from None
    except RecursionError:
        raise CLIError(f"{where} is not JSON this can read: nested too deeply") from None


# -- waits in other commands ---------------------------------------------------------------


def provide_command(key: str | None, store: str | None) -> str:
    """``flowdag provide KEY --json '<value>'`` (with ``--store`` when not the default)."""
    words = ["flowdag", "provide", key or "KEY", "--json"]
    if store != DEFAULT_STORE:
        words += ["--store", store or "URL"]  # None: the store is not known here
    command = shlex.join(words)
    before, _, after = command.partition(" --json")
    return f"{before} --json '<value>'{after}"


def reissue_command(run_id: str, node: str, store: str | None) -> str:
    """``flowdag waits --reissue RUN NODE`` (with ``--store`` when not the default)."""
    words = ["flowdag", "waits", "--reissue", run_id, node]
    if store != DEFAULT_STORE:
        words += ["--store", store or "URL"]
    return shlex.join(words)


def print_waits(out: Console, waits: Mapping[str, Wait], store: str | None) -> None:
    """What a suspended ``flowdag run`` prints for each wait: how to answer it.

    A wait this call started shows its key (once: it is not stored); one started
    by an earlier call says its key was shown then and how to get a new one.
    """
    now = datetime.now(UTC)
    for name, wait in waits.items():
        prompt = _prompt_text(wait.prompt, width=200)
        out.print(f"node {escape(name)} waits for input: {escape(prompt)}", soft_wrap=True)
        deadline = "none" if wait.expires_at is None else _deadline_text(wait, now)
        then = (
            ""
            if wait.expires_at is None
            else "; then it takes its default"
            if wait.has_default
            else "; then it fails"
        )
        out.print(f"  deadline: {deadline}{then}", soft_wrap=True)
        if wait.key is not None:
            out.print(f"  answer with: {provide_command(wait.key, store)}",
                      soft_wrap=True, markup=False)  # fmt: skip
        else:
            out.print(
                "  its key was shown when the wait started; a new one: "
                + reissue_command(wait.run_id, name, store),
                soft_wrap=True,
                markup=False,
            )


def waits_by_run(waits: Iterable[Wait]) -> dict[str, set[str]]:
    """Run id -> the nodes with a wait, from one listing of the waits table."""
    nodes: dict[str, set[str]] = {}
    for wait in waits:
        nodes.setdefault(wait.run_id, set()).add(wait.node)
    return nodes


def waiting_nodes(state: RunState, nodes: Iterable[str]) -> frozenset[str]:
    """Of ``nodes`` (which have a wait), those the run still has pending: they wait.

    A wait left behind by a node that completed since is not waiting: the next
    run drops it.
    """
    pending = NodeStatus.PENDING
    return frozenset(
        name for name in nodes if name in state.nodes and state.nodes[name].status is pending
    )


def with_waiting(state: RunState, waiting: frozenset[str]) -> RunState:
    """``state`` with its ``waiting`` nodes shown as `NodeStatus.WAITING` (stored: pending)."""
    if not waiting:
        return state
    nodes = {
        name: replace(node, status=NodeStatus.WAITING) if name in waiting else node
        for name, node in state.nodes.items()
    }
    return replace(state, nodes=nodes)
