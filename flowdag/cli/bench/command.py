"""The ``flowdag bench`` command: options, progress, the results table and the files."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flowdag import _plot
from flowdag._units import parse_size
from flowdag.cli.base import Commands, Exit, add_command, int_list
from flowdag.cli.bench.chart import write_chart
from flowdag.cli.bench.measure import DEFAULT_INLINE_LIMIT, STORES, BenchResults, run_bench
from flowdag.cli.progress import BenchBar
from flowdag.cli.render import plain_table
from flowdag.errors import FlowdagError

__all__ = ["add_parser", "cmd_bench"]


def add_parser(commands: Commands) -> None:
    """Add ``flowdag bench`` to ``commands``."""
    bench = add_command(commands, "bench", cmd_bench)
    bench.add_argument(
        "--stores",
        type=_stores,
        default="json,flatbuffers,lmdb,memory",
        metavar="LIST",
        help="comma-separated stores to compare (default: %(default)s)",
    )
    bench.add_argument(
        "--nodes",
        type=int_list(3),
        metavar="LIST",
        help="run sizes in nodes, comma-separated (default: 1000,10000; with --quick: 1000)",
    )
    bench.add_argument(
        "--payload",
        type=_sizes,
        metavar="LIST",
        help="bytes each node returns, comma-separated, units allowed: 100,10KiB,1MiB "
        "(default: 100,10240; with --quick: 100); above --inline-limit, outputs are kept "
        "by reference, one blob each",
    )
    bench.add_argument(
        "--inline-limit",
        type=_limit,
        default=DEFAULT_INLINE_LIMIT,
        metavar="SIZE",
        help="outputs encoded above it are kept by reference, as run(inline_limit=...) "
        "(default: 256KiB; 'none': never)",
    )
    bench.add_argument(
        "--out",
        default="flowdag-bench",
        metavar="DIR",
        help="folder for the results JSON and the chart PNG (default: %(default)s)",
    )
    bench.add_argument("--quick", action="store_true", help="a small comparison: seconds")


def _sizes(text: str) -> list[int]:
    try:
        values = [parse_size(part.strip(), "--payload") for part in text.split(",") if part.strip()]
    except FlowdagError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected sizes separated by commas, got {text!r}")
    return values


def _limit(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    try:
        return parse_size(text.strip(), "--inline-limit")
    except FlowdagError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, or 'none'") from None


def _stores(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in STORES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown store {', '.join(unknown) or repr(text)}: choose from {','.join(STORES)}"
        )
    return names


def cmd_bench(args: argparse.Namespace, err: Console) -> int:
    """Compare the stores on this machine: table, JSON and chart.

    Measure each store's per-node commit cost (a durable fan-out run), save, load
    and resume times and size on disk, after warm-up runs; about a minute, seconds
    with --quick. The stores live in a temporary directory (under TMPDIR) that is
    removed afterwards.
    """
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)  # before the long part: a bad --out fails now
    with BenchBar(err) as progress:
        results = run_bench(
            args.stores,
            args.nodes,
            args.payload,
            quick=args.quick,
            progress=progress.update,
            inline_limit=args.inline_limit,
        )
    out = Console(highlight=False)
    out.print(_table(results))
    stem = folder / f"bench-{results.started_at:%Y%m%d-%H%M%S}"
    written = results.write_json(stem.with_suffix(".json"))
    out.print(f"results: {escape(str(written))}", soft_wrap=True)
    if _plot.plot_available():
        chart = write_chart(results, stem.with_suffix(".png"))
        out.print(f"chart: {escape(str(chart))}", soft_wrap=True)
    else:
        hint = escape(_plot.INSTALL_HINT)  # [plot] is not markup
        out.print(
            f"chart: not drawn, matplotlib is not installed; {hint} to get it", soft_wrap=True
        )
    return Exit.OK


def _table(results: BenchResults) -> Table:
    m = results.machine
    table = plain_table(
        caption=f"{escape(m['cpu'])} ({m['cpus']} CPUs), Python {m['python']}, "
        f"{results.seconds:.0f}s; best of the repetitions after a warm-up; "
        "commit: a durable fan-out run, per node; x mem: commit / the in-memory store's; "
        f"refs: outputs kept by reference (above {_limit_text(results)})",
        caption_justify="left",
        padding=(0, 2, 0, 0),
    )
    for column in (
        "store",
        "nodes",
        "payload\nbytes",
        "commit\nµs/node",
        "x mem",
        "save\nms",
        "load\nms",
        "resume\nms",
        "disk\nMB",
        "refs",
    ):
        table.add_column(column, justify="left" if column == "store" else "right", no_wrap=True)
    for row in results.rows:
        table.add_row(
            row.store,
            f"{row.nodes:,}",
            f"{row.payload:,}",
            f"{row.commit_us_per_node:,.1f}",
            f"{row.ratio_to_memory:.2f}",
            f"{row.save_ms:,.1f}",
            f"{row.load_ms:,.1f}",
            f"{row.resume_ms:,.1f}",
            "-" if row.disk_mb is None else f"{row.disk_mb:,.2f}",
            f"{row.refs:,}",
        )
    return table


def _limit_text(results: BenchResults) -> str:
    limit = results.settings.get("inline_limit")
    return "no limit: never" if limit is None else f"inline_limit {limit:,} bytes"
