"""flowdag kv get|set|delete|list: values as JSON in and out, one-line errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowdag.cli.app import main
from tests.gc_stores import cli
from tests.kv_stores import DISK_KINDS, open_kind, url_of


@pytest.fixture(params=DISK_KINDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    with open_kind(request.param, tmp_path):  # created (skipped while it keeps no tables)
        pass
    return url_of(request.param, tmp_path)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_set_get_list_delete(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, "kv", "set", "a:1", "--json", '{"x": [1, 2]}', "--store", url)[0] == 0
    assert run_cli(capsys, "kv", "set", "a:2", "--json", "3", "--ttl", "1h", "--store", url)[0] == 0
    assert run_cli(capsys, "kv", "set", "b", "--json", '"text"', "--store", url)[0] == 0
    code, out, _ = run_cli(capsys, "kv", "get", "a:1", "--store", url)
    assert (code, json.loads(out)) == (0, {"x": [1, 2]})
    code, out, _ = run_cli(capsys, "kv", "get", "a:2", "--json", "--store", url)
    record = json.loads(out)
    assert record["value"] == 3 and record["expires_at"] is not None and record["run_id"] is None
    code, out, _ = run_cli(capsys, "kv", "list", "--prefix", "a:", "--json", "--store", url)
    assert [(r["key"], r["value"]) for r in json.loads(out)] == [("a:1", {"x": [1, 2]}), ("a:2", 3)]
    code, out, _ = run_cli(capsys, "kv", "list", "--store", url)
    assert [line.split(" = ")[0] for line in out.splitlines()] == ["a:1", "a:2", "b"]
    code, out, _ = run_cli(capsys, "kv", "delete", "b", "--json", "--store", url)
    assert (code, json.loads(out)) == (0, {"key": "b", "deleted": True})
    code, _, err = run_cli(capsys, "kv", "delete", "b", "--store", url)
    assert code == 2 and err.count("\n") == 1 and "'b'" in err


def test_a_real_process_reads_what_another_wrote(url: str) -> None:
    assert cli("kv", "set", "shared", "--json", "[1]", "--store", url).returncode == 0
    done = cli("kv", "get", "shared", "--store", url)
    assert (done.returncode, json.loads(done.stdout)) == (0, [1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["kv", "get", "missing"], "no kv entry 'missing'"),
        (["kv", "get", "bad key"], "invalid kv key"),
        (["kv", "set", "bad/key", "--json", "1"], "invalid kv key"),
        (["kv", "set", "k", "--json", "{bad"], "not JSON"),
        (["kv", "set", "k", "--json", "1", "--ttl", "soon"], "--ttl"),
        (["kv", "delete", "missing"], "no kv entry 'missing'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = run_cli(capsys, *args, "--store", "memory://")
    assert code == 2 and out == ""
    assert err.startswith("flowdag: error: ") and err.count("\n") == 1 and message in err
