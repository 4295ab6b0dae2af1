"""``flowdag explain``: why each node of a run ran or was reused, or would be.

``flowdag explain RUN_ID`` reads the stored run alone (no workflow import, no
output read): for every node, in topological order, its status, a reason code
of `flowdag.state.REASON_CODES`, the reason's detail and when it ran. See
`flowdag.explain` for what each code means for a stored node.

``flowdag explain --plan FILE.py --run-id ID`` imports the workflow file as
``flowdag run`` does and asks the very planning function `flowdag.run` uses
what it would run and why, without running anything or writing to the store.

``--json`` prints one object (the shape is stable)::

    {"run_id": "r1", "workflow": "etl", "status": "completed", "plan": false,
     "nodes": [{"node": "extract", "status": "completed", "code": "new",
                "detail": "never ran before", "finished_at": "2026-...+00:00"}, ...]}

``status`` is the stored node status (``interrupted`` for a node stored as
running in a run no live process holds), ``code`` a reason code or null (a node
running now), ``finished_at`` an ISO 8601 time or null. With ``--plan``,
``"plan": true`` and each node has ``action`` (``run``, ``reuse`` or
``provisional``) and ``warning`` (a string or null) too.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.markup import escape

from flowdag.cli.base import CLIError, Commands, Exit, add_command, add_store_option, open_store
from flowdag.cli.render import local_time, output_console, styled, text_table
from flowdag.cli.runs import liveness
from flowdag.explain import Explanation, explain_state
from flowdag.stores.base import check_run_id

__all__ = ["add_parser", "cmd_explain"]


def add_parser(commands: Commands) -> None:
    """Add ``flowdag explain`` to ``commands``."""
    explain = add_command(commands, "explain", cmd_explain)
    explain.add_argument("run_id", metavar="RUN_ID", nargs="?", help="the stored run to explain")
    add_store_option(explain)
    explain.add_argument("--json", action="store_true", help="machine-readable output")
    plan = explain.add_argument_group(
        "planning (--plan): what `flowdag run FILE.py --run-id ID` would do, run nothing"
    )
    plan.add_argument("--plan", metavar="FILE.py[:WORKFLOW]", help="workflow file, optional name")
    plan.add_argument("--run-id", dest="plan_run_id", metavar="ID", help="the run to plan")
    plan.add_argument(
        "--rerun", choices=["failed"], help="as flowdag run --rerun: failed and skipped nodes"
    )
    plan.add_argument(
        "--rerun-from",
        action="append",
        metavar="NODE",
        help="as flowdag run --rerun-from: NODE and its descendants; repeat for several",
    )
    plan.add_argument(
        "--on-code-change",
        choices=["rerun", "warn", "ignore"],
        help="as flowdag run --on-code-change (default: rerun)",
    )
    plan.add_argument(
        "--allow-changes",
        action="store_true",
        help="as flowdag run --allow-changes: accept new, removed or rewired nodes",
    )


def cmd_explain(args: argparse.Namespace, err: Console) -> int:
    """Say why each node of a run ran or was reused; with --plan, what a run would do.

    For every node, in topological order: its status, the reason code (new,
    code_changed, input_changed, cached, forced, interrupted, manual,
    timed_out_default, reused), when it ran, and the reason's detail: the
    function or helper and file that changed, the dep whose output changed,
    the error of a failed node, the upstream node whose failure skipped it.
    Reads the stored run only: the workflow file is not imported.

    --plan FILE.py --run-id ID: what `flowdag run FILE.py --run-id ID` would
    run and why, with the same --rerun, --rerun-from, --on-code-change and
    --allow-changes; runs nothing and writes nothing to the store.
    """
    if args.plan is not None:
        from flowdag.cli.explain_plan import cmd_plan  # imports the planning machinery

        return cmd_plan(args, err)
    if args.run_id is None:
        raise CLIError("explain needs RUN_ID, or --plan FILE.py --run-id ID")
    planning = [
        flag
        for flag, value in (
            ("--run-id", args.plan_run_id),
            ("--rerun", args.rerun),
            ("--rerun-from", args.rerun_from),
            ("--on-code-change", args.on_code_change),
            ("--allow-changes", args.allow_changes or None),
        )
        if value is not None
    ]
    if planning:
        raise CLIError(f"{planning[0]} goes with --plan FILE.py: flowdag explain --plan ...")
    check_run_id(args.run_id)  # before the store: a bad id is the error, not a missing store
    with open_store(args.store, create=False) as store:
        state = store.load_statuses(args.run_id)  # no output is read
        live = liveness(store, state)
    explained = explain_state(state, live=live.pid is not None)
    if args.json:
        document = {
            "run_id": state.run_id,
            "workflow": state.workflow,
            "status": live.status,
            "plan": False,
            "nodes": [explanation_json(item) for item in explained],
        }
        print(json.dumps(document, indent=2))
        return Exit.OK
    out = output_console()
    out.print(
        f"run {escape(state.run_id)}  workflow {escape(state.workflow)}  "
        f"{styled(live.status)}{escape(live.text()[len(live.status) :])}",
        soft_wrap=True,
    )
    rows = [
        [
            item.node,
            item.status,
            "-" if item.reason is None else item.reason.code,
            local_time(item.finished_at),
            _detail(item),
        ]
        for item in explained
    ]
    header = ("node", "status", "code", "ran at", "why")
    out.file.write(text_table(out, header, rows, status=1))
    out.file.flush()
    return Exit.OK


def explanation_json(item: Explanation) -> dict[str, Any]:
    """One node as ``explain --json`` prints it."""
    return {
        "node": item.node,
        "status": item.status,
        "code": None if item.reason is None else item.reason.code,
        "detail": _detail(item),
        "finished_at": _moment(item.finished_at),
    }


def _detail(item: Explanation) -> str:
    if item.reason is None:
        return "running now"
    return item.reason.detail


def _moment(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
