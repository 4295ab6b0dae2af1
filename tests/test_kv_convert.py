"""``flowdag store convert`` and the tables: kv values kept as blobs, and cached blob outputs.

A run in the source store sets a kv value above the inline limit (kept in a
blob, the entry holding its ref), counts itself in a kv counter, and caches a
node whose output is kept by reference. After a conversion of the whole
store, through `flowdag.cli.main`, the destination reads the value and the
counter; between stores of the same codec, a run there gets a cache hit
whose output loads (between JSON and msgpack stores the cache is left behind,
and the node runs again); ``store verify`` passes. A kv blob missing from
the source stops the copy of the tables, naming the blob.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import flowdag
from flowdag._kv_entries import Stored, parse_entry
from flowdag.cli import main
from flowdag.stores import Store, open_store
from tests.gc_stores import KEY

BIG = "kv value " * 40_000  # ~360 KB: above the inline limit, kept in a blob
OUTPUT = tuple(range(100_000))  # ~300 KB encoded: kept by reference


def workflow() -> flowdag.DAG:
    wf = flowdag.Workflow("convert")

    @wf.node(cache=True)
    def produce(ctx: flowdag.Context) -> list[int]:
        ctx.kv.set("big", BIG)
        ctx.kv.update("runs", lambda old: (old or 0) + 1)
        return list(OUTPUT)

    return wf.build()


def stored(store: Store, key: str) -> Stored:
    """The kv entry under ``key`` as the table keeps it (a value kept by reference: its ref)."""
    return parse_entry(store.ref_source, key, store.table_get("kv", key) or b"")


def url(kind: str, root: Path) -> str:
    return f"{kind.split('-')[0]}://{root}"


PAIRS = [
    ("lmdb", "json"),  # msgpack -> JSON: kv values re-encoded, the cache left behind
    ("json", "flatbuffers"),  # JSON -> msgpack
    ("flatbuffers", "lmdb"),  # the same codec: blobs copied as they are, cache hits
    ("lmdb-encrypted", "json-encrypted"),
    ("json-encrypted", "json-encrypted"),
]


@pytest.mark.parametrize(("source", "destination"), PAIRS)
def test_kv_blobs_and_cached_outputs_survive_a_conversion(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    source: str,
    destination: str,
) -> None:
    key = KEY if source.endswith("-encrypted") else None
    if key is not None:
        monkeypatch.setenv("FLOWDAG_KEY", key)  # every store the CLI opens is encrypted
    src_url, dst_url = url(source, tmp_path / "src"), url(destination, tmp_path / "dst")
    with open_store(src_url, key=key) as src:
        assert flowdag.run(workflow(), run_id="r1", store=src).ok
        assert stored(src, "big").by_ref
        recoded = src.codec.name != open_store(dst_url, key=key).codec.name
    capsys.readouterr()
    assert main(["store", "convert", src_url, dst_url]) == 0
    tables = next(line for line in capsys.readouterr().out.splitlines() if "tables" in line)
    blobs = 1 if recoded else 2  # the kv value's, and the cached output's
    assert f"tables: copied ({2 + (not recoded)} entries; {blobs} blob" in tables
    assert "re-encoded" in tables if recoded else "left behind" not in tables
    with open_store(dst_url, key=key) as dst:
        assert dst.kv().get("big") == BIG
        assert dst.kv().get("runs") == 1
        assert stored(dst, "big").by_ref
        result = flowdag.run(workflow(), run_id="r2", store=dst)
        assert result.ok
        hit = result.reasons["produce"].code == "cached"
        assert hit is not recoded  # a hit where the cache came along
        assert result.nodes["produce"].output.load() == list(OUTPUT)
        assert dst.kv().get("runs") == (2 if recoded else 1)
    assert main(["store", "verify", dst_url]) == 0
    assert main(["gc", "--store", dst_url, "--grace", "0s"]) == 0
    with open_store(dst_url, key=key) as dst:  # gc keeps what the entries hold
        assert dst.kv().get("big") == BIG


def test_a_missing_kv_blob_stops_the_copy_of_the_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src_url, dst_url = f"lmdb://{tmp_path / 'src'}", f"flatbuffers://{tmp_path / 'dst'}"
    with open_store(src_url) as src:
        src.kv().set("big", BIG)
        src.kv().set("small", 1)
        ref = stored(src, "big").value
        path = Path(src.blobs.locate(src.blobs.name_of(ref.sha256)))
    path.unlink()
    capsys.readouterr()
    assert main(["store", "convert", src_url, dst_url]) == 1
    out = capsys.readouterr().out
    tables = next(line for line in out.splitlines() if line.startswith("tables"))
    assert tables.startswith("tables: damaged in the source, not copied: kv entry 'big'")
    assert str(path) in tables and "no table entry was copied" in tables
    assert out.splitlines()[-1].endswith("; tables damaged in the source")
    with open_store(dst_url) as dst:
        assert dst.kv().items() == []
