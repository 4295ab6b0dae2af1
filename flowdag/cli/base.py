"""What every command shares: exit codes, `CLIError`, argument types and opening a store."""

from __future__ import annotations

import argparse
import inspect
import logging
from collections.abc import Callable
from enum import IntEnum
from typing import TypeAlias

from rich.console import Console

from flowdag.stores import Store, parse_store_url
from flowdag.stores import open_store as _open_store
from flowdag.stores._crypto import Cipher

__all__ = [
    "DEFAULT_STORE",
    "CLIError",
    "Command",
    "Commands",
    "Exit",
    "add_command",
    "add_store_option",
    "flatten",
    "int_list",
    "log",
    "open_store",
    "positive_int",
]

#: Store URL used when ``--store`` is not given.
DEFAULT_STORE = "lmdb://.flowdag"


class Exit(IntEnum):
    """The exit codes of every command."""

    OK = 0  # the run completed, or the command worked
    FAILED = 1  # the run failed; store convert/verify: some run was not copied or is damaged
    USAGE = 2  # bad usage or bad input
    SUSPENDED = 3  # flowdag run: the run waits for input (flowdag provide), nothing else to do
    BROKEN_PIPE = 141  # stdout was closed early (`| head`): 128 + SIGPIPE, as a shell reports


log = logging.getLogger("flowdag")

#: What a command runs: parsed arguments and the stderr console in, exit code out.
Command: TypeAlias = Callable[[argparse.Namespace, Console], int]
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class CLIError(Exception):
    """Bad input the CLI detects itself; shown as one ``flowdag: error:`` line."""


def add_command(commands: Commands, name: str, command: Command) -> argparse.ArgumentParser:
    """Add the subcommand ``name`` that runs ``command``; return its parser for the options.

    The command's docstring is its help: the summary line in the list of
    commands, the paragraphs after it (if any) at the top of ``flowdag NAME --help``.
    """
    summary, _, rest = inspect.cleandoc(command.__doc__ or "").partition("\n\n")
    help = summary[:1].lower() + summary[1:].rstrip(".")  # "Show the run." -> "show the run"
    parser = commands.add_parser(name, help=help, description=rest.strip() or None)
    parser.set_defaults(command=command)
    return parser


def add_store_option(parser: argparse.ArgumentParser) -> None:
    """``--store URL``, defaulting to `DEFAULT_STORE`."""
    parser.add_argument(
        "--store",
        default=DEFAULT_STORE,
        metavar="URL",
        help="lmdb://DIR, memory://, ... (default: %(default)s)",
    )


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def int_list(least: int) -> Callable[[str], list[int]]:
    """An argparse type: whole numbers >= ``least`` separated by commas."""

    def parse(text: str) -> list[int]:
        try:
            values = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            values = []
        if not values or min(values) < least:
            raise argparse.ArgumentTypeError(
                f"expected whole numbers >= {least} separated by commas, got {text!r}"
            )
        return values

    return parse


def open_store(url: str, *, create: bool = True) -> Store:
    """Open the store a URL names; disk stores use the key in ``FLOWDAG_KEY`` when it is set.

    Read-only commands pass ``create=False``: a store that does not exist is a
    `StoreError` ("no store at ..."), never a new, empty store left behind.
    """
    _, directory = parse_store_url(url)
    cipher = Cipher.from_env() if directory is not None else None
    if cipher is None:
        return _open_store(url, create=create)
    return _open_store(url, create=create, key=cipher)


def flatten(text: str) -> str:
    """Several lines as one: ``a; b``."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())
