"""``flowdag cache list|clear``: the cross-run cache's entries, listed or removed.

``list`` prints one line per entry (``--json``: a JSON list), expired ones
marked; ``clear`` removes every entry, or a node's (``--node``), in one
transaction, and says how many went. See ``flowdag/_cache.py``.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from rich.console import Console
from rich.markup import escape

from flowdag._cache_entries import CacheEntry, cache_entries, clear_cache
from flowdag.cli.base import Commands, Exit, add_command, add_store_option, open_store
from flowdag.cli.gc import size_text
from flowdag.cli.render import output_console

__all__ = ["add_parsers", "cmd_cache_clear", "cmd_cache_list"]


def add_parsers(commands: Commands) -> None:
    """Add ``flowdag cache list`` and ``flowdag cache clear`` to ``commands``."""
    cache = commands.add_parser("cache", help="list or clear the cross-run cache")
    cache_commands = cache.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for name, command in (("list", cmd_cache_list), ("clear", cmd_cache_clear)):
        parser = add_command(cache_commands, name, command)
        parser.add_argument("--node", metavar="N", help="only the entries of node N")
        add_store_option(parser)
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_cache_list(args: argparse.Namespace, err: Console) -> int:
    """List the cache's entries: node, the run that stored it, when, size, expiry."""
    with open_store(args.store, create=False) as store:
        entries = cache_entries(store, args.node)
    now = datetime.now(UTC)
    if args.json:
        print(json.dumps([_as_json(key, entry, now) for key, entry in entries], indent=2))
        return Exit.OK
    out = output_console()
    for _, entry in entries:
        expired = entry.expires_at is not None and now >= entry.expires_at
        expiry = (
            "never expires"
            if entry.expires_at is None
            else f"{'expired' if expired else 'expires'} {_when(entry.expires_at)}"
        )
        blobs = f", {len(entry.blobs)} blob ref(s)" if entry.blobs else ""
        out.print(
            f"{escape(entry.workflow)}/{escape(entry.node)}  from run {escape(entry.run_id)} "
            f"at {_when(entry.created_at)}  {size_text(len(entry.output))}{blobs}  {expiry}",
            soft_wrap=True,
        )
    noun = "entry" if len(entries) == 1 else "entries"
    out.print(f"{len(entries)} cache {noun}", soft_wrap=True)
    return Exit.OK


def cmd_cache_clear(args: argparse.Namespace, err: Console) -> int:
    """Remove the cache's entries (only node N's with --node); runs keep their outputs."""
    with open_store(args.store, create=False) as store:
        removed = clear_cache(store, args.node)
    if args.json:
        print(json.dumps({"removed": removed}))
    else:
        noun = "entry" if removed == 1 else "entries"
        output_console().print(f"removed {removed} cache {noun}", soft_wrap=True)
    return Exit.OK


def _as_json(key: str, entry: CacheEntry, now: datetime) -> dict[str, object]:
    return {
        "key": key,
        "workflow": entry.workflow,
        "node": entry.node,
        "run_id": entry.run_id,
        "created_at": entry.created_at.isoformat(),
        "expires_at": None if entry.expires_at is None else entry.expires_at.isoformat(),
        "expired": entry.expires_at is not None and now >= entry.expires_at,
        "bytes": len(entry.output),
        "blobs": sorted(entry.blobs),
    }


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")
