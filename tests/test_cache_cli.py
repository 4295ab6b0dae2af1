"""``flowdag cache list|clear`` on a disk store, through `flowdag.cli.app.main`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import flowdag
from flowdag.cli.app import main
from tests.test_cache_run import CALLS, pipeline


@pytest.fixture
def url(tmp_path: Path) -> str:
    """An LMDB store whose cache holds two entries of node 'total' (two inputs)."""
    where = f"lmdb://{tmp_path / 'store'}"
    flowdag.run(pipeline(rows=(1,)), run_id="one", store=where)
    flowdag.run(pipeline(rows=(1, 2)), run_id="two", store=where)
    CALLS.clear()
    return where


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_each_entry_and_its_run(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, _ = cli(capsys, "cache", "list", "--store", url)
    assert code == 0
    assert "cached/total  from run one" in out and "cached/total  from run two" in out
    assert "2 cache entries" in out
    code, out, _ = cli(capsys, "cache", "list", "--store", url, "--json")
    entries = json.loads(out)
    assert sorted(e["run_id"] for e in entries) == ["one", "two"]
    assert {e["node"] for e in entries} == {"total"} and not any(e["expired"] for e in entries)
    code, out, _ = cli(capsys, "cache", "list", "--node", "report", "--store", url, "--json")
    assert json.loads(out) == []


def test_clear_removes_entries_so_the_next_run_computes(
    capsys: pytest.CaptureFixture[str], url: str
) -> None:
    code, out, _ = cli(capsys, "cache", "clear", "--node", "report", "--store", url)
    assert (code, out.strip()) == (0, "removed 0 cache entries")
    code, out, _ = cli(capsys, "cache", "clear", "--store", url, "--json")
    assert (code, json.loads(out)) == (0, {"removed": 2})
    flowdag.run(pipeline(rows=(1,)), run_id="three", store=url)
    assert CALLS == ["total"]


def test_a_missing_store_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = cli(capsys, "cache", "list", "--store", f"lmdb://{tmp_path / 'none'}")
    assert code == 2 and out == ""
    assert err.startswith("flowdag: error: ") and len(err.strip().splitlines()) == 1
