"""flowdag waits, provide, and waits in run, status, list and graph (issue 15, the CLI side).

Every command runs in-process (`main(argv)`), each call opening the store
anew, as separate processes do; disk stores only (a memory store is gone when
its command ends), an encrypted one included (``FLOWDAG_KEY``).
"""

from __future__ import annotations

import io
import json
import re
import textwrap
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowdag._wait_entries import TABLE, decode_entry, encode_entry, run_prefix
from flowdag.cli import main
from flowdag.cli.base import open_store as cli_store
from flowdag.cli.waits import wait_json
from flowdag.stores import open_store
from flowdag.stores._crypto import generate_key
from flowdag.stores._tables import TableTxn
from flowdag.waits import Wait

KINDS = ["lmdb", "json", "flatbuffers", "lmdb-encrypted"]
KEY = generate_key()

# order -> approve (input, no default) -> send; order -> note (input with a default); side.
WORKFLOW = textwrap.dedent(
    """
    import flowdag

    wf = flowdag.Workflow("po")

    @wf.node
    def order():
        return {"amount": 120}

    wf.add_input(
        "approve",
        schema={
            "type": "object",
            "properties": {"ok": {"type": "boolean"}, "by": {"type": "string"}},
            "required": ["ok", "by"],
        },
        deps=["order"],
        timeout="1h",
        prompt=lambda order: f"approve the order of {order['amount']}?\\nsay yes or no",
    )
    wf.add_input("note", schema={"type": "string"}, deps=["order"], timeout="1h", default="none")

    @wf.node(deps=["approve", "note"])
    def send(approve, note):
        return [approve["ok"], note]

    @wf.node
    def side():
        return 1
    """
)


@pytest.fixture(params=KINDS)
def url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    kind = str(request.param)
    if kind.endswith("-encrypted"):
        monkeypatch.setenv("FLOWDAG_KEY", KEY)
    return f"{kind.split('-')[0]}://{tmp_path / 'store'}"


@pytest.fixture
def flow(tmp_path: Path) -> str:
    path = tmp_path / "po.py"
    path.write_text(WORKFLOW)
    return str(path)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def keys_in(text: str) -> dict[str, str]:
    """Node -> the key its `flowdag provide` command shows."""
    found = re.findall(r"node (\w+) waits for input.*?\n.*?\n.*?provide (fdw_\S+)", text)
    return dict(found)


def suspend(capsys: pytest.CaptureFixture[str], flow: str, url: str) -> dict[str, str]:
    code, out, err = cli(capsys, "run", flow, "--run-id", "po1", "--store", url)
    assert code == 3, out + err
    keys = keys_in(out)
    assert set(keys) == {"approve", "note"}
    return keys


def test_suspend_provide_continue(capsys: pytest.CaptureFixture[str], flow: str, url: str) -> None:
    code, out, err = cli(capsys, "run", flow, "--run-id", "po1", "--store", url)
    assert code == 3
    keys = keys_in(out)
    assert set(keys) == {"approve", "note"}
    assert f"provide {keys['approve']} --json '<value>' --store {url}" in out
    assert "approve the order of 120?; say yes or no" in out  # the prompt, one line
    assert "deadline: " in out and "then it fails" in out and "then it takes its default" in out
    assert re.search(r"run po1 suspended .*1 waiting|run po1 suspended .*2 waiting", out)
    assert "continue with: flowdag run" in out
    assert not any(key in err for key in keys.values())  # never in the log
    assert err.count("node approve waits for input") == 1

    # Again: still suspended; the keys are not shown again (they are not stored).
    code, out, _ = cli(capsys, "run", flow, "--run-id", "po1", "--store", url)
    assert code == 3 and "fdw_" not in out
    assert f"flowdag waits --reissue po1 approve --store {url}" in out

    code, out, _ = cli(capsys, "waits", "--store", url)
    assert code == 0 and "fdw_" not in out
    lines = out.splitlines()
    assert lines[0].split() == ["run", "id", "node", "state", "deadline", "started", "prompt"]
    rows = {line.split()[1]: line for line in lines[1:]}
    assert set(rows) == {"approve", "note"}
    assert "waiting" in rows["approve"] and "(in 59m)" in rows["approve"]
    assert "approve the order of 120?; say yes or no" in rows["approve"]

    code, out, _ = cli(capsys, "waits", "--store", url, "--json", "--run", "po1")
    records = {record["node"]: record for record in json.loads(out)}
    assert "fdw_" not in out and set(records) == {"approve", "note"}
    approve = records["approve"]
    assert approve["state"] == "waiting" and approve["run_id"] == "po1"
    assert approve["schema"]["required"] == ["ok", "by"] and approve["has_default"] is False
    started = datetime.fromisoformat(approve["started_at"])
    assert started.utcoffset() == timedelta(0)
    assert datetime.fromisoformat(approve["expires_at"]) - started == timedelta(hours=1)
    assert records["note"]["has_default"] is True and approve["provided_at"] is None

    code, out, _ = cli(capsys, "status", "po1", "--store", url)
    assert code == 0 and "suspended" in out.splitlines()[0] and "fdw_" not in out
    statuses = {line.split()[0]: line.split()[1] for line in out.splitlines()[2:] if line.strip()}
    assert statuses == {
        "order": "completed",
        "approve": "waiting",
        "note": "waiting",
        "send": "pending",
        "side": "completed",
    }
    code, out, _ = cli(capsys, "status", "po1", "--store", url, "--json")
    document = json.loads(out)
    assert document["status"] == "suspended"
    assert document["nodes"]["approve"]["status"] == "waiting"
    assert {wait["node"] for wait in document["waits"]} == {"approve", "note"}
    code, out, _ = cli(capsys, "list", "--store", url)
    assert "suspended" in out and "2 waiting" in out
    code, out, _ = cli(capsys, "show", "po1", "--store", url)
    assert "suspended" in out.splitlines()[0] and re.search(r"^approve +waiting", out, re.M)
    code, out, _ = cli(capsys, "explain", "po1", "--store", url, "--json")
    assert json.loads(out)["status"] == "suspended"
    code, out, _ = cli(capsys, "list", "--store", url, "--json")
    (row,) = json.loads(out)
    assert row["status"] == "suspended" and row["nodes"]["waiting"] == 2

    # A value that does not fit: exit 2, each field named on its own line; the wait stays open.
    code, out, err = cli(
        capsys, "provide", keys["approve"], "--json", '{"ok": "yes"}', "--store", url
    )
    assert code == 2 and out == "" and "Traceback" not in err
    first, *fields = err.splitlines()
    assert first == "flowdag: error: input for node 'approve' is invalid:"
    assert any(line.lstrip().startswith("ok:") for line in fields)
    assert any("'by' is a required property" in line for line in fields)

    code, out, err = cli(
        capsys, "provide", keys["approve"], "--json", '{"ok": true, "by": "ann"}', "--store", url
    )
    assert code == 0, err
    assert "node approve of run po1" in out and "next `flowdag run` of run id po1" in out
    code, out, _ = cli(capsys, "waits", "--store", url)
    assert "provided: the next run takes it" in out
    code, out, err = cli(capsys, "provide", keys["approve"], "--json", "true", "--store", url)
    assert code == 2 and err.count("\n") == 1 and "no open wait has this key" in err

    code, _, err = cli(capsys, "provide", keys["note"], "--json", '"rush"', "--store", url)
    assert code == 0
    code, out, _ = cli(capsys, "run", flow, "--run-id", "po1", "--store", url)
    assert code == 0 and "completed" in out.splitlines()[-1]
    # order and side were completed before; the two inputs and send ran in this call.
    assert "2 of 5 nodes were already completed" in out.splitlines()[-1]
    code, out, err = cli(capsys, "waits", "--store", url)
    assert (code, out) == (0, "") and "no waits" in err
    code, out, _ = cli(capsys, "status", "po1", "--store", url)
    assert "completed" in out.splitlines()[0]


def test_reissue(capsys: pytest.CaptureFixture[str], flow: str, url: str) -> None:
    old = suspend(capsys, flow, url)["approve"]
    code, out, err = cli(capsys, "waits", "--reissue", "po1", "approve", "--store", url)
    assert code == 0, err
    (new,) = re.findall(r"fdw_[\w-]+", out.splitlines()[1])
    assert new != old and f"flowdag provide {new} --json '<value>' --store {url}" in out
    code, _, err = cli(capsys, "provide", old, "--json", '{"ok": true, "by": "x"}', "--store", url)
    assert code == 2 and "no open wait has this key" in err
    code, out, _ = cli(capsys, "waits", "--reissue", "po1", "approve", "--store", url, "--json")
    record = json.loads(out)
    assert record["key"].startswith("fdw_") and record["key"] != new
    assert record["command"].startswith(f"flowdag provide {record['key']} ")
    code, _, err = cli(capsys, "provide", new, "--json", '{"ok": true, "by": "x"}', "--store", url)
    assert code == 2  # revoked by the second reissue
    args = ["provide", record["key"], "--json", '{"ok": true, "by": "x"}', "--store", url]
    assert cli(capsys, *args)[0] == 0
    # Reissuing a wait that was answered, or a node that does not wait: one line, exit 2.
    for node in ("approve", "side", "nope"):
        code, out, err = cli(capsys, "waits", "--reissue", "po1", node, "--store", url)
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert err.startswith(f"flowdag: error: run 'po1' has no open wait at node '{node}'")


def test_expired_waits_say_what_the_next_run_does(
    capsys: pytest.CaptureFixture[str], flow: str, url: str
) -> None:
    keys = suspend(capsys, flow, url)
    past = datetime.now(UTC) - timedelta(minutes=5)
    with cli_store(url) as store:  # with FLOWDAG_KEY when it is set, as the CLI

        def expire(txn: TableTxn) -> None:
            for key, raw in store.table_scan(TABLE, run_prefix("po1")):
                entry = decode_entry(raw, key)
                txn.put(TABLE, key, encode_entry(replace(entry, expires_at=past)))

        store.transact_tables(expire)
    code, out, _ = cli(capsys, "waits", "--store", url)
    rows = {line.split()[1]: line for line in out.splitlines()[1:]}
    assert "expired: fails on the next run" in rows["approve"]
    assert "expired: default applies on the next run" in rows["note"]
    code, out, _ = cli(capsys, "waits", "--store", url, "--json")
    assert {r["node"]: r["state"] for r in json.loads(out)} == dict.fromkeys(keys, "expired")
    code, out, err = cli(capsys, "provide", keys["note"], "--json", '"late"', "--store", url)
    assert code == 2 and err.count("\n") == 1 and "expired at" in err
    assert "takes its default on the next run" in err
    code, out, _ = cli(capsys, "run", flow, "--run-id", "po1", "--store", url)
    assert code == 1 and "InputTimeoutError" in out  # approve failed; note took its default


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--json", "{bad"], "--json is not JSON: Expecting property name enclosed in double"),
        (["--file", "missing.json"], "No such file or directory"),
        (["--json", "1", "--file", "x"], "not allowed with argument"),
        ([], "one of the arguments --json --file is required"),
        (["--json", "[1]"], "no open wait has this key"),
    ],
)
def test_provide_bad_input_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], message: str
) -> None:
    with open_store(f"lmdb://{tmp_path / 'store'}"):
        pass
    key = "fdw_" + "x" * 32
    code, out, err = cli(capsys, "provide", key, *args, "--store", f"lmdb://{tmp_path / 'store'}")
    assert code == 2 and out == "" and message in err and "Traceback" not in err
    assert key not in err  # a key is never echoed
    # argparse's own usage errors add the usage line, as for every command
    assert err.count("\n") == (2 if "argument" in message else 1)


def test_provide_reads_a_file_or_stdin(
    capsys: pytest.CaptureFixture[str],
    flow: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"lmdb://{tmp_path / 'store'}"
    keys = suspend(capsys, flow, url)
    bad = tmp_path / "bad.json"
    bad.write_text('{"ok": true,\n "by": }\n')
    code, _, err = cli(capsys, "provide", keys["approve"], "--file", str(bad), "--store", url)
    assert code == 2 and f"{bad} is not JSON" in err and "line 2 column" in err
    good = tmp_path / "good.json"
    good.write_text('{"ok": false, "by": "bo"}')
    code, out, err = cli(capsys, "provide", keys["approve"], "--file", str(good), "--store", url)
    assert code == 0, err
    monkeypatch.setattr("sys.stdin", io.StringIO('"from stdin"'))
    code, out, err = cli(capsys, "provide", keys["note"], "--file", "-", "--store", url)
    assert code == 0, err
    code, out, _ = cli(capsys, "run", flow, "--run-id", "po1", "--store", url)
    assert code == 0
    code, out, _ = cli(capsys, "show", "po1", "send", "--store", url)
    assert "[False, 'from stdin']" in out


def test_waits_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = f"lmdb://{tmp_path / 'store'}"
    for args, message in [
        (["--reissue", "r", "n", "--run", "r"], "drop --run"),
        (["--run", "bad/id"], "run id"),
        (["--reissue", "bad/id", "n"], "run id"),
    ]:
        code, out, err = cli(capsys, "waits", *args, "--store", "memory://")
        assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err
    code, _, err = cli(capsys, "waits", "--store", url)
    assert code == 2 and "no store at" in err


def test_graph_draws_waiting_nodes(capsys: pytest.CaptureFixture[str], flow: str, url: str) -> None:
    suspend(capsys, flow, url)
    code, out, _ = cli(capsys, "graph", flow, "--run-id", "po1", "--store", url)
    assert code == 0
    assert "2 waiting" in out.splitlines()[1] and "classDef waiting" in out
    assert re.search(r'\["approve<br/>waiting"\]', out)


def test_a_held_waiting_run_is_running_and_a_gone_one_is_not_listed(
    capsys: pytest.CaptureFixture[str], flow: str, tmp_path: Path
) -> None:
    url = f"lmdb://{tmp_path / 'store'}"
    suspend(capsys, flow, url)
    with cli_store(url) as store, store.lock("po1"):
        code, out, _ = cli(capsys, "list", "--store", url)
        assert "running" in out and "suspended" not in out
    with cli_store(url) as store:
        store.delete("po1")
    code, out, err = cli(capsys, "waits", "--store", url)
    assert (code, out) == (0, "") and "no waits" in err  # gone with its run; gc removes them


@given(
    provided=st.booleans(),
    deadline=st.one_of(st.none(), st.integers(-10_000, 10_000)),
    has_default=st.booleans(),
    key=st.one_of(st.none(), st.just("fdw_" + "k" * 32)),
)
def test_a_wait_as_listed_agrees_with_its_state(
    provided: bool, deadline: int | None, has_default: bool, key: str | None
) -> None:
    now = datetime.now(UTC)
    started = now - timedelta(hours=1)
    expires = None if deadline is None else now + timedelta(seconds=deadline)
    wait = Wait("r", "n", key, "p", {}, started, expires, has_default, now if provided else None)
    record = wait_json(wait, now)
    assert record["state"] == (
        "provided" if provided else "expired" if wait.expired(now) else "waiting"
    )
    expected = {
        "provided": "the next run takes it",
        "waiting": "waits for input",
        "expired": "default applies on the next run" if has_default else "fails on the next run",
    }
    assert record["next_run"] == expected[record["state"]]
    assert "key" not in record and "fdw_" not in json.dumps(record)
    for moment in ("started_at", "expires_at", "provided_at"):
        text = record[moment]
        assert text is None or datetime.fromisoformat(text).utcoffset() == timedelta(0)
