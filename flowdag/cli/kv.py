"""``flowdag kv get|set|delete|list``: the store's key-value state (`flowdag.kv`) from a shell.

Values go in as JSON (``set KEY --json VALUE``) and come out as JSON; a value
JSON cannot show (a datetime, bytes, a tuple...) is shown as its text. A bad
key, bad JSON, or a key with no entry is an error (exit 2, one line).
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.markup import escape

from flowdag._units import parse_duration
from flowdag.cli.base import CLIError, Commands, Exit, add_command, add_store_option, open_store
from flowdag.cli.render import output_console
from flowdag.kv import KVEntry, check_key

__all__ = ["add_parsers", "cmd_kv_delete", "cmd_kv_get", "cmd_kv_list", "cmd_kv_set"]


def add_parsers(commands: Commands) -> None:
    """Add ``flowdag kv`` and its subcommands to ``commands``."""
    kv = commands.add_parser("kv", help="read and write the store's key-value state")
    kv_commands = kv.add_subparsers(title="commands", metavar="COMMAND", required=True)
    get = add_command(kv_commands, "get", cmd_kv_get)
    get.add_argument("key", metavar="KEY")
    set_ = add_command(kv_commands, "set", cmd_kv_set)
    set_.add_argument("key", metavar="KEY")
    set_.add_argument(
        "--json", dest="value", metavar="VALUE", required=True, help="the value, as JSON"
    )
    set_.add_argument("--ttl", metavar="D", help="expire after D (e.g. 90s, 30m, 4h, 7d)")
    delete = add_command(kv_commands, "delete", cmd_kv_delete)
    delete.add_argument("key", metavar="KEY")
    listing = add_command(kv_commands, "list", cmd_kv_list)
    listing.add_argument("--prefix", default="", metavar="P", help="only keys starting with P")
    for parser in (get, delete, listing):
        parser.add_argument("--json", action="store_true", help="machine-readable output")
    for parser in (get, set_, delete, listing):
        add_store_option(parser)


def cmd_kv_get(args: argparse.Namespace, err: Console) -> int:
    """Print the value under KEY (exit 2 if there is none)."""
    key = check_key(args.key)
    with open_store(args.store, create=False) as store:
        entry = store.kv().entry(key)
    if entry is None:
        raise CLIError(f"no kv entry {key!r} in {args.store}")
    if args.json:
        print(json.dumps(_record(key, entry), indent=2))
    else:
        output_console().print(escape(_shown(entry.value)), soft_wrap=True)
    return Exit.OK


def cmd_kv_set(args: argparse.Namespace, err: Console) -> int:
    """Set KEY to a JSON value, optionally expiring after --ttl."""
    key = check_key(args.key)
    ttl = None if args.ttl is None else parse_duration(args.ttl, "--ttl")
    try:
        value = json.loads(args.value)
    except json.JSONDecodeError as exc:
        raise CLIError(f"--json for {key!r} is not JSON: {exc}") from None
    with open_store(args.store) as store:
        store.kv().set(key, value, ttl=ttl)
    return Exit.OK


def cmd_kv_delete(args: argparse.Namespace, err: Console) -> int:
    """Delete KEY (exit 2 if there is no entry)."""
    key = check_key(args.key)
    with open_store(args.store, create=False) as store:
        deleted = store.kv().delete(key)
    if not deleted:
        raise CLIError(f"no kv entry {key!r} in {args.store}")
    if args.json:
        print(json.dumps({"key": key, "deleted": True}))
    else:
        output_console().print(f"deleted {escape(key)}", soft_wrap=True)
    return Exit.OK


def cmd_kv_list(args: argparse.Namespace, err: Console) -> int:
    """List the live entries (keys starting with --prefix), sorted by key."""
    with open_store(args.store, create=False) as store:
        entries = store.kv().entries(args.prefix)
    if args.json:
        print(json.dumps([_record(key, entry) for key, entry in entries], indent=2))
        return Exit.OK
    out = output_console()
    for key, entry in entries:
        writer = "" if entry.run_id is None else f"  (run {entry.run_id}, node {entry.node})"
        expires = "" if entry.expires_at is None else f"  expires {_time(entry.expires_at)}"
        value = _shown(entry.value)
        value = value if len(value) <= 60 else value[:57] + "..."
        out.print(f"{escape(key)} = {escape(value)}{expires}{escape(writer)}", soft_wrap=True)
    return Exit.OK


def _record(key: str, entry: KVEntry) -> dict[str, Any]:
    return {
        "key": key,
        "value": json.loads(json.dumps(entry.value, default=str)),
        "written_at": _time(entry.written_at),
        "expires_at": None if entry.expires_at is None else _time(entry.expires_at),
        "run_id": entry.run_id,
        "node": entry.node,
    }


def _shown(value: Any) -> str:
    return json.dumps(value, default=str)


def _time(when: datetime) -> str:
    return when.isoformat(timespec="seconds")
