"""``flowdag mark-done`` and ``flowdag invalidate``: an operator's changes to a stored run.

Both work from the store alone (no workflow file is imported), change the run
in one atomic commit and are refused while a live process runs it (see
``flowdag/overrides.py``). Each prints one line per node it changed
(``NODE: before -> after (why)``); ``--dry-run`` prints the same plan and
changes nothing. ``status --json`` shows the audit they leave (`audit_json`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from flowdag.cli.base import CLIError, Commands, Exit, add_command, add_store_option, open_store
from flowdag.cli.render import output_console, styled
from flowdag.errors import CorruptStateError, RunLockedError
from flowdag.json_codec import JSONCodec
from flowdag.state import NodeState, RunState
from flowdag.stores.base import check_run_id

if TYPE_CHECKING:
    from flowdag.overrides import OverrideResult

__all__ = ["add_parsers", "audit_json", "cmd_invalidate", "cmd_mark_done", "reason_json"]


def add_parsers(commands: Commands) -> None:
    """Add ``flowdag mark-done`` and ``flowdag invalidate`` to ``commands``."""
    done = add_command(commands, "mark-done", cmd_mark_done)
    done.add_argument("run_id", metavar="RUN_ID")
    done.add_argument("node", metavar="NODE")
    done.add_argument(
        "--json",
        dest="value",
        metavar="VALUE",
        required=True,
        help="the node's output as JSON, e.g. '{\"rows\": 3}'; the tagged form that "
        'status --json --outputs prints is read too ({"$tuple": [1, 2]})',
    )
    _common(done)

    again = add_command(commands, "invalidate", cmd_invalidate)
    again.add_argument("run_id", metavar="RUN_ID")
    again.add_argument("nodes", metavar="NODE", nargs="+")
    again.add_argument(
        "--no-downstream",
        dest="downstream",
        action="store_false",
        help="leave the nodes below as they are (completed ones then run again only if "
        "an input they read changes)",
    )
    _common(again)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", default="", metavar="R", help="why, kept in the run's audit")
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would change; change nothing"
    )
    add_store_option(parser)


def cmd_mark_done(args: argparse.Namespace, err: Console) -> int:
    """Record a node of a stored run as completed with the given output.

    The node is pinned (a change of its code does not run it again) and its
    downstream nodes that were skipped because of it become pending, so the
    next `flowdag run` of the run runs them. One atomic change, kept in the
    run's audit (status --json); refused while a live process runs the run.
    """
    check_run_id(args.run_id)
    value = _value(args.value)
    with open_store(args.store, create=False) as store, _operator_words():
        from flowdag.overrides import mark_done  # the override machinery: only when used

        result = mark_done(
            store, args.run_id, args.node, output=value, reason=args.reason, dry_run=args.dry_run
        )
    _report(result, f"marked {args.node!r} done", f"mark {args.node!r} done")
    return Exit.OK


def cmd_invalidate(args: argparse.Namespace, err: Console) -> int:
    """Send nodes of a stored run back to pending, and the nodes below them too.

    Their outputs are dropped but their digests kept, so the next `flowdag run`
    of the run runs them and reuses what their new outputs do not change. One
    atomic change, kept in the run's audit (status --json); refused while a
    live process runs the run.
    """
    check_run_id(args.run_id)
    with open_store(args.store, create=False) as store, _operator_words():
        from flowdag.overrides import invalidate

        result = invalidate(
            store,
            args.run_id,
            args.nodes,
            downstream=args.downstream,
            reason=args.reason,
            dry_run=args.dry_run,
        )
    names = ", ".join(repr(n) for n in args.nodes)
    _report(result, f"invalidated {names}", f"invalidate {names}")
    return Exit.OK


def _value(text: str) -> Any:
    """The value ``--json`` gives: JSON, with the tags of the JSON store read as such."""
    try:
        json.loads(text)
    except ValueError as exc:
        raise CLIError(f"--json {text!r:.60} is not JSON ({exc}); e.g. --json '[1, 2]'") from None
    try:
        return _JSON.decode(text.encode())
    except CorruptStateError as exc:  # a "$" key: a tag it does not know, or a bad one
        raise CLIError(
            f"--json {text!r:.60}: {exc.__cause__ or exc}; write a key that starts with $ "
            "as $$ (the JSON store's escape)"
        ) from None


def _report(result: OverrideResult, done: str, would: str) -> None:
    out = output_console()
    if result.dry_run:
        head = f"run {escape(result.run_id)}: would {escape(would)} (--dry-run: nothing changed)"
    else:
        head = f"run {escape(result.run_id)}: {escape(done)} (by {escape(result.by)})"
    out.print(head, soft_wrap=True)
    width = max(len(change.node) for change in result.changes)
    for change in result.changes:
        out.print(
            f"  {escape(change.node.ljust(width))}  {styled(change.before)} -> "
            f"{styled(change.after)}  ({escape(change.why)})",
            soft_wrap=True,
        )


@contextmanager
def _operator_words() -> Iterator[None]:
    """A refusal by lock in the CLI's own words: the app would add a --run-id hint, which
    fits `flowdag run`, not an override."""
    try:
        yield
    except RunLockedError as exc:
        raise CLIError(str(exc)) from None


_JSON = JSONCodec()


# -- in status --json ------------------------------------------------------------------------


def audit_json(state: RunState) -> list[dict[str, Any]]:
    """The run's audit as ``status --json`` prints it: every override, oldest first."""
    from flowdag.overrides import audit_of  # only when a status is printed as JSON

    return [
        {
            "node": node,
            "action": entry.action,
            "by": entry.by,
            "at": entry.at.isoformat(),
            "reason": entry.reason,
        }
        for node, entry in audit_of(state)
    ]


def reason_json(node: NodeState) -> dict[str, str] | None:
    """Why the node last ran (or was marked done, or invalidated), or None."""
    reason = None if node.provenance is None else node.provenance.reason
    return None if reason is None else {"code": reason.code, "detail": reason.detail}
