"""``flowdag gc`` and ``flowdag store compact``: give a store's space back.

``gc`` deletes expired runs and the blobs no live record references (see
``flowdag/gc.py``); ``store compact`` gives back the space that deleting
leaves inside a store's files (see ``flowdag/stores/_compaction.py``). Each
prints one summary line (``--json``: one JSON object); bad durations and a
missing store are errors (exit 2), a damaged run leaves blobs unswept (exit 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from rich.console import Console
from rich.markup import escape

from flowdag._units import parse_duration
from flowdag.cli.base import Commands, Exit, add_command, add_store_option, flatten, open_store
from flowdag.cli.render import output_console, runs, say_run
from flowdag.gc import GCReport, gc

__all__ = ["add_compact_parser", "add_parser", "cmd_gc", "cmd_store_compact", "size_text"]


def add_parser(commands: Commands) -> None:
    """Add ``flowdag gc`` to ``commands``."""
    parser = add_command(commands, "gc", cmd_gc)
    parser.add_argument(
        "--dry-run", action="store_true", help="delete nothing; report what would go"
    )
    parser.add_argument(
        "--older-than",
        metavar="D",
        help="also delete runs whose last node finished longer ago than D (e.g. 30d)",
    )
    parser.add_argument(
        "--grace",
        metavar="D",
        default="1h",
        help="keep blobs younger than D, which a run may not have committed yet "
        "(default: %(default)s)",
    )
    add_store_option(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def add_compact_parser(store_commands: Commands) -> None:
    """Add ``flowdag store compact`` to the ``store`` command's subcommands."""
    parser = add_command(store_commands, "compact", cmd_store_compact)
    parser.add_argument("url", metavar="URL", help="store to compact, e.g. lmdb://.flowdag")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_gc(args: argparse.Namespace, err: Console) -> int:
    """Delete expired runs, then blobs no live run references.

    Runs that a live process holds are never deleted (they are listed as
    skipped), nor blobs a live run points at; blobs younger than --grace stay.
    Another gc already collecting the store: this one does nothing and says so.
    A run that cannot be read stops the blob sweep (exit 1).
    """
    # Bad durations fail before the store is opened, naming the flag.
    grace = parse_duration(args.grace, "--grace")
    older_than = (
        None if args.older_than is None else parse_duration(args.older_than, "--older-than")
    )
    with open_store(args.store, create=False) as store:
        report = gc(store, dry_run=args.dry_run, grace=grace, older_than=older_than)
    if args.json:
        print(json.dumps(dataclasses.asdict(report) | {"swept": report.swept}, indent=2))
        return Exit.FAILED if report.unreadable else Exit.OK
    out = output_console()
    if report.busy:
        holder = f" (pid {report.holder})" if report.holder else ""
        err.print(
            f"flowdag: another gc is collecting {escape(args.store)}{holder}; skipping",
            soft_wrap=True,
        )
        return Exit.OK
    for run_id, why in report.skipped_runs.items():
        say_run(out, run_id, "[yellow]skipped[/]", why)
    for what, why in report.unreadable.items():
        say_run(out, what, "[bold red]unreadable, no blob swept[/]", why)
    out.print(f"{escape(args.store)}: {summary(report)}", soft_wrap=True)
    return Exit.FAILED if report.unreadable else Exit.OK


def summary(report: GCReport) -> str:
    """``deleted 3 runs, 12 blobs, 1 temp file (4.0 MiB freed); 1 run skipped``."""
    verb = "would delete" if report.dry_run else "deleted"
    parts = [runs(report.runs), _count(report.blobs, "blob")]
    for count, what in ((report.kv, "kv"), (report.cache, "cache")):
        if count:
            parts.append(f"{count} expired {what} {'entry' if count == 1 else 'entries'}")
    if report.waits:
        parts.append(_count(report.waits, "wait") + " of gone runs")
    if report.temp:
        parts.append(_count(report.temp, "temp file"))
    freed = "would free" if report.dry_run else "freed"
    text = f"{verb} {', '.join(parts)} ({size_text(report.bytes_freed)} {freed})"
    if report.skipped:
        text += f"; {runs(report.skipped)} skipped (running)"
    if not report.swept:
        text += "; blobs not swept"
    return text


def cmd_store_compact(args: argparse.Namespace, err: Console) -> int:
    """Give disk space back where deleting runs does not.

    LMDB: copy the store with compaction and swap the copy in; refused while
    a run is running or another process has the store open. JSON and
    FlatBuffers: fold every run's journal into its snapshot; a running run is
    skipped (exit 1). Blobs are not touched: flowdag gc removes those.
    """
    out = output_console()
    with open_store(args.url, create=False) as store:
        done = store.compact()
    if args.json:
        print(json.dumps(dataclasses.asdict(done), indent=2))
        return Exit.FAILED if done.skipped else Exit.OK
    for run_id, why in done.skipped.items():
        say_run(out, run_id, "[yellow]skipped[/]", flatten(why))
    folded = f"; {runs(done.runs)} folded" if done.runs else ""
    out.print(
        f"compacted {escape(args.url)}: {size_text(done.bytes_before)} -> "
        f"{size_text(done.bytes_after)}{folded}"
        + (f"; {runs(len(done.skipped))} skipped" if done.skipped else ""),
        soft_wrap=True,
    )
    return Exit.FAILED if done.skipped else Exit.OK


def size_text(size: int) -> str:
    """``512 B``, ``4.0 KiB``, ``1.5 GiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
