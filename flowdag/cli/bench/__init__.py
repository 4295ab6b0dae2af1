"""``flowdag bench``: compare the stores on this machine, as a table, raw JSON and a chart.

- `flowdag.cli.bench.measure`: `run_bench` and its results (see its design note);
- `flowdag.cli.bench.chart`: `write_chart`, the PNG (the ``plot`` extra);
- `flowdag.cli.bench.shapes`: the workflow shapes, shared with ``benchmarks/``;
- `flowdag.cli.bench.command`: the command itself.
"""
