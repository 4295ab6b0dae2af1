"""``flowdag gc`` through a real ``flowdag`` process: summary line, --json, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.gc_stores import cli, open_kind, options_of, spawn, url_of
from tests.test_gc import HOLD_GC, blobs_of, put

ROOT = Path(__file__).resolve().parents[1]


def orphans(tmp_path: Path, count: int = 3, kind: str = "lmdb") -> list[str]:
    """A store holding ``count`` old blobs that nothing references."""
    with open_kind(kind, tmp_path) as store:
        area = blobs_of(store)
        return [put(area, f"orphan {i}".encode() * 50) for i in range(count)]


@pytest.mark.parametrize("kind", ["lmdb", "json-encrypted"])
def test_gc_dry_run_then_gc(tmp_path: Path, kind: str) -> None:
    orphans(tmp_path, kind=kind)
    url = url_of(kind, tmp_path)
    key = options_of(kind).get("key")
    env = {"FLOWDAG_KEY": key} if key else {}
    dry = cli("gc", "--dry-run", "--store", url, **env)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith(f"{url}: would delete 0 runs, 3 blobs (")
    assert "would free" in dry.stdout and dry.stderr == ""
    done = cli("gc", "--store", url, **env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{url}: deleted 0 runs, 3 blobs (") and "freed)" in done.stdout
    again = cli("gc", "--store", url, "--json", **env)
    assert again.returncode == 0
    report = json.loads(again.stdout)
    assert report["blobs"] == 0 and report["runs"] == 0 and report["swept"] is True
    assert set(report) >= {"runs", "blobs", "kv", "cache", "bytes_freed", "skipped", "dry_run"}


def test_gc_grace(tmp_path: Path) -> None:
    orphans(tmp_path)
    url = url_of("lmdb", tmp_path)
    kept = cli("gc", "--store", url, "--grace", "3h", "--json")
    assert json.loads(kept.stdout)["blobs"] == 0  # aged 2h: within 3h of grace
    assert json.loads(cli("gc", "--store", url, "--grace", "90m", "--json").stdout)["blobs"] == 3


@pytest.mark.parametrize(
    ("args", "flag"),
    [(["--grace", "1 hour"], "--grace"), (["--older-than", "soon"], "--older-than")],
)
def test_gc_bad_durations(tmp_path: Path, args: list[str], flag: str) -> None:
    orphans(tmp_path)
    done = cli("gc", "--store", url_of("lmdb", tmp_path), *args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"flowdag: error: {flag}=") and "'7d'" in done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_gc_of_no_store(tmp_path: Path) -> None:
    done = cli("gc", "--store", f"lmdb://{tmp_path / 'none'}")
    assert done.returncode == 2 and "no store at" in done.stderr
    assert not (tmp_path / "none").exists()  # nothing created


def test_second_gc_says_it_skips(tmp_path: Path) -> None:
    names = orphans(tmp_path)
    url = url_of("lmdb", tmp_path)
    proc = spawn(HOLD_GC, url)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        done = cli("gc", "--store", url)
        as_json = cli("gc", "--store", url, "--json")
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert done.returncode == 0 and done.stdout == ""
    assert done.stderr == f"flowdag: another gc is collecting {url} (pid {proc.pid}); skipping\n"
    assert json.loads(as_json.stdout)["busy"] is True
    with open_kind("lmdb", tmp_path) as store:
        assert all(blobs_of(store).exists(sha256) for sha256 in names)


def test_help_lists_gc_and_compact() -> None:
    top = cli("--help")
    assert " gc " in top.stdout
    store = cli("store", "--help")
    assert "compact" in store.stdout
    gc = cli("gc", "--help")
    for flag in ("--dry-run", "--older-than", "--grace", "--store", "--json"):
        assert flag in gc.stdout


def test_gc_older_than_and_a_running_run(tmp_path: Path) -> None:
    from tests.gc_stores import held_elsewhere
    from tests.test_gc_runs import start

    with open_kind("lmdb", tmp_path) as store:
        start(store, "recent")  # finished five minutes ago
        start(store, "busy")
    url = url_of("lmdb", tmp_path)
    kept = cli("gc", "--store", url, "--older-than", "1h")
    assert kept.returncode == 0 and kept.stdout.startswith(f"{url}: deleted 0 runs, 0 blobs")
    with held_elsewhere("lmdb", tmp_path, "busy") as pid:
        done = cli("gc", "--store", url, "--older-than", "1m")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert (
        lines[0].startswith("busy: skipped: run 'busy' is locked by pid ") and str(pid) in lines[0]
    )
    assert lines[1].startswith(f"{url}: deleted 1 run, 0 blobs") and "1 run skipped" in lines[1]
    with open_kind("lmdb", tmp_path) as store:
        assert store.list_runs() == ["busy"]
