"""The CLI and outputs kept by reference: status, show, store convert and store verify.

Runs are made by `flowdag.run` (outputs above the inline limit become refs),
then looked at through `flowdag.cli.main`. Status and show read no blob (the
tests delete the blob files first); convert copies blobs with their runs;
verify reads every blob and names a missing or damaged one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag.cli import main
from flowdag.state import AttemptInfo, NodeState, NodeStatus, RunState
from flowdag.stores import open_store

ROWS = [{"id": i, "name": f"row {i}"} for i in range(20_000)]  # ~400 KiB encoded
DUMP = bytes(range(256)) * 1200  # 300 KiB of raw bytes
KEY = flowdag.stores.generate_key()


def workflow() -> flowdag.DAG:
    wf = flowdag.Workflow("big")

    @wf.node(extract=lambda rows: {"rows": len(rows), "first": rows[0]["name"]},
             preview=lambda rows: rows[:3])  # fmt: skip
    def fetch() -> list[dict[str, Any]]:
        return ROWS

    @wf.node(deps=["fetch"])
    def count(fetch: list[dict[str, Any]]) -> int:
        return len(fetch)

    @wf.node
    def dump(ctx: flowdag.Context) -> None:
        with ctx.output_file() as f:
            f.write(DUMP)

    return wf.build()


def make_run(url: str, run_id: str = "r1") -> None:
    with open_store(url) as store:
        assert flowdag.run(workflow(), run_id=run_id, store=store).ok


def blob_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "blobs").glob("??/*") if p.is_file())


def lines_of(out: str) -> dict[str, str]:
    return {line.split(":")[0]: line for line in out.splitlines() if ": " in line}


@pytest.fixture
def store_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path / "s"


# -- status and show: the ref's fields, never the blob -----------------------------------------


@pytest.mark.parametrize("scheme", ["lmdb", "json", "flatbuffers"])
def test_status_shows_size_and_extracted_fields_without_reading_a_blob(
    store_dir: Path, scheme: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"{scheme}://{store_dir}"
    make_run(url)
    for path in blob_files(store_dir):
        path.unlink()  # status reads no blob: it works without them
    assert main(["status", "r1", "--store", url]) == 0
    out = capsys.readouterr().out
    header, *rows = out.splitlines()[1:5]
    assert header.split()[-1] == "ref"
    table = {row.split()[0]: row for row in rows}
    assert "KiB" in table["fetch"] and "rows=20000 first='row 0'" in table["fetch"]
    assert table["dump"].rstrip().endswith("300.0 KiB")
    assert "KiB" not in table["count"]  # inline: no ref

    assert main(["status", "r1", "--json", "--store", url]) == 0
    nodes = json.loads(capsys.readouterr().out)["nodes"]
    ref = nodes["fetch"]["ref"]
    assert ref["uri"] == f"blob:sha256:{ref['sha256']}" and ref["size"] > 256 * 1024
    assert ref["extracted"] == {"rows": 20000, "first": "row 0"}
    assert ref["preview"] == ROWS[:3] and ref["preview_truncated"] is False
    assert ref["compression"] == "zstd" and ref["expires_at"] is None
    assert ref["encoding"] == ("json" if scheme == "json" else "msgpack")
    assert nodes["dump"]["ref"]["size"] == len(DUMP) and nodes["dump"]["ref"]["encoding"] == "raw"
    assert nodes["count"]["ref"] is None and "output" not in nodes["count"]

    assert main(["status", "r1", "--json", "--outputs", "--store", url]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["nodes"]["fetch"]["output"]["$ref"]["sha256"] == ref["sha256"]
    assert document["nodes"]["count"]["output"] == 20000


def test_show_gives_the_ref_and_loads_the_value_when_asked(
    store_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"lmdb://{store_dir}"
    make_run(url)
    assert main(["show", "r1", "--store", url]) == 0
    brief = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "ref " in brief["fetch"] and "rows=20000" in brief["fetch"]
    assert "ref 300.0 KiB" in brief["dump"]

    assert main(["show", "r1", "fetch", "--store", url]) == 0
    out = capsys.readouterr().out
    assert "output: kept by reference" in out and "expires never" in out
    assert "{'rows': 20000, 'first': 'row 0'}" in out
    assert "{'id': 0, 'name': 'row 0'}" in out  # the preview
    assert "flowdag show r1 fetch --value" in out and "row 19999" not in out

    assert main(["show", "r1", "fetch", "--value", "--store", url]) == 0
    out = capsys.readouterr().out
    assert "value (read from the blob, checked):" in out and "--json shows all" in out

    assert main(["show", "r1", "fetch", "--json", "--store", url]) == 0
    assert json.loads(capsys.readouterr().out)["output"]["$ref"]["extracted"]["rows"] == 20000
    assert main(["show", "r1", "fetch", "--json", "--value", "--store", url]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == ROWS

    for path in blob_files(store_dir):
        path.unlink()
    assert main(["show", "r1", "fetch", "--store", url]) == 0  # the ref needs no blob
    capsys.readouterr()
    assert main(["show", "r1", "fetch", "--value", "--store", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flowdag: error: blob blob:sha256:") and "is missing" in err
    assert "run 'r1', node 'fetch'" in err and len(err.splitlines()) == 1
    assert main(["show", "r1", "--value", "--store", url]) == 2  # --value needs a node
    assert "--value goes with NODE" in capsys.readouterr().err


# -- store convert and verify ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst"),
    [("lmdb", "json"), ("json", "flatbuffers"), ("flatbuffers", "lmdb"), ("json", "memory")],
)
def test_convert_copies_blobs_and_verify_reads_them(
    tmp_path: Path,
    store_dir: Path,
    src: str,
    dst: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src_url = f"{src}://{store_dir}"
    dst_url = "memory://" if dst == "memory" else f"{dst}://{tmp_path / 'dst'}"
    make_run(src_url, "r1")
    make_run(src_url, "r2")  # the same outputs: the same blobs
    assert main(["store", "convert", src_url, dst_url]) == 0
    out = capsys.readouterr().out
    lines = lines_of(out)
    assert lines["r1"].startswith("r1: copied (2 blobs: 2 new, ")
    assert lines["r2"] == "r2: copied (2 blobs: none new)" or "re-encoded" in lines["r2"]
    assert out.splitlines()[-1].startswith(f"copied 2 of 2 runs from {src_url} to {dst_url} (")
    if dst == "memory":
        return
    with open_store(dst_url) as store:
        state = store.load("r1")
        assert state.nodes["fetch"].output.load() == ROWS
        assert state.nodes["dump"].output.load() == DUMP
    assert main(["store", "verify", dst_url]) == 0
    out = capsys.readouterr().out
    assert lines_of(out)["r1"] == "r1: ok (2 refs)"
    assert (
        out.splitlines()[-1]
        == f"checked 2 runs (4 refs read and hashed right) in {dst_url}: all ok"
    )


def test_convert_between_encrypted_and_plain_stores(
    tmp_path: Path, store_dir: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("FLOWDAG_KEY", KEY)  # every disk store the CLI opens is encrypted
    with open_store(f"lmdb://{store_dir}", key=KEY) as store:
        assert flowdag.run(workflow(), run_id="r1", store=store).ok
    assert main(["store", "convert", f"lmdb://{store_dir}", f"json://{tmp_path / 'dst'}"]) == 0
    assert "r1: copied (2 blobs: 2 new" in capsys.readouterr().out
    names = {path.name for path in blob_files(tmp_path / "dst")}
    with open_store(f"json://{tmp_path / 'dst'}", key=KEY) as store:
        state = store.load("r1")
        assert state.nodes["fetch"].output.load() == ROWS
        assert state.nodes["dump"].output.sha256 not in names  # keyed names: no plain hash
    assert main(["store", "verify", f"json://{tmp_path / 'dst'}"]) == 0
    monkeypatch.delenv("FLOWDAG_KEY")
    with open_store("memory://") as plain:
        with open_store(f"json://{tmp_path / 'dst'}", key=KEY) as encrypted:
            flowdag.stores.transfer.copy_run(encrypted, plain, "r1")
        assert plain.load("r1").nodes["dump"].output.load() == DUMP


def test_convert_skips_a_run_whose_blob_is_missing_and_copies_the_others(
    tmp_path: Path, store_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src_url, dst_url = f"lmdb://{store_dir}", f"json://{tmp_path / 'dst'}"
    make_run(src_url, "r1")
    with open_store(src_url) as store:
        # Another run whose ctx.data holds a ref to a blob that is then removed.
        lost = store.blobs.put(b"lost" * 100_000).ref()
        store.save(RunState("r2", "wf", {"a": done(lost)}))
        path = Path(store.blobs.locate(store.blobs.name_of(lost.sha256)))
    path.unlink()
    assert main(["store", "convert", src_url, dst_url]) == 1
    out = capsys.readouterr().out
    lines = lines_of(out)
    assert lines["r1"].startswith("r1: copied")
    assert lines["r2"].startswith("r2: damaged in the source, skipped: run 'r2', node 'a': ")
    assert str(path) in lines["r2"] and "was not copied" in lines["r2"]
    assert out.splitlines()[-1].endswith("; 1 damaged in the source")
    with open_store(dst_url) as store:
        assert store.list_runs() == ["r1"]


def done(output: object, finished: datetime | None = None) -> NodeState:
    end = finished or datetime.now(UTC)
    return NodeState(NodeStatus.COMPLETED, 1, end, end, output, history=(AttemptInfo(1, end, end),))


def test_verify_names_damaged_and_missing_blobs_and_counts_expired_ones(
    store_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"flatbuffers://{store_dir}"
    make_run(url, "good")
    make_run(url, "bad")
    with open_store(url) as store:
        state = store.load("bad")
        fetch, dump = state.nodes["fetch"].output, state.nodes["dump"].output
        # "bad" gets its own blobs: damaged and removed on disk below.
        own = store.blobs.put(b"own" * 200_000).ref()
        gone = store.blobs.put(b"gone" * 200_000).ref()
        state.nodes["fetch"] = done(own)
        state.nodes["dump"] = done({"nested": [gone]})
        store.save(state)
        old = datetime.now(UTC) - timedelta(days=2)
        expired = store.blobs.put(b"x" * 100).ref(expires_at=old)
        store.save(RunState("stale", "wf", {"a": done(fetch), "b": done(expired)}))
        store.save(RunState("old", "wf", {"a": done(dump, old)}, ttl=timedelta(days=1)))
        damaged = Path(store.blobs.locate(store.blobs.name_of(own.sha256)))
        missing = Path(store.blobs.locate(store.blobs.name_of(gone.sha256)))
    content = bytearray(damaged.read_bytes())
    content[len(content) // 2] ^= 0x01
    damaged.write_bytes(content)
    missing.unlink()

    assert main(["store", "verify", url]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    verdicts = lines_of(out)
    assert verdicts["good"] == "good: ok (2 refs)"
    assert verdicts["stale"] == "stale: ok (1 ref, 1 expired)"
    assert verdicts["old"] == "old: expired, not checked"
    assert verdicts["bad"] == "bad: damaged: 2 refs to a missing or damaged blob"
    at = lines.index(verdicts["bad"])
    problems = "\n".join(lines[at + 1 : at + 3])
    assert "run 'bad', node 'fetch': blob " in problems and str(damaged) in problems
    assert "run 'bad', node 'dump': blob " in problems and str(missing) in problems
    assert "is missing" in problems and "damaged" in problems
    assert lines[-1] == (
        f"checked 3 runs (3 refs read and hashed right) in {url}: 1 damaged "
        "(2 missing or damaged blobs); 1 expired run; 1 expired ref"
    )


def test_status_shows_when_a_run_with_a_ttl_expires(
    store_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"lmdb://{store_dir}"
    with open_store(url) as store:
        assert flowdag.run(workflow(), run_id="r1", store=store, ttl="30d").ok
        expires_at = store.load("r1").expires_at
    make_run(url, "r2")
    assert main(["status", "r1", "--json", "--store", url]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["ttl"] == 30 * 86400 and document["expires_at"] == expires_at.isoformat()
    assert main(["status", "r1", "--store", url]) == 0
    local = expires_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert f"expires {local}" in capsys.readouterr().out.splitlines()[0]
    assert main(["status", "r2", "--json", "--store", url]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["ttl"] is None and document["expires_at"] is None
    assert main(["status", "r2", "--store", url]) == 0
    assert "expires" not in capsys.readouterr().out
