"""``flowdag bench`` and `flowdag.cli.bench`: quick comparison, JSON, chart, and bad input."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import flowdag._plot
from flowdag.cli import main
from flowdag.cli.bench.chart import write_chart
from flowdag.cli.bench.measure import BenchProgress, BenchResults, run_bench
from flowdag.errors import FlowdagError, OptionalDependencyError

ALL_STORES = ["memory", "lmdb", "json", "flatbuffers"]
ROW_FIELDS = {
    "store",
    "nodes",
    "payload",
    "commit_us_per_node",
    "save_ms",
    "load_ms",
    "resume_ms",
    "disk_mb",
    "ratio_to_memory",
    "repeats",
    "refs",
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    yield


def _only(folder: Path, suffix: str) -> Path:
    found = sorted(folder.glob(f"bench-*{suffix}"))
    assert len(found) == 1, found
    return found[0]


def test_cli_quick_on_every_store_writes_table_json_and_chart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "results"
    code = main(["bench", "--quick", "--stores", ",".join(ALL_STORES), "--out", str(out_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    for store in ALL_STORES:
        assert store in out
    for header in ("µs/node", "x mem", "save", "load", "resume", "disk"):
        assert header in out
    data = json.loads(_only(out_dir, ".json").read_text())
    assert {"flowdag", "started_at", "machine", "settings", "units", "results"} <= set(data)
    assert {"cpu", "cpus", "python"} <= set(data["machine"])
    rows = data["results"]
    assert sorted(row["store"] for row in rows) == sorted(ALL_STORES)
    for row in rows:
        assert set(row) == ROW_FIELDS
        assert row["commit_us_per_node"] > 0 and row["save_ms"] > 0 and row["load_ms"] > 0
        assert row["resume_ms"] > 0 and row["ratio_to_memory"] > 0
        assert (row["disk_mb"] is None) == (row["store"] == "memory")
        if row["store"] != "memory":
            assert row["disk_mb"] > 0
    memory = next(row for row in rows if row["store"] == "memory")
    assert memory["ratio_to_memory"] == pytest.approx(1.0)
    chart = _only(out_dir, ".png")
    assert chart.read_bytes()[:8] == PNG_MAGIC
    assert chart.stat().st_size > 20_000  # a real drawing, not an empty canvas
    assert str(chart) in out
    # Stores lived in a temporary directory that is gone: only the results are left.
    assert sorted(p.suffix for p in out_dir.iterdir()) == [".json", ".png"]


def test_without_matplotlib_the_table_is_printed_and_the_hint_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flowdag._plot, "plot_available", lambda: False)
    code = main(["bench", "--quick", "--stores", "memory", "--nodes", "50", "--out", "r"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "memory" in out
    assert "pip install 'flowdag[plot]'" in out
    assert list((tmp_path / "r").glob("*.png")) == []
    assert len(list((tmp_path / "r").glob("*.json"))) == 1


def test_write_chart_without_matplotlib_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = run_bench(["memory"], [20], [10], repeats=1)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import now fails
    with pytest.raises(OptionalDependencyError, match=r"flowdag\[plot\]"):
        write_chart(results, tmp_path / "c.png")
    with pytest.raises(ImportError):  # catchable as the usual optional-dependency error
        write_chart(results, tmp_path / "c.png")


def test_run_bench_reports_progress_and_measures_the_memory_baseline() -> None:
    steps: list[BenchProgress] = []
    results = run_bench(["lmdb"], [30], [100, 1000], repeats=2, progress=steps.append)
    assert isinstance(results, BenchResults)
    assert [row.store for row in results.rows] == ["lmdb", "lmdb"]  # memory measured, not shown
    assert [row.payload for row in results.rows] == [100, 1000]
    assert all(row.repeats == 2 for row in results.rows)
    # (1 warm-up + 2) repetitions x 2 cases x (lmdb + memory baseline), then "done".
    assert [s.done for s in steps] == list(range(13))
    assert steps[-1].what == "done" and steps[-1].total == 12
    assert "warm-up" in steps[0].what


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stores": ["sqlite"]}, "unknown store 'sqlite'"),
        ({"stores": []}, "no store"),
        ({"stores": ["memory"], "nodes": [2]}, "nodes must be whole numbers >= 3"),
        ({"stores": ["memory"], "payloads": [-1]}, "payload must be whole numbers >= 0"),
    ],
)
def test_run_bench_rejects_bad_input(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(FlowdagError, match=message):
        run_bench(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "--stores", "sqlite"],
        ["bench", "--nodes", "ten"],
        ["bench", "--nodes", "2"],
        ["bench", "--payload", "-5"],
        ["bench", "--payload", "1XB"],
        ["bench", "--inline-limit", "lots"],
    ],
)
def test_cli_bad_options_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "flowdag bench: error:" in err
    assert "Traceback" not in err


def test_cli_out_that_is_a_file_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "taken").write_text("")
    assert main(["bench", "--quick", "--stores", "memory", "--out", "taken"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("flowdag: error: "), err


# -- outputs above the inline limit ---------------------------------------------------------------


def test_outputs_above_the_inline_limit_are_kept_by_reference_one_blob_each() -> None:
    results = run_bench(["lmdb", "json"], [12], [100, 4096], repeats=1, inline_limit=1024)
    refs = {(row.store, row.payload): row.refs for row in results.rows}
    assert refs == {("lmdb", 100): 0, ("json", 100): 0, ("lmdb", 4096): 10, ("json", 4096): 10}
    assert results.settings["inline_limit"] == 1024
    never = run_bench(["lmdb"], [12], [4096], repeats=1, inline_limit=None)
    assert [row.refs for row in never.rows] == [0]


def test_distinct_outputs_are_one_blob_per_node(tmp_path: Path) -> None:
    import flowdag
    from flowdag.cli.bench.shapes import fanout
    from flowdag.stores import open_store

    with open_store(f"lmdb://{tmp_path / 's'}") as store:
        result = flowdag.run(fanout(5, b"x" * 5000, distinct=True), store=store, inline_limit=1000)
        assert sorted(result.refs) == [f"n{i}" for i in range(5)]
        assert len(store.blobs.entries()) == 5
        values = [result.outputs[f"n{i}"] for i in range(5)]
        assert len(set(values)) == 5 and all(len(value) == 5000 for value in values)
        same = flowdag.run(fanout(5, b"y" * 5000), store=store, inline_limit=1000)
        assert len(same.refs) == 5 and len(store.blobs.entries()) == 6  # one blob for all


def test_cli_payload_sizes_with_units_and_the_inline_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "--quick", "--stores", "lmdb", "--nodes", "10", "--payload", "2KiB"]
    assert main([*argv, "--inline-limit", "1KiB", "--out", "r"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the caption wraps
    assert "refs" in out and "inline_limit 1,024 bytes" in out
    (row,) = json.loads(_only(tmp_path / "r", ".json").read_text())["results"]
    assert row["payload"] == 2048 and row["refs"] == 8
    assert main([*argv, "--inline-limit", "none", "--out", "n"]) == 0
    (row,) = json.loads(_only(tmp_path / "n", ".json").read_text())["results"]
    assert row["refs"] == 0
    assert "no limit" in " ".join(capsys.readouterr().out.split())
