"""``flowdag mark-done`` and ``flowdag invalidate``, and the audit ``status --json`` shows.

Through `flowdag.cli.app.main` in this process (a real process holds the run
where a lock is needed): one line per changed node, ``--dry-run`` changes
nothing, bad input is one ``flowdag: error:`` line and exit 2, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag.cli.app import main
from flowdag.stores import open_store
from tests.gc_stores import KEY, cli, held_elsewhere, open_kind
from tests.test_overrides import workflow


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A JSON store holding run 'r' of the diamond, b failed and d skipped."""
    where = f"json://{tmp_path / 'json'}"
    flowdag.run(workflow("diamond", [], {"b"}), run_id="r", store=where)
    return where


def flowdag_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def status(capsys: pytest.CaptureFixture[str], url: str) -> dict[str, Any]:
    code, out, _ = flowdag_cli(capsys, "status", "r", "--json", "--store", url)
    assert code == 0
    document: dict[str, Any] = json.loads(out)
    return document


def test_mark_done_then_invalidate(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, err = flowdag_cli(
        capsys, "mark-done", "r", "b", "--json", '{"rows": [1, 2]}', "--reason", "by hand",
        "--store", url,
    )  # fmt: skip
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("run r: marked 'b' done (by ") and "@" in lines[0]
    assert lines[1].split() == ["b", "failed", "->", "completed", "(marked", "done)"]
    assert lines[2].split()[:4] == ["d", "skipped", "->", "pending"]
    with open_store(url) as store:
        assert store.load("r").nodes["b"].output == {"rows": [1, 2]}

    code, out, err = flowdag_cli(
        capsys, "invalidate", "r", "a", "--no-downstream", "--reason", "bad rows", "--store", url
    )
    assert (code, err) == (0, "")
    assert [line.split()[:4] for line in out.splitlines()[1:]] == [
        ["a", "completed", "->", "pending"]
    ]
    document = status(capsys, url)
    assert [(e["node"], e["action"], e["reason"]) for e in document["audit"]] == [
        ("b", "mark_done", "by hand"),
        ("d", "mark_done", "downstream of 'b': by hand"),
        ("a", "invalidate", "bad rows"),
    ]
    assert all("@" in e["by"] and e["at"].endswith("+00:00") for e in document["audit"])
    nodes = document["nodes"]
    assert nodes["b"]["reason"]["code"] == "manual"
    assert "by hand" in nodes["b"]["reason"]["detail"]
    assert nodes["a"]["reason"]["code"] == "forced" and nodes["a"]["status"] == "pending"
    assert nodes["d"]["reason"] is None


def test_invalidate_downstream_by_default(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, _ = flowdag_cli(capsys, "invalidate", "r", "a", "c", "--store", url)
    assert code == 0
    assert [line.split()[:4] for line in out.splitlines()[1:]] == [
        ["a", "completed", "->", "pending"],
        ["b", "failed", "->", "pending"],
        ["c", "completed", "->", "pending"],
        ["d", "skipped", "->", "pending"],
    ]
    assert {v["status"] for v in status(capsys, url)["nodes"].values()} == {"pending"}


def test_a_dry_run_prints_the_plan_and_changes_nothing(
    capsys: pytest.CaptureFixture[str], url: str
) -> None:
    before = status(capsys, url)
    code, out, _ = flowdag_cli(
        capsys, "mark-done", "r", "b", "--json", "3", "--dry-run", "--store", url
    )
    assert code == 0
    assert out.splitlines()[0] == "run r: would mark 'b' done (--dry-run: nothing changed)"
    assert len(out.splitlines()) == 3
    code, out, _ = flowdag_cli(capsys, "invalidate", "r", "a", "--dry-run", "--store", url)
    assert code == 0 and "would invalidate 'a'" in out
    assert status(capsys, url) == before


def test_the_tagged_json_of_status_is_read(capsys: pytest.CaptureFixture[str], url: str) -> None:
    value = '{"$tuple": [1, {"$bytes": "AP8="}]}'
    code, _, err = flowdag_cli(capsys, "mark-done", "r", "b", "--json", value, "--store", url)
    assert code == 0, err
    code, _, err = flowdag_cli(
        capsys, "mark-done", "r", "c", "--json", '{"$$key": 1}', "--store", url
    )
    assert code == 0, err
    with open_store(url) as store:
        nodes = store.load("r").nodes
    assert nodes["b"].output == (1, b"\x00\xff")
    assert nodes["c"].output == {"$key": 1}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["mark-done", "r", "zz", "--json", "1"], ["'zz'", "'a', 'b'"]),
        (["invalidate", "r", "a", "zz"], ["'zz'"]),
        (["mark-done", "nope", "b", "--json", "1"], ["'nope'"]),
        (["mark-done", "r", "b", "--json", "{bad"], ["--json", "not JSON"]),
        (["mark-done", "r", "b", "--json", '{"$what": 1}'], ["$what", "$$"]),
        (["mark-done", "../x", "b", "--json", "1"], ["../x"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], url: str, args: list[str], words: list[str]
) -> None:
    before = status(capsys, url)
    code, out, err = flowdag_cli(capsys, *args, "--store", url)
    assert code == 2 and out == ""
    assert err.startswith("flowdag: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err
    assert status(capsys, url) == before


def test_a_missing_store_is_not_created(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    where = tmp_path / "none"
    code, _, err = flowdag_cli(capsys, "invalidate", "r", "a", "--store", f"lmdb://{where}")
    assert code == 2 and "no store" in err and not where.exists()


def test_refused_while_another_process_runs_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, url: str
) -> None:
    with held_elsewhere("json", tmp_path, "r") as pid:
        for args in (["mark-done", "r", "b", "--json", "1"], ["invalidate", "r", "a"]):
            code, out, err = flowdag_cli(capsys, *args, "--store", url)
            assert code == 2 and out == "" and err.count("\n") == 1
            assert f"pid {pid}" in err and "--run-id" not in err  # no hint meant for `run`
    code, _, _ = flowdag_cli(capsys, "mark-done", "r", "b", "--json", "1", "--store", url)
    assert code == 0


def test_an_encrypted_store_in_a_real_process(tmp_path: Path) -> None:
    """``flowdag mark-done`` as operators run it: its own process, the key in FLOWDAG_KEY."""
    with open_kind("lmdb-encrypted", tmp_path) as store:
        flowdag.run(workflow("chain", [], {"b"}), run_id="r", store=store)
    where = f"lmdb://{tmp_path / 'lmdb-encrypted'}"
    done = cli("mark-done", "r", "b", "--json", "[1, 2]", "--store", where, FLOWDAG_KEY=KEY)
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()[1:]] == ["b", "c", "d"]
    shown = cli("status", "r", "--json", "--store", where, FLOWDAG_KEY=KEY)
    assert [e["node"] for e in json.loads(shown.stdout)["audit"]] == ["b", "c", "d"]
    with open_kind("lmdb-encrypted", tmp_path) as store:
        assert store.load("r").nodes["b"].output == [1, 2]
