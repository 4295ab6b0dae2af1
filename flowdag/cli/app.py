"""`main` and the parser: dispatch to a command, turn every expected error into one line."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.markup import escape

from flowdag.cli.base import CLIError, Command, Commands, Exit, flatten, log
from flowdag.errors import FlowdagError, RunLockedError, WorkflowChangedError

__all__ = ["main", "make_parser"]

#: What the CLI adds to a library error: (error type, the flag its hint names, the hint).
#: The library says what to do in its own terms; only the CLI knows its options.
_HINTS: tuple[tuple[type[Exception], str, str], ...] = (
    (WorkflowChangedError, "--allow-changes", "rerun with --allow-changes to accept them"),
    (RunLockedError, "--run-id", "the command line takes another with --run-id"),
)

#: The commands, in the order ``flowdag --help`` lists them: the names a module's
#: function adds to the parser. A command line naming one imports only its module
#: (``flowdag status`` never imports the runner, asyncio or the pools).
_COMMANDS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("run",), "flowdag.cli.run", "add_parser"),
    (("status",), "flowdag.cli.status", "add_parser"),
    (("list", "store"), "flowdag.cli.runs", "add_parsers"),
    (("show",), "flowdag.cli.show", "add_parser"),
    (("explain",), "flowdag.cli.explain", "add_parser"),
    (("bench",), "flowdag.cli.bench.command", "add_parser"),
    (("graph",), "flowdag.cli.graph", "add_parser"),
    (("gc",), "flowdag.cli.gc", "add_parser"),
    (("mark-done", "invalidate"), "flowdag.cli.overrides", "add_parsers"),
    (("cache",), "flowdag.cli.cache", "add_parsers"),
    (("kv",), "flowdag.cli.kv", "add_parsers"),
    (("waits", "provide"), "flowdag.cli.waits", "add_parsers"),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flowdag`` command line and return its exit code."""
    parser = make_parser(_command_named(sys.argv[1:] if argv is None else argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage error (2) or --help (0): report, don't exit
        return exc.code if isinstance(exc.code, int) else Exit.USAGE
    err = Console(stderr=True, highlight=False)
    handler = _LogHandler(err, logging.INFO if args.verbose else logging.WARNING)
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(min(handler.level, log.getEffectiveLevel()))
    try:
        command: Command = args.command
        return command(args, err)
    except BrokenPipeError:
        return _quiet_on_closed_stdout()
    except SystemExit as exc:
        # rich meets a closed stdout with SystemExit(1) raised while handling the
        # BrokenPipeError: the same case, the same quiet exit code.
        if isinstance(exc.__context__, BrokenPipeError):
            return _quiet_on_closed_stdout()
        raise
    except (CLIError, FlowdagError) as exc:
        return _error(one_line(exc))
    except OSError as exc:
        return _error(_describe_os_error(exc))
    except KeyboardInterrupt:
        print(f"flowdag: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)


def make_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``flowdag`` argument parser: every command, or only ``command`` (and the
    commands its module adds with it), which then imports no other command's module."""
    parser = argparse.ArgumentParser(
        prog="flowdag",
        description="Run DAG workflows that checkpoint every node and resume after crashes.",
        epilog="Encrypted stores: set FLOWDAG_KEY to a 256-bit key (64 hex digits or base64); "
        "every command then opens disk stores with it.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for names, module, adds in _COMMANDS:
        if command is None or command in names:
            add: Callable[[Commands], None] = getattr(importlib.import_module(module), adds)
            add(commands)
    return parser


def _command_named(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names, if it is one; None for ``--help``, a typo, ..."""
    for word in argv:
        if not word.startswith("-"):  # the options before a command take no value
            return word if any(word in names for names, _, _ in _COMMANDS) else None
    return None


def one_line(exc: Exception) -> str:
    """The error as one line, with the CLI's own hint when the library's names no flag."""
    message = flatten(str(exc)) or type(exc).__name__
    for kind, flag, hint in _HINTS:
        # Keyed on the flag, not on the library's wording, which may change.
        if isinstance(exc, kind) and flag not in message:
            message += f"; {hint}"
    return message


def _resume_hint(args: argparse.Namespace) -> str:
    run = sys.modules.get("flowdag.cli.run")  # imported if the command is `flowdag run`
    if run is not None and getattr(args, "command", None) is run.cmd_run and args.run_id:
        command: str | None = run.resume_command(args)
        return "" if command is None else f"; resume with: {command}"
    return ""


def _quiet_on_closed_stdout() -> int:
    """The reader of stdout went away (``flowdag list | head``): stop without a word.

    As the Python docs advise (``signal`` module, "Note on SIGPIPE"): point stdout
    at devnull, so the flush at interpreter exit does not raise again.
    """
    with contextlib.suppress(OSError, ValueError):  # no real fd: e.g. captured in tests
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return Exit.BROKEN_PIPE


def _describe_os_error(exc: OSError) -> str:
    if exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return flatten(str(exc)) or type(exc).__name__


def _error(message: str) -> int:
    print(f"flowdag: error: {message}", file=sys.stderr)
    return Exit.USAGE


class _LogHandler(logging.Handler):
    """Library log records as ``flowdag: warning: ...`` lines on the CLI's stderr."""

    def __init__(self, console: Console, level: int) -> None:
        super().__init__(level)
        self._console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = flatten(record.getMessage())
            # Through the console, so lines land above a live progress bar.
            line = f"flowdag: {record.levelname.lower()}: {escape(text)}"
            self._console.print(line, soft_wrap=True)
        except Exception:
            self.handleError(record)
