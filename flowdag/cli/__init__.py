"""The ``flowdag`` command line: run a workflow file; show, list, convert and verify runs;
compare the stores (``bench``); draw a DAG (``graph``).

Design note: the CLI owns the screen, the library never prints. Results (the
summary table, ``status``, ``list``) go to stdout; progress, warnings and errors go
to stderr, so ``flowdag status ID --json > run.json`` stays clean. Live progress is
drawn only when stderr is a terminal; elsewhere (CI, pipes) the run prints one
plain line per failure and nothing else. Library messages say what to do in the
library's terms; the CLI adds its own flags to them (``--allow-changes``...).

Exit codes: 0 the run completed (or the command worked), 1 the run failed, 2 bad
usage or bad input. ``store convert`` and ``store verify`` go on past a damaged
run or a failed copy, report it on its own line and exit 1. Every expected error
— a `FlowdagError`, an `OSError`, a workflow file that cannot be loaded — becomes
ONE line ``flowdag: error: ...`` on stderr, never a traceback.

Modules: ``app`` (`main`, the parser, errors as one line), ``base`` (what every
command shares: exit codes, `CLIError`, argument types, opening a store),
``render`` (statuses, durations, tables, progress bars), ``loader`` (the
workflow file), and one module per command group: ``run``; ``runs`` (``status``,
``list``, ``store``); ``show``; ``graph``; ``bench/`` (the command, the measurements, the
chart, and the workflow shapes the ``benchmarks/`` suites share).
"""

from flowdag.cli.app import main
from flowdag.cli.base import DEFAULT_STORE

__all__ = ["DEFAULT_STORE", "main"]
