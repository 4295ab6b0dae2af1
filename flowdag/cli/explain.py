"""``flowdag explain``: why each node of a run ran or was reused, or would be.

``flowdag explain RUN_ID`` reads the stored run alone (no workflow import, no
output read): for every node, in topological order (ties by name), its
status, a reason code of `flowdag.state.REASON_CODES`, the reason's detail and
when it ran. See `flowdag.explain` for what each code means for a stored node.

``flowdag explain --plan FILE.py --run-id ID`` imports the workflow file as
``flowdag run`` does and asks the very planning function `flowdag.run` uses
what it would run and why, without running anything or writing to the store.

``--json`` prints one object (the shape is stable)::

    {"run_id": "r1", "workflow": "etl", "status": "completed", "plan": false,
     "nodes": [{"node": "extract", "status": "completed", "code": "new",
                "detail": "it never ran", "finished_at": "2026-...+00:00"}, ...]}

``status`` is the stored node status (``interrupted`` for a node stored as
running in a run no live process holds), ``code`` a reason code or null (a node
running now), ``finished_at`` an ISO 8601 time or null. With ``--plan``,
``"plan": true``, ``status`` is the stored run's (``interrupted`` when
unfinished; null: not stored, a new run), each node has ``action`` (``run``,
``reuse`` or ``provisional``) and ``warning`` (a string or null) too, and
``warnings`` lists what ``flowdag run`` would log (accepted changes, lost
blobs, code changes let pass).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from flowdag._maps import item_counts
from flowdag.cli.base import (
    CLIError,
    Commands,
    Exit,
    add_command,
    add_store_option,
    flatten,
    open_store,
)
from flowdag.cli.loader import load_dag
from flowdag.cli.render import local_time, output_console, styled, text_table
from flowdag.cli.runs import liveness
from flowdag.cli.tracebacks import add_verbose_option
from flowdag.cli.waits import waiting_nodes
from flowdag.dag import DAG
from flowdag.errors import StoreError
from flowdag.explain import Explanation, PlannedRun, explain_state, plan_stored, topological
from flowdag.runner import RunResult
from flowdag.state import NodeState, RunState
from flowdag.stores.base import check_run_id
from flowdag.waits import list_waits

if TYPE_CHECKING:
    from flowdag._decide import Verdict

__all__ = ["add_parser", "cmd_explain"]


def add_parser(commands: Commands) -> None:
    """Add ``flowdag explain`` to ``commands``."""
    explain = add_command(commands, "explain", cmd_explain)
    explain.add_argument("run_id", metavar="RUN_ID", nargs="?", help="the stored run to explain")
    add_store_option(explain)
    explain.add_argument("--json", action="store_true", help="machine-readable output")
    explain.add_argument(
        "--node",
        dest="nodes",
        action="append",
        metavar="NAME",
        help="explain only this node (a map: with each of its items; or one item, 'm[3]'); "
        "repeat for several",
    )
    add_verbose_option(explain, help="list every item of a map, not one line per kind of item")
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
        return _cmd_plan(args, err)
    if args.run_id is None:  # flowdag explain --run-id ID: as flowdag explain ID
        args.run_id, args.plan_run_id = args.plan_run_id, None
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
        waits = {wait.node: wait for wait in list_waits(store, args.run_id)}
        waiting = waiting_nodes(state, waits)
        live = liveness(store, state, waiting)  # suspended, when its input nodes wait
    explained = explain_state(
        state, live=live.pid is not None, waits={node: waits[node] for node in waiting}
    )
    if args.nodes:
        explained = _only(explained, args.nodes, state)
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
    every = args.nodes or getattr(args, "verbose", False)
    rows = (
        [_row(item) for item in _items_in_order(explained, state)]
        if every
        else grouped_rows(explained, state)
    )
    header = ("node", "status", "code", "ran at", "why")
    out.file.write(text_table(out, header, rows, status=1))
    out.file.flush()
    return Exit.OK


def _row(item: Explanation) -> list[str]:
    code = "-" if item.reason is None else item.reason.code
    return [item.node, item.status, code, local_time(item.finished_at), _detail(item)]


def grouped_rows(explained: Sequence[Explanation], state: RunState) -> list[list[str]]:
    """Table rows with a map's items grouped: after the map's own row, one row per
    kind of item (status and code), saying how many and naming the first few; an
    item alone of its kind gets its own row."""
    grouped = item_counts(state.nodes)
    rows: list[list[str]] = []
    kinds: dict[tuple[str, str | None], list[Explanation]] = {}
    base = None
    for item in [*_items_in_order(explained, state), None]:
        item_of = None if item is None else grouped.item_of.get(item.node)
        if item_of is None and kinds:  # the items of map ``base`` end here
            rows.extend(_kind_row(base or "", kind, items) for kind, items in kinds.items())
            kinds = {}
        if item is None:
            break
        if item_of is None:
            rows.append(_row(item))
            continue
        base = item_of
        code = None if item.reason is None else item.reason.code
        kinds.setdefault((item.status, code), []).append(item)
    return rows


def _kind_row(base: str, kind: tuple[str, str | None], items: list[Explanation]) -> list[str]:
    if len(items) == 1:
        return _row(items[0])
    status, code = kind
    names = ", ".join(one.node for one in items[:3]) + (", ..." if len(items) > 3 else "")
    details = {_detail(one) for one in items}
    detail = _detail(items[0]) if len(details) == 1 else f"e.g. {_detail(items[0])}"
    last = max((one.finished_at for one in items if one.finished_at), default=None)
    why = f"{len(items)} items ({names}): {detail}"
    return [f"{base}[...]", status, "-" if code is None else code, local_time(last), why]


def _items_in_order(explained: Sequence[Explanation], state: RunState) -> list[Explanation]:
    """``explained`` with each map's items right after the map, by index."""
    grouped = item_counts(state.nodes)
    if not grouped:
        return list(explained)
    present = {item.node for item in explained}  # --node m[3] without m: m[3] stays
    items: dict[str, list[tuple[int, Explanation]]] = {}
    for item in explained:
        base = grouped.item_of.get(item.node)
        if base in present:
            index = int(item.node[len(base) + 1 : -1])  # "m[12]"
            items.setdefault(base, []).append((index, item))
    ordered = []
    for item in explained:
        if grouped.item_of.get(item.node) not in present:
            ordered.append(item)
            ordered.extend(one for _, one in sorted(items.get(item.node, ()), key=_first))
    return ordered


def _first(pair: tuple[int, Explanation]) -> int:
    return pair[0]


def _only(explained: list[Explanation], names: Sequence[str], state: RunState) -> list[Explanation]:
    """The explanations of ``names``; a map's name brings its items along."""
    unknown = [name for name in names if name not in state.nodes]
    if unknown:
        known = ", ".join(repr(name) for name in list(state.nodes)[:5])
        raise CLIError(
            f"run {state.run_id!r} has no node {unknown[0]!r}; its nodes include {known}"
        )
    grouped = item_counts(state.nodes)
    wanted = set(names)
    return [
        item
        for item in explained
        if item.node in wanted or grouped.item_of.get(item.node) in wanted
    ]


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


# -- flowdag explain --plan --------------------------------------------------------------


def _cmd_plan(args: argparse.Namespace, err: Console) -> int:
    """What ``flowdag run FILE --run-id ID`` would do; reads the store, writes nothing."""
    if args.run_id is not None and args.plan_run_id not in (None, args.run_id):
        raise CLIError(
            f"two run ids: RUN_ID {args.run_id!r} and --run-id {args.plan_run_id!r}; give one"
        )
    if args.nodes:
        raise CLIError("--node explains a stored run: flowdag explain RUN_ID --node NAME")
    run_id = args.plan_run_id or args.run_id
    if run_id is None:
        raise CLIError("--plan needs the run to plan: flowdag explain --plan FILE.py --run-id ID")
    check_run_id(run_id)  # before importing the file: bad input fails fast
    ran_at_import: list[RunResult] = []
    dag = load_dag(args.plan, ran_at_import)
    if ran_at_import:
        err.print(
            f"flowdag: warning: importing {escape(args.plan)} ran a workflow itself "
            "(flowdag.run at module level); put that call under "
            '`if __name__ == "__main__":`',
            soft_wrap=True,
        )
    planned = _plan(args, dag, run_id)
    plan, status = planned.plan, planned.status
    rows = [_plan_row(dag, planned, name) for name in _dag_order(dag)]
    if args.json:
        document = {
            "run_id": run_id,
            "workflow": dag.name,
            "status": status,
            "plan": True,
            "nodes": rows,
            "warnings": list(plan.warnings),
        }
        print(json.dumps(document, indent=2))
        return Exit.OK
    out = output_console()
    counts = {action: sum(row["action"] == action for row in rows) for action in _ACTIONS}
    summary = ", ".join(f"{number} {_ACTIONS[action]}" for action, number in counts.items())
    out.print(
        f"plan of flowdag run {escape(args.plan)} --run-id {escape(run_id)}: {summary}"
        + ("  (a new run)" if status is None else f"  (stored: {status})"),
        soft_wrap=True,
    )
    cells = [[row["node"], row["action"], row["code"], row["detail"]] for row in rows]
    out.file.write(text_table(out, ("node", "action", "code", "why"), cells, status=-1))
    for warning in plan.warnings:
        out.file.write(f"warning: {flatten(warning)}\n")
    out.file.flush()
    return Exit.OK


#: Plan actions, as the summary line counts them.
_ACTIONS = {"run": "run", "provisional": "provisional", "reuse": "reused"}


def _plan(args: argparse.Namespace, dag: DAG, run_id: str) -> PlannedRun:
    """`plan_stored` of the store ``--store`` names, opened without creating it."""
    options: dict[str, Any] = {
        "allow_changes": args.allow_changes,
        "on_code_change": args.on_code_change or "rerun",
        "rerun": args.rerun,
        "rerun_from": tuple(args.rerun_from or ()),
    }
    try:
        store = open_store(args.store, create=False)
    except StoreError as exc:
        # No store there yet (flowdag.stores._files.no_store_error): run would create one.
        if not str(exc).startswith("no store at "):
            raise
        return plan_stored(dag, None, run_id, **options)
    with store:
        return plan_stored(dag, store, run_id, **options)


def _plan_row(dag: DAG, planned: PlannedRun, name: str) -> dict[str, Any]:
    """One node as ``explain --plan --json`` prints it."""
    verdicts = planned.plan.verdicts
    verdict = verdicts[name]
    status, finished_at = planned.nodes.get(name, (None, None))
    return {
        "node": name,
        "status": status,
        "action": verdict.action,
        "code": verdict.reason.code,
        "detail": _verdict_detail(dag, verdicts, name),
        "warning": verdict.warning,
        "finished_at": _moment(finished_at),
    }


def _verdict_detail(dag: DAG, verdicts: Mapping[str, Verdict], name: str) -> str:
    verdict = verdicts[name]
    if verdict.action != "provisional":
        return verdict.reason.detail
    upstream = [d for d in dag.deps(name) if verdicts[d].action != "reuse"]
    listed = ", ".join(repr(d) for d in upstream) or "its deps"
    verb = "comes" if len(upstream) == 1 else "come"
    return f"runs unless {listed} {verb} back unchanged (early cutoff)"


def _dag_order(dag: DAG) -> list[str]:
    """The DAG's nodes, each after its deps, ties by name: as `flowdag explain RUN_ID`."""
    return topological(
        RunState("", dag.name, nodes={n: NodeState(deps=dag.deps(n)) for n in dag.nodes})
    )
