"""``flowdag store convert|verify``: copy whole stores, and check every run and blob in one.

``store verify`` only reads, and never creates a store (a missing one is an
error, exit 2); ``store convert`` only writes to its destination. Both know
refs: convert copies the blobs a run refers to before the run, verify reads
every live blob through and checks its hash. An expired run or ref is not
damage: it is gone for every reader, and gc deletes it. Each command's
docstring is its ``--help`` text (the parsers are added by ``runs.py``).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from rich.console import Console
from rich.markup import escape

from flowdag._usertypes import neutral_user_types
from flowdag.cli.base import CLIError, Exit, flatten, open_store
from flowdag.cli.render import output_console, plural, runs, say_run, size_text
from flowdag.errors import BlobMissingError, CorruptStateError, FlowdagError, RunNotFoundError
from flowdag.stores import Store, parse_store_url
from flowdag.stores.base import check_run_id
from flowdag.stores.transfer import Copied, check_run, check_tables, copy_run, copy_tables

__all__ = ["cmd_store_convert", "cmd_store_verify"]


def cmd_store_convert(args: argparse.Namespace, err: Console) -> int:
    """Copy runs from one store to another, with their blobs, verifying each copy.

    Copy runs (all by default) from SRC_URL to DST_URL, replacing runs of the same
    id there; each copy is loaded back and compared with the source. The blobs of
    outputs kept by reference are copied first, each checked against its hash (a
    blob already there is not copied again). A run that cannot be copied (damaged,
    a blob missing or damaged in the source) gets one line saying why and is not
    kept (blobs copied for it stay unreferenced until gc); the others are still
    copied, and the exit status is 1. Expired runs are not copied. When the whole
    store is converted, its kv and cache entries are copied too, after the blobs
    they refer to (between JSON and msgpack stores, kv values are re-encoded and
    the cache is left behind); a blob a kv entry needs that is missing from the
    source stops that copy (no entry is written, exit status 1).
    """
    # Bad input fails before anything is opened or written.
    wanted = [check_run_id(run_id) for run_id in dict.fromkeys(args.run_ids or [])]
    _check_distinct(args.src, args.dst)
    out = output_console()
    # User types are copied as they are stored (UserValue), their modules never imported.
    with open_store(args.src, create=False) as src, neutral_user_types():
        stored = src.list_runs()
        have = set(stored)
        missing = [run_id for run_id in wanted if run_id not in have]
        if missing:
            names = ", ".join(repr(run_id) for run_id in missing)
            raise CLIError(f"no run {names} in {args.src}; see: flowdag list --store {args.src}")
        copied = damaged = failed = expired = blobs = written = 0
        with open_store(args.dst) as dst:
            for run_id in wanted or stored:
                try:
                    done = copy_run(src, dst, run_id)
                except (CorruptStateError, BlobMissingError) as exc:  # the source's damage
                    damaged += 1
                    say_run(out, run_id, "[bold red]damaged in the source, skipped[/]", exc)
                except RunNotFoundError as exc:
                    if not _expired(src, run_id):
                        failed += 1  # deleted meanwhile
                        say_run(out, run_id, "[bold red]not copied[/]", exc)
                        continue
                    expired += 1
                    say_run(out, run_id, "[yellow]expired, not copied[/]")
                except FlowdagError as exc:  # the copy differs, is locked there, I/O...
                    failed += 1
                    say_run(out, run_id, "[bold red]not copied[/]", exc)
                else:
                    copied += 1
                    blobs += done.written
                    written += done.bytes_written
                    say_run(out, run_id, f"[green]copied[/]{_copied_text(done)}")
            tables = None if wanted else _copy_tables(out, src, dst)  # the whole store only
    total = copied + damaged + failed + expired
    problems = [] if tables is None else [tables]
    if damaged:
        problems.append(f"{damaged} damaged in the source")
    if failed:
        problems.append(f"{failed} not copied")
    notes = [f"{plural(blobs, 'blob')} written, {size_text(written)}"] if blobs else []
    notes += [f"{expired} expired, not copied"] if expired else []
    out.print(
        f"copied {copied} of {runs(total)} from {escape(args.src)} to {escape(args.dst)}"
        + (f" ({', '.join(notes)})" if notes else "")
        + "".join(f"; {part}" for part in problems),
        soft_wrap=True,
    )
    return Exit.FAILED if problems else Exit.OK


def _copy_tables(out: Console, src: Store, dst: Store) -> str | None:
    """Copy the store-wide tables (kv, cache, waits); None, or the problem."""
    try:
        done = copy_tables(src, dst)
    except (CorruptStateError, BlobMissingError) as exc:
        out.print(
            f"tables: [bold red]damaged in the source, not copied[/]: {escape(flatten(str(exc)))}"
        )
        return "tables damaged in the source"
    except FlowdagError as exc:
        out.print(f"tables: [bold red]not copied[/]: {escape(flatten(str(exc)))}")
        return "tables not copied"
    if done.entries or done.left:
        noun = "entry" if done.entries == 1 else "entries"
        notes = [f"{done.entries} {noun}"]
        if done.blobs.blobs:
            notes.append(_copied_text(done.blobs)[2:-1])  # without its parentheses
        if done.left:
            noun = "entry" if done.left == 1 else "entries"
            notes.append(f"{done.left} cache {noun} left behind")
        out.print(f"tables: [green]copied[/] ({'; '.join(notes)})", soft_wrap=True)
    return None


def _copied_text(done: Copied) -> str:
    """`` (3 blobs: 2 new, 12.3 MiB; 1 re-encoded; 1 expired ref not copied)`` or nothing."""
    parts = []
    if done.blobs:
        new = f"{done.written} new, {size_text(done.bytes_written)}" if done.written else "none new"
        parts.append(f"{plural(done.blobs, 'blob')}: {new}")
    if done.recoded:
        parts.append(f"{done.recoded} re-encoded for the destination's codec")
    if done.expired:
        parts.append(f"{plural(done.expired, 'expired ref')} not copied")
    return f" ({'; '.join(parts)})" if parts else ""


def cmd_store_verify(args: argparse.Namespace, err: Console) -> int:
    """Load every run of a store, read every blob its refs point at, report damage.

    Load every run in full and read each blob a live ref points at through,
    checking its hash (each blob once); a missing or damaged blob is named with
    its path, run and node. Expired runs and refs are not damage (they are shown
    as expired, and gc deletes them). Exit 1 if any run or blob is damaged.
    """
    out = output_console()
    damaged = checked = refs = expired_runs = expired_refs = 0
    seen: dict[str, str | None] = {}  # each blob is read once, however many refs hold it
    # User types are checked as stored (UserValue), their modules never imported.
    with open_store(args.url, create=False) as store, neutral_user_types():
        for run_id in store.list_runs():
            try:
                result = check_run(store, run_id, seen)
            except RunNotFoundError:
                if _expired(store, run_id):
                    expired_runs += 1
                    say_run(out, run_id, "[yellow]expired, not checked[/]")
                continue  # or deleted while we were checking: nothing left to verify
            checked += 1
            refs += result.refs
            expired_refs += result.expired
            notes = [plural(result.refs, "ref")] if result.refs else []
            notes += [f"{result.expired} expired"] if result.expired else []
            shown = f" ({', '.join(notes)})" if notes else ""
            if result.damage is not None:
                damaged += 1
                say_run(out, run_id, "[bold red]damaged[/]", result.damage)
            elif result.blobs:
                damaged += 1
                many = len(result.blobs)
                say_run(
                    out,
                    run_id,
                    f"[bold red]damaged[/]: {plural(many, 'ref')} to a missing or damaged "
                    f"blob{shown}",
                )
                for problem in result.blobs:
                    out.print(f"  {escape(flatten(problem))}", soft_wrap=True)
            else:
                say_run(out, run_id, f"[green]ok[/]{shown}")
        tables = check_tables(store)
        if tables is not None:
            damaged += 1
            out.print(f"tables: [bold red]damaged[/]: {escape(flatten(tables))}", soft_wrap=True)
    verdict = f"{damaged} damaged" if damaged else "all ok"
    bad_blobs = sum(problem is not None for problem in seen.values())
    if bad_blobs:
        verdict += f" ({plural(bad_blobs, 'missing or damaged blob')})"
    counted = f" ({refs} refs read and hashed right)" if refs else ""
    notes = [plural(expired_runs, "expired run")] if expired_runs else []
    notes += [plural(expired_refs, "expired ref")] if expired_refs else []
    out.print(
        f"checked {runs(checked)}{counted} in {escape(args.url)}: {verdict}"
        + "".join(f"; {note}" for note in notes),
        soft_wrap=True,
    )
    return Exit.FAILED if damaged else Exit.OK


def _expired(store: Store, run_id: str) -> bool:
    """Whether ``run_id`` is there but expired (a load then raises RunNotFoundError)."""
    try:
        expires_at = store.life(run_id).expires_at
    except FlowdagError:
        return False
    return expires_at is not None and expires_at <= datetime.now(UTC)


def _check_distinct(src: str, dst: str) -> None:
    """Refuse to convert a store into its own directory: both would share files."""
    src_dir, dst_dir = parse_store_url(src)[1], parse_store_url(dst)[1]
    if src_dir is not None and dst_dir is not None and src_dir.resolve() == dst_dir.resolve():
        raise CLIError(
            f"{src} and {dst} are in the same directory ({src_dir}); convert into another one"
        )
