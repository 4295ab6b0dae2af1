"""Collect ``bench_*.py`` here, and print the ratios that matter after a benchmark run.

``pytest`` alone never comes here (``testpaths = ["tests"]``); run
``pytest benchmarks/ --benchmark-only`` or name one file.

Each benchmark describes itself in ``benchmark.extra_info``:

- ``label``: its name within its group (``bare``, ``lmdb``, ``dask-threaded``...);
- ``baseline``: true for the member the rest of its group is divided by;
- ``nodes``: nodes per round, so figures are also shown per node;
- ``vs``: the label of one more member of its group to compare with;
- ``series``: runs of one thing at several sizes (``fanout/lmdb``): the summary
  compares the largest size's per-node time with the smallest's.

The summary is printed at the end and added to ``--benchmark-json`` as ``ratios``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _shapes import DirMaker


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    # python_files is test_*.py; files named on the command line are collected anyway.
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)
    ):
        module: pytest.Module = pytest.Module.from_parent(parent, path=file_path)
        return module
    return None


@pytest.fixture
def fresh_dir(tmp_path: Path) -> Iterator[DirMaker]:
    """Call it for a new, empty directory (a new store location)."""
    yield DirMaker(tmp_path)


def _per_node(bench: Any) -> tuple[float, str]:
    """(figure, unit): median per node in µs when the node count is known, else ms."""
    median = float(bench.stats.median)
    nodes = bench.extra_info.get("nodes")
    if nodes:
        return median / nodes * 1e6, "µs/node"
    return median * 1e3, "ms"


def ratio_lines(benchmarks: list[Any]) -> list[str]:
    """The summary: each group against its baseline, and per-node scaling of series."""
    lines: list[str] = []
    groups: dict[str, list[Any]] = defaultdict(list)
    for bench in benchmarks:
        if bench.extra_info.get("label") and bench.stats:
            groups[bench.group or ""].append(bench)
    for group, members in groups.items():
        by_label = {b.extra_info["label"]: b for b in members}
        base = next((b for b in members if b.extra_info.get("baseline")), None)
        if base is None and not any("vs" in b.extra_info for b in members):
            continue
        base_value, unit = _per_node(base) if base is not None else (0.0, "")
        head = f"{group}" + (
            f" (baseline {base.extra_info['label']}: {base_value:,.1f} {unit})" if base else ""
        )
        lines.append(head)
        for bench in members:
            value, unit = _per_node(bench)
            row = f"  {bench.extra_info['label']:<26} {value:>12,.1f} {unit:<8}"
            if base is not None and bench is not base and base_value > 0:
                row += f" {value / base_value:>8.2f}x {base.extra_info['label']}"
            other = by_label.get(bench.extra_info.get("vs", ""))
            if other is not None and other is not base:
                other_value, _ = _per_node(other)
                if other_value > 0:
                    row += f" {value / other_value:>8.2f}x {other.extra_info['label']}"
            lines.append(row)
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for bench in benchmarks:
        key = bench.extra_info.get("series")
        if key and bench.extra_info.get("nodes") and bench.stats:
            series[key].append((bench.extra_info["nodes"], _per_node(bench)[0]))
    scaling = [
        f"  {key:<34} {sizes[0][0]:>7,} nodes {sizes[0][1]:>9,.1f} µs/node;"
        f" {sizes[-1][0]:>7,} nodes {sizes[-1][1]:>9,.1f} µs/node:"
        f" {sizes[-1][1] / sizes[0][1]:.2f}x"
        for key, sizes in sorted((k, sorted(v)) for k, v in series.items())
        if len(sizes) > 1 and sizes[0][1] > 0
    ]
    if scaling:
        lines.append("per-node cost, largest size vs smallest")
        lines.extend(scaling)
    crashes = [b for b in benchmarks if "rerun_completed" in b.extra_info and b.stats]
    if crashes:
        lines.append("crash-resume (SIGKILL half way, then resume)")
    for bench in crashes:
        info = bench.extra_info
        lines.append(
            f"  {info['label']:<12} time-to-done {float(bench.stats.median) * 1e3:,.0f} ms;"
            f" completed at kill {info['completed_at_kill']} of {info['nodes']:,};"
            f" ran on resume {info['ran_on_resume']}; completed nodes re-run:"
            f" {info['rerun_completed']}"
        )
    return lines


def _benchmarks(config: pytest.Config) -> list[Any]:
    session = getattr(config, "_benchmarksession", None)
    return list(getattr(session, "benchmarks", []) or [])


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = ratio_lines(_benchmarks(config))
    if lines:
        terminalreporter.section("flowdag ratios (medians)")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_benchmark_update_json(
    config: pytest.Config, benchmarks: list[Any], output_json: dict[str, Any]
) -> None:
    output_json["ratios"] = ratio_lines(benchmarks)
