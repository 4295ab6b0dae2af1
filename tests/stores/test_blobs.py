"""The blob area under large outputs, and `flowdag.Ref`: every area kind, real files.

Areas: a directory store's (plain and with a key) and a memory store's. Round
trips from empty to tens of MiB, streaming both ways without holding the value,
dedup, damage and absence, keyed names and encrypted contents, permissions,
uris that could escape the store, the collector's primitives, and a Ref as a
stored value on every store kind. Kill tests are in ``test_blob_kills.py``.
"""

from __future__ import annotations

import copy
import hashlib
import os
import pickle
import stat
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowdag
from flowdag import BlobMissingError, CorruptStateError, FlowdagError, Ref, StoreError
from flowdag.codec import Codec
from flowdag.errors import DecryptionError, InvalidArgumentError
from flowdag.json_codec import JSONCodec
from flowdag.refs import fields_of, ref_from, sha256_of_uri
from flowdag.state import NodeState, NodeStatus, RunState
from flowdag.stores import open_store
from flowdag.stores._blobdir import DirectoryBlobs
from flowdag.stores._blobmem import MemoryBlobs
from flowdag.stores._blobs import BlobArea, RefSource
from flowdag.stores._crypto import Cipher, generate_key
from tests.stores.conformance import ROOT

KEY = generate_key()
OTHER_KEY = generate_key()
MiB = 1 << 20
KINDS = ["plain", "encrypted", "memory"]
DISK = ["plain", "encrypted"]


def make_area(kind: str, root: Path, **options: Any) -> BlobArea:
    if kind == "memory":
        return MemoryBlobs()
    cipher = Cipher(KEY) if kind == "encrypted" else None
    return DirectoryBlobs(root, cipher=cipher, **options)


@pytest.fixture(params=KINDS)
def area(request: pytest.FixtureRequest, tmp_path: Path) -> BlobArea:
    return make_area(request.param, tmp_path)


@pytest.fixture(params=DISK)
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> DirectoryBlobs:
    found = make_area(request.param, tmp_path)
    assert isinstance(found, DirectoryBlobs)
    return found


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mixed(size: int, seed: int = 0) -> bytes:
    """Half random, half repetitive: zstd has work to do, and cannot shrink it all."""
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB, repetitive
    noise = os.urandom(64 * 1024)
    out = bytearray()
    while len(out) < size:
        out += block
        out += noise
    return bytes(out[:size])


def file_of(area: DirectoryBlobs, data: bytes) -> Path:
    return Path(area.locate(area.name_of(sha(data))))


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1000, MiB - 1, MiB, MiB + 1, 3 * MiB + 17])
def test_round_trip(area: BlobArea, size: int) -> None:
    data = mixed(size, seed=size)
    info = area.put(data)
    assert (info.sha256, info.size, info.uri) == (sha(data), size, f"blob:sha256:{sha(data)}")
    # zstd when it takes a twentieth off the first MiB (mixed() starts with a
    # repetitive block); one byte does not shrink, so it is stored as it is.
    assert info.compression == (None if size == 1 else area.compression)
    assert area.exists(info.sha256)
    assert area.read(info.sha256, size=size) == data
    assert area.read(info.sha256) == data  # the size is optional; the hash is always checked
    with area.open(info.sha256) as stream:
        assert stream.read(7) == data[:7]
        assert stream.read() == data[7:]
        assert stream.read() == b""


def test_large_value_round_trip(area: BlobArea) -> None:
    data = mixed(40 * MiB, seed=1)
    info = area.put(data)
    assert area.read(info.sha256, size=info.size) == data
    if isinstance(area, DirectoryBlobs):
        assert info.stored_size == os.path.getsize(area.locate(area.name_of(info.sha256)))
        assert info.stored_size < info.size  # zstd took the repetitive half


def test_empty_value_is_one_blob(area: BlobArea) -> None:
    first = area.put(b"")
    with area.writer() as writer:
        pass
    assert writer.info == first
    assert len(area.entries()) == 1
    assert area.read(first.sha256, size=0) == b""


@pytest.mark.parametrize("kind", DISK)
@pytest.mark.parametrize("piece", [1000, MiB, 5 * MiB])
def test_incompressible_bytes_are_stored_as_they_are(tmp_path: Path, kind: str, piece: int) -> None:
    area = make_area(kind, tmp_path)
    assert isinstance(area, DirectoryBlobs)
    noise, text = os.urandom(3 * MiB), b"flowdag " * (3 * MiB // 8)
    infos = []
    for data in (noise, text, noise[:MiB] + text):  # the first MiB decides
        with area.writer() as writer:
            for part in chunks(data, piece):
                writer.write(part)
        assert writer.info is not None
        infos.append(writer.info)
        assert area.read(sha(data), size=len(data)) == data
        assert area.exists(sha(data))
    assert [info.compression for info in infos] == [None, "zstd", None]
    assert infos[0].stored_size >= len(noise) and infos[1].stored_size < MiB // 10
    # What a ref records is what the file holds: a second put of the same bytes
    # (dedup) reads it back from the file's header.
    assert area.put(noise).compression is None and area.put(text).compression == "zstd"


def test_stored_size_and_no_compression(tmp_path: Path) -> None:
    area = DirectoryBlobs(tmp_path, compression=None)
    data = b"x" * 10_000
    info = area.put(data)
    assert info.compression is None
    assert info.stored_size == len(data) + 5  # the 5-byte blob header
    assert area.read(info.sha256) == data


def test_bad_compression_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="'zstd' or None"):
        DirectoryBlobs(tmp_path, compression="gzip")


# -- streaming ------------------------------------------------------------------------------


def test_streaming_write_and_read_hold_little(disk: DirectoryBlobs) -> None:
    piece = mixed(512 * 1024, seed=2)
    total = 64  # 32 MiB through the writer, 512 KiB at a time
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        with disk.writer() as writer:
            for i in range(total):
                chunk = piece[i:] + piece[:i]  # never the same bytes twice
                digest.update(chunk)
                writer.write(chunk)
                del chunk
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        seen = hashlib.sha256()
        with disk.open(digest.hexdigest(), size=total * len(piece)) as stream:
            while block := stream.read(MiB):
                seen.update(block)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert writer.info is not None and writer.info.sha256 == digest.hexdigest()
    assert writer.info.size == total * len(piece)
    assert seen.hexdigest() == digest.hexdigest()
    # Loosely: a few chunks' worth, far below the 32 MiB that went through.
    assert write_peak < 8 * MiB, write_peak
    assert read_peak < 8 * MiB, read_peak


def test_writer_is_a_binary_file(area: BlobArea) -> None:
    data = b"line one\nline two\n" * 1000
    with area.writer() as writer:
        assert writer.writable() and not writer.readable() and not writer.seekable()
        for part in chunks(data, 333):
            assert writer.write(memoryview(part)) == len(part)
        writer.write(bytearray(b"!"))
        assert writer.tell() == len(data) + 1
    assert writer.info is not None
    assert area.read(writer.info.sha256) == data + b"!"
    assert writer.closed
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"more")


def test_writer_discards_on_error(area: BlobArea) -> None:
    with pytest.raises(RuntimeError), area.writer() as writer:
        writer.write(b"half of a value")
        raise RuntimeError("the node failed")
    assert writer.info is None
    assert area.entries() == [] and area.temp_entries() == []
    assert not area.exists(sha(b"half of a value"))


def test_writer_closed_without_commit_is_discarded(area: BlobArea) -> None:
    writer = area.writer()
    writer.write(b"abandoned")
    writer.close()
    assert area.entries() == [] and area.temp_entries() == []
    with pytest.raises(ValueError, match="discarded"):
        writer.commit()


def test_commit_is_idempotent(area: BlobArea) -> None:
    writer = area.writer()
    writer.write(b"once")
    info = writer.commit()
    assert writer.commit() is info
    writer.close()  # after a commit: keeps the blob
    assert area.read(info.sha256) == b"once"


# -- dedup ------------------------------------------------------------------------------------


def test_same_bytes_are_one_blob(area: BlobArea) -> None:
    data = mixed(2 * MiB, seed=3)
    first = area.put(data)
    assert area.put(data) == first
    with area.writer() as writer:
        for part in chunks(data, 100_000):
            writer.write(part)
    assert writer.info == first
    assert len(area.entries()) == 1
    assert area.temp_entries() == []
    area.put(b"other")
    assert len(area.entries()) == 2


def test_put_of_an_existing_blob_does_not_write_it(disk: DirectoryBlobs) -> None:
    data = b"written once" * 100
    info = disk.put(data)
    path = file_of(disk, data)
    inode = path.stat().st_ino
    os.utime(path, (1000, 1000))
    assert disk.put(data) == info
    after = path.stat()
    assert after.st_ino == inode  # not rewritten
    assert after.st_mtime > time.time() - 60  # but refreshed: see "Collection" in _blobs.py


# -- damage and absence -----------------------------------------------------------------------


def test_missing_blob(area: BlobArea) -> None:
    digest = sha(b"never stored")
    assert not area.exists(digest)
    with pytest.raises(BlobMissingError, match="missing") as caught:
        area.read(digest, origin="run 'r1', node 'fetch'")
    assert isinstance(caught.value, StoreError)
    assert "run 'r1', node 'fetch'" in str(caught.value)
    assert digest in str(caught.value)


@pytest.mark.parametrize("compression", ["zstd", None])
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_changed_byte_is_refused(tmp_path: Path, compression: str | None, where: str) -> None:
    for kind in DISK:
        area = make_area(kind, tmp_path / kind, compression=compression)
        assert isinstance(area, DirectoryBlobs)
        data = mixed(3 * MiB, seed=4)
        area.put(data)
        path = file_of(area, data)
        content = bytearray(path.read_bytes())
        # The end: the last byte, except zstd's empty closing block, whose change can leave
        # every content byte intact (reads check the content, which is still right).
        last = len(content) - (20 if kind == "plain" and compression else 1)
        at = {"start": 5 if kind == "plain" else 30, "middle": len(content) // 2}.get(where, last)
        content[at] ^= 0x01
        path.write_bytes(bytes(content))
        with pytest.raises(CorruptStateError) as caught:
            area.read(sha(data), size=len(data), origin="run 'r1', node 'n'")
        assert str(path) in str(caught.value), caught.value
        assert "run 'r1', node 'n'" in str(caught.value)


@pytest.mark.parametrize("cut", [0, 4, 5, 25, 100, -1])
def test_truncated_blob_is_refused(disk: DirectoryBlobs, cut: int) -> None:
    data = mixed(2 * MiB + 5, seed=5)
    disk.put(data)
    path = file_of(disk, data)
    content = path.read_bytes()
    path.write_bytes(content[:cut])
    with pytest.raises(CorruptStateError, match=str(path).replace(".", r"\.")):
        disk.read(sha(data), size=len(data))


def test_truncated_encrypted_blob_at_a_chunk_boundary(tmp_path: Path) -> None:
    area = DirectoryBlobs(tmp_path, cipher=Cipher(KEY), compression=None)
    data = os.urandom(3 * MiB)  # three full chunks and an empty final one
    area.put(data)
    path = file_of(area, data)
    content = path.read_bytes()
    one_chunk = 5 + 12 + MiB + 16
    path.write_bytes(content[: 5 + 16 + 2 * one_chunk])  # two whole chunks, nothing after
    with pytest.raises(DecryptionError, match="no final chunk"):
        area.read(sha(data))


@pytest.mark.parametrize(
    ("size", "lengths"),
    [
        (0, [0]),
        (MiB - 1, [MiB - 1]),
        (MiB, [MiB]),  # a full chunk with nothing after it is the final one
        (MiB + 1, [MiB, 1]),
        (2 * MiB, [MiB, MiB]),
    ],
)
@pytest.mark.parametrize("piece", [MiB, 333_333, 3 * MiB])
def test_encrypted_chunks_are_full_but_the_last(
    tmp_path: Path, size: int, lengths: list[int], piece: int
) -> None:
    area = DirectoryBlobs(tmp_path, cipher=Cipher(KEY), compression=None)
    data = os.urandom(size)
    with area.writer() as writer:
        for part in chunks(data, piece):
            writer.write(part)
    content = file_of(area, data).read_bytes()
    offset, found = 5 + 16, []
    while offset < len(content):
        final, length = content[offset], int.from_bytes(content[offset + 1 : offset + 5], "little")
        found.append((final, length))
        offset += 5 + 12 + length + 16
    assert found == [(i == len(lengths) - 1, n) for i, n in enumerate(lengths)]
    assert area.read(sha(data), size=size) == data


def test_blob_of_other_bytes_is_refused(disk: DirectoryBlobs) -> None:
    # A whole valid blob file moved under another blob's name: the hash catches it.
    disk.put(b"first value")
    disk.put(b"second value")
    file_of(disk, b"second value").write_bytes(file_of(disk, b"first value").read_bytes())
    with pytest.raises(CorruptStateError, match="does not match its sha256"):
        disk.read(sha(b"second value"))


def test_wrong_size_in_ref_is_refused(area: BlobArea) -> None:
    info = area.put(b"twelve bytes")
    with pytest.raises(CorruptStateError, match="holds more than the 5 bytes"):
        area.read(info.sha256, size=5)
    with pytest.raises(CorruptStateError, match="holds 12 bytes, not the 20"):
        area.read(info.sha256, size=20)


def test_damaged_memory_blob_is_refused() -> None:
    area = MemoryBlobs()
    info = area.put(b"kept in memory")
    area._blobs[info.sha256] = (b"changed bytes!", time.time())
    with pytest.raises(CorruptStateError, match=f"memory://blobs/{info.sha256}"):
        area.read(info.sha256)


def test_streamed_read_raises_by_the_end(tmp_path: Path) -> None:
    # Damage near the end of an uncompressed blob: the first reads pass, a later one raises.
    area = DirectoryBlobs(tmp_path, compression=None)
    data = mixed(4 * MiB, seed=6)
    area.put(data)
    path = file_of(area, data)
    content = bytearray(path.read_bytes())
    content[-1] ^= 0xFF
    path.write_bytes(bytes(content))
    with area.open(sha(data)) as stream:
        assert stream.read(MiB) == data[:MiB]
        with pytest.raises(CorruptStateError, match="does not match its sha256"):
            while stream.read(MiB):
                pass


# -- encryption --------------------------------------------------------------------------------


def test_encrypted_names_reveal_nothing(tmp_path: Path) -> None:
    data = b"TOP-SECRET-PAYLOAD" * 1000
    area = DirectoryBlobs(tmp_path / "a", cipher=Cipher(KEY), compression=None)
    info = area.put(data)
    name = area.name_of(info.sha256)
    assert name != info.sha256 and len(name) == 64
    assert [entry.name for entry in area.entries()] == [name]
    files = [p.name for p in (tmp_path / "a").rglob("*") if p.is_file()]
    assert info.sha256 not in "".join(files)
    # Same key, another area (or process): the same name. Another key: another name.
    same = DirectoryBlobs(tmp_path / "b", cipher=Cipher(KEY))
    other = DirectoryBlobs(tmp_path / "c", cipher=Cipher(OTHER_KEY))
    assert same.name_of(info.sha256) == name
    assert same.put(data).sha256 == info.sha256
    assert [e.name for e in same.entries()] == [name]
    assert other.name_of(info.sha256) not in (name, info.sha256)
    # The contents: no plaintext on disk, even uncompressed.
    content = Path(area.locate(name)).read_bytes()
    assert b"TOP-SECRET" not in content
    assert content.startswith(b"FDB2")


def test_encrypted_blob_unreadable_without_key(tmp_path: Path) -> None:
    data = b"secret" * 100
    area = DirectoryBlobs(tmp_path, cipher=Cipher(KEY))
    area.put(data)
    name = area.name_of(sha(data))
    # Under the name a keyless area would look for: refused, not read as plain.
    plain = DirectoryBlobs(tmp_path)
    with pytest.raises(BlobMissingError):
        plain.read(sha(data))
    target = Path(plain.locate(sha(data)))
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    target.write_bytes(Path(area.locate(name)).read_bytes())
    with pytest.raises(DecryptionError, match="encrypted; open the store with its key"):
        plain.read(sha(data))
    # Another key: another name, and the file itself fails its tag.
    wrong = DirectoryBlobs(tmp_path, cipher=Cipher(OTHER_KEY))
    moved = Path(wrong.locate(wrong.name_of(sha(data))))
    moved.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    moved.write_bytes(Path(area.locate(name)).read_bytes())
    with pytest.raises(DecryptionError, match="wrong key"):
        wrong.read(sha(data))


def test_plain_blob_under_a_key_is_refused(tmp_path: Path) -> None:
    plain = DirectoryBlobs(tmp_path)
    plain.put(b"plain")
    keyed = DirectoryBlobs(tmp_path, cipher=Cipher(KEY))
    target = Path(keyed.locate(keyed.name_of(sha(b"plain"))))
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    target.write_bytes(file_of(plain, b"plain").read_bytes())
    with pytest.raises(DecryptionError, match="not encrypted"):
        keyed.read(sha(b"plain"))


def test_encrypted_area_is_not_pickled(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="key"):
        pickle.dumps(DirectoryBlobs(tmp_path, cipher=Cipher(KEY)))
    with pytest.raises(TypeError, match="one process"):
        pickle.dumps(MemoryBlobs())
    plain = pickle.loads(pickle.dumps(DirectoryBlobs(tmp_path, compression=None)))
    assert (plain.root, plain.compression) == (tmp_path, None)


# -- files: permissions, links, names -----------------------------------------------------------


def test_files_are_private(disk: DirectoryBlobs) -> None:
    old = os.umask(0o022)
    try:
        info = disk.put(b"private")
        writer = disk.writer()
        writer.write(b"in progress")
        temp = disk.temp_entries()
        assert len(temp) == 1
        temp_mode = stat.S_IMODE((disk.path / "tmp" / temp[0].name).stat().st_mode)
        writer.close()
    finally:
        os.umask(old)
    path = Path(disk.locate(disk.name_of(info.sha256)))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert temp_mode == 0o600
    for directory in (disk.path, path.parent, disk.path / "tmp"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_layout(disk: DirectoryBlobs) -> None:
    info = disk.put(b"where is it")
    name = disk.name_of(info.sha256)
    assert disk.locate(name) == str(disk.root / "blobs" / name[:2] / name)
    assert Path(disk.locate(name)).is_file()


def test_links_are_not_followed(tmp_path: Path) -> None:
    area = DirectoryBlobs(tmp_path / "store")
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "blobs").symlink_to(outside)
    with pytest.raises(StoreError, match="symbolic link"):
        area.put(b"x")
    assert list(outside.iterdir()) == []


def test_planted_link_as_a_blob_is_refused(tmp_path: Path) -> None:
    area = DirectoryBlobs(tmp_path)
    info = area.put(b"real")
    path = Path(area.locate(info.sha256))
    secret = tmp_path / "secret"
    secret.write_bytes(b"not yours")
    path.unlink()
    path.symlink_to(secret)
    with pytest.raises(StoreError, match="symbolic link"):
        area.read(info.sha256)
    with pytest.raises(StoreError, match="symbolic link"):
        area.put(b"real")  # refreshing it must not touch the target either
    assert secret.read_bytes() == b"not yours"


@pytest.mark.parametrize(
    "uri",
    [
        "blob:sha256:../../../etc/passwd",
        "blob:sha256:" + "a" * 63,
        "blob:sha256:" + "a" * 65,
        "blob:sha256:" + "A" * 64,
        "blob:sha256:" + "a" * 62 + "/a",
        "blob:sha256:" + "g" * 64,
        "blob:sha512:" + "a" * 64,
        "/etc/passwd",
        "",
        None,
    ],
)
def test_uri_that_is_not_a_blob_name_is_refused(uri: Any) -> None:
    with pytest.raises(CorruptStateError, match="not 'blob:sha256:'"):
        sha256_of_uri(uri)
    stored = fields_of(Ref.for_blob("a" * 64, 1, 1)) | {"uri": uri}
    with pytest.raises(CorruptStateError, match="invalid ref"):
        ref_from(stored)


@pytest.mark.parametrize("name", ["../" + "a" * 61, "a" * 63, "A" * 64, "x" * 64, ""])
def test_delete_refuses_what_is_not_a_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(StoreError, match="not a blob name"):
        DirectoryBlobs(tmp_path).delete(name)


@pytest.mark.parametrize("name", ["../x.tmp", ".hidden.tmp", "a" * 64, "x/y.tmp"])
def test_remove_temp_refuses_what_is_not_a_temp_file(tmp_path: Path, name: str) -> None:
    with pytest.raises(StoreError, match="not a temp file"):
        DirectoryBlobs(tmp_path).remove_temp(name)


# -- what the collector uses ----------------------------------------------------------------------


def test_entries_and_delete(area: BlobArea) -> None:
    infos = [area.put(mixed(n * 1000, seed=n)) for n in (1, 2, 3)]
    entries = {entry.name: entry for entry in area.entries()}
    assert set(entries) == {area.name_of(info.sha256) for info in infos}
    for info in infos:
        entry = entries[area.name_of(info.sha256)]
        assert entry.stored_size == info.stored_size
        assert time.time() - 60 < entry.mtime <= time.time() + 1
    victim = area.name_of(infos[0].sha256)
    # Not older than the cutoff: kept.
    assert area.delete(victim, older_than=time.time() - 3600) == 0
    assert area.exists(infos[0].sha256)
    assert area.delete(victim, older_than=time.time() + 60) == infos[0].stored_size
    assert not area.exists(infos[0].sha256)
    assert area.delete(victim) == 0  # gone already
    assert area.delete(area.name_of(infos[1].sha256)) == infos[1].stored_size
    assert [e.name for e in area.entries()] == [area.name_of(infos[2].sha256)]
    assert area.temp_entries() == []


def test_delete_then_put_writes_again(area: BlobArea) -> None:
    info = area.put(b"comes back")
    area.delete(area.name_of(info.sha256))
    assert area.put(b"comes back") == info
    assert area.read(info.sha256) == b"comes back"


def test_temp_leftovers_are_listed_and_removed(disk: DirectoryBlobs) -> None:
    writer = disk.writer()
    writer.write(b"x" * 5000)
    # A writer killed here leaves its temp file: simulate by forgetting this one.
    leftovers = disk.temp_entries()
    assert [entry.name.endswith(".tmp") for entry in leftovers] == [True]
    assert disk.entries() == []
    assert disk.remove_temp(leftovers[0].name) == leftovers[0].stored_size
    assert disk.temp_entries() == []
    writer.close()
    assert disk.remove_temp(leftovers[0].name) == 0


def test_blob_moved_aside_by_a_cut_delete_is_put_back(disk: DirectoryBlobs) -> None:
    info = disk.put(b"live blob")
    name = disk.name_of(info.sha256)
    path = Path(disk.locate(name))
    aside = disk.path / "tmp" / f"{name}.0123abcd.gc.tmp"
    aside.parent.mkdir(mode=0o700, exist_ok=True)
    path.rename(aside)  # where a delete killed after its first rename leaves it
    assert not disk.exists(info.sha256)
    [leftover] = disk.temp_entries()
    assert disk.remove_temp(leftover.name) == 0
    assert disk.read(info.sha256) == b"live blob"
    assert disk.temp_entries() == []


def test_memory_area_has_no_temp_area() -> None:
    area = MemoryBlobs()
    assert area.temp_entries() == [] and area.remove_temp("x.tmp") == 0
    assert area.locate("ab") == "memory://blobs/ab"


# -- Ref -----------------------------------------------------------------------------------------


def make_ref(**more: Any) -> Ref:
    return Ref.for_blob(sha(b"payload"), 7, 20, **more)


def test_ref_fields() -> None:
    when = datetime(2027, 1, 1, tzinfo=UTC)
    ref = make_ref(expires_at=when, extracted={"rows": 3}, preview=[1], preview_truncated=True)
    assert ref.uri == "blob:sha256:" + sha(b"payload")
    assert (ref.sha256, ref.size, ref.stored_size, ref.compression) == (
        sha(b"payload"),
        7,
        20,
        "zstd",
    )
    assert (ref.expires_at, ref.extracted, ref.preview, ref.preview_truncated) == (
        when,
        {"rows": 3},
        [1],
        True,
    )
    assert ref.encoding == "raw" and not ref.bound
    assert flowdag.Ref is Ref


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sha256": "A" * 64}, "sha256 must be 64 lowercase hex"),
        ({"size": -1}, "size must be an int >= 0"),
        ({"stored_size": 1.5}, "stored_size must be an int"),
        ({"compression": "gzip"}, "compression must be 'zstd' or None"),
        ({"expires_at": datetime(2027, 1, 1)}, "expires_at must be an aware datetime"),
        ({"extracted": {1: 2}}, "extracted must be a dict with str keys"),
        ({"preview_truncated": 1}, "preview_truncated must be a bool"),
        ({"encoding": ""}, "encoding must be a non-empty str"),
        (
            {"uri": "blob:sha256:" + "b" * 64},
            "uri .* must be 'blob:sha256:' followed by its sha256",
        ),
    ],
)
def test_ref_refuses_bad_fields(fields: dict[str, Any], message: str) -> None:
    stored = fields_of(make_ref())
    if "sha256" in fields:
        stored["uri"] = "blob:sha256:" + fields["sha256"]
    with pytest.raises(InvalidArgumentError, match=message):
        Ref(**(stored | fields))


def test_ref_equality_ignores_the_binding(tmp_path: Path) -> None:
    ref = make_ref(extracted={"mean": float("nan")})
    bound = ref.bind(RefSource(DirectoryBlobs(tmp_path)), "run 'r', node 'n'")
    assert bound == ref and hash(bound) == hash(ref) and repr(bound) == repr(ref)
    assert bound.bound and not ref.bound
    assert ref.bind(RefSource(MemoryBlobs())) == bound
    assert make_ref(preview="other") != ref
    assert ref != ref.sha256


def test_unbound_ref_says_how_to_bind() -> None:
    ref = make_ref()
    for read in (ref.load, ref.open):
        with pytest.raises(FlowdagError, match=r"not bound to a store.*ref\.bind"):
            read()


def test_ref_loads_and_opens(area: BlobArea) -> None:
    info = area.put(b"raw output bytes")
    ref = info.ref(extracted={"n": 16}).bind(RefSource(area), "run 'r1', node 'dump'")
    assert ref.load() == b"raw output bytes"
    with ref.open() as stream:
        assert stream.read(3) == b"raw"
        assert stream.read() == b" output bytes"


@pytest.mark.parametrize(
    "codec", [Codec(compress_threshold=None), JSONCodec()], ids=["msgpack", "json"]
)
def test_ref_of_an_encoded_value(area: BlobArea, codec: Any) -> None:
    value = {"rows": list(range(1000)), "when": datetime(2026, 1, 1, tzinfo=UTC)}
    info = area.put(codec.encode(value))
    ref = info.ref(encoding=codec.name).bind(RefSource(area, codec))
    assert ref.load() == value
    with pytest.raises(FlowdagError, match=r"use ref\.load"):
        ref.open()
    other = JSONCodec() if codec.name == "msgpack" else Codec()
    with pytest.raises(CorruptStateError, match="open the store with the codec that wrote it"):
        info.ref(encoding=codec.name).bind(RefSource(area, other)).load()


def test_bound_ref_reports_damage_and_absence(tmp_path: Path) -> None:
    area = DirectoryBlobs(tmp_path)
    info = area.put(b"will be damaged")
    ref = info.ref().bind(RefSource(area), "run 'nightly', node 'fetch'")
    path = Path(area.locate(info.sha256))
    path.write_bytes(path.read_bytes()[:-1] + b"!")
    with pytest.raises(CorruptStateError) as caught:
        ref.load()
    assert "run 'nightly', node 'fetch'" in str(caught.value) and str(path) in str(caught.value)
    path.unlink()
    with pytest.raises(BlobMissingError, match="run 'nightly', node 'fetch'"):
        ref.load()


_WORKER = """
import pickle, sys
ref = pickle.loads(sys.stdin.buffer.read())
print(ref.bound, flush=True)
if ref.bound:
    sys.stdout.buffer.write(ref.load())
else:
    try:
        ref.load()
    except Exception as exc:
        print(type(exc).__name__)
"""


def run_worker(ref: Ref) -> bytes:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", _WORKER],
        input=pickle.dumps(ref),
        capture_output=True,
        env=env,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_pickled_ref_reads_its_blob_in_another_process(tmp_path: Path) -> None:
    # What an executor's worker gets: the ref, a few hundred bytes, not the payload.
    area = DirectoryBlobs(tmp_path)
    data = mixed(5 * MiB, seed=7)
    ref = area.put(data).ref().bind(RefSource(area, Codec()))
    pickled = pickle.dumps(ref)
    assert len(pickled) < 2000
    assert pickle.loads(pickled) == ref
    assert run_worker(ref) == b"True\n" + data


@pytest.mark.parametrize("kind", ["encrypted", "memory"])
def test_pickled_ref_of_a_keyed_or_memory_area_arrives_unbound(tmp_path: Path, kind: str) -> None:
    area = make_area(kind, tmp_path)
    ref = area.put(b"stays here").ref().bind(RefSource(area))
    copy = pickle.loads(pickle.dumps(ref))
    assert copy == ref and not copy.bound
    assert run_worker(ref) == b"False\nFlowdagError\n"


# -- a Ref as a stored value, on every store kind ---------------------------------------------


@pytest.mark.parametrize("url", ["memory://", "lmdb://{}", "json://{}", "flatbuffers://{}"])
@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "key"])
def test_ref_in_a_run_saves_and_loads_equal(tmp_path: Path, url: str, key: str | None) -> None:
    if key is not None and url == "memory://":
        pytest.skip("a memory store has no key")
    when = datetime(2027, 1, 1, tzinfo=UTC)
    ref = make_ref(
        expires_at=when,
        extracted={"rows": 3, "cols": ("a", "b"), "nan": float("nan")},
        preview=[{"id": 1}],
        preview_truncated=True,
        encoding="msgpack",
    )
    state = RunState(
        run_id="r1",
        workflow="wf",
        nodes={
            "fetch": NodeState(status=NodeStatus.COMPLETED, attempts=1, output=ref),
            "both": NodeState(status=NodeStatus.COMPLETED, output={"refs": [ref, make_ref()]}),
        },
        data={"last": ref},
    )
    options = {} if key is None else {"key": key}
    with open_store(url.format(tmp_path / "store"), **options) as store:
        store.save(state)
        loaded = store.load("r1")
    assert loaded == state
    assert loaded.nodes["fetch"].output == ref
    assert type(loaded.nodes["fetch"].output) is Ref
    assert loaded.data["last"] == ref


# -- a property: any sequence of writes, abandons and deletes leaves only verified blobs ------


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["put", "stream", "abandon", "delete", "sweep_temp"]),
            st.integers(0, 3),
            st.sampled_from([0, 10, 100_000, 1_200_000]),
        ),
        max_size=12,
    )
)
def test_any_sequence_leaves_verified_blobs(
    tmp_path_factory: pytest.TempPathFactory, steps: list[Any]
) -> None:
    area = DirectoryBlobs(tmp_path_factory.mktemp("seq"), cipher=Cipher(KEY))
    # Deterministic values: the same seed and size is the same blob (dedup in the mix).
    values = {
        index: (hashlib.sha256(bytes([seed])).digest() * (size // 32 + 1))[:size]
        for index, (_, seed, size) in enumerate(steps)
    }
    live: dict[str, bytes] = {}
    abandoned = []
    for index, (action, _, _) in enumerate(steps):
        data = values[index]
        if action == "put":
            live[area.put(data).sha256] = data
        elif action == "stream":
            with area.writer() as writer:
                for part in chunks(data, 300_000):
                    writer.write(part)
            assert writer.info is not None
            live[writer.info.sha256] = data
        elif action == "abandon":
            writer = area.writer()
            writer.write(data[:1000])
            abandoned.append(writer)  # as if killed: its temp file stays
        elif action == "delete" and live:
            victim = sorted(live)[0]
            area.delete(area.name_of(victim))
            del live[victim]
        elif action == "sweep_temp":
            for entry in area.temp_entries():
                area.remove_temp(entry.name)
    names = {area.name_of(digest): digest for digest in live}
    assert {entry.name for entry in area.entries()} == set(names)
    for digest, data in live.items():
        assert area.read(digest, size=len(data)) == data
    for writer in abandoned:
        writer.close()
    assert area.temp_entries() == []


@pytest.mark.parametrize("compression", ["zstd", None])
def test_put_of_a_large_value_holds_about_one_copy(tmp_path: Path, compression: str | None) -> None:
    disk = DirectoryBlobs(tmp_path, cipher=Cipher(KEY), compression=compression)
    data = mixed(32 * MiB, seed=8)
    tracemalloc.start()
    try:
        info = disk.put(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB, peak  # the value itself is the caller's; put adds a few chunks
    assert disk.read(info.sha256, size=len(data)) == data


# -- what store verify and store convert use --------------------------------------------------


def test_check_reads_through(area: BlobArea) -> None:
    data = mixed(3 * MiB, seed=9)
    info = area.put(data)
    area.check(info.sha256, size=info.size)
    with pytest.raises(CorruptStateError):
        area.check(info.sha256, size=info.size + 1)
    with pytest.raises(BlobMissingError):
        area.check(sha(b"absent"))


@pytest.mark.parametrize("source_kind", KINDS)
@pytest.mark.parametrize("target_kind", KINDS)
def test_copy_between_areas(tmp_path: Path, source_kind: str, target_kind: str) -> None:
    source = make_area(source_kind, tmp_path / "source")
    target = make_area(target_kind, tmp_path / "target")
    data = mixed(2 * MiB + 3, seed=10)
    info = source.put(data)
    copied = target.copy_from(source, info.sha256, size=info.size)
    assert (copied.sha256, copied.size, copied.uri) == (info.sha256, info.size, info.uri)
    assert target.read(info.sha256, size=info.size) == data
    assert target.copy_from(source, info.sha256, size=info.size) == copied  # not again
    assert len(target.entries()) == 1 and target.temp_entries() == []
    with pytest.raises(BlobMissingError):
        target.copy_from(source, sha(b"absent"), size=6)


def test_copy_of_a_damaged_blob_leaves_nothing(tmp_path: Path) -> None:
    source = DirectoryBlobs(tmp_path / "source", compression=None)
    target = DirectoryBlobs(tmp_path / "target", cipher=Cipher(KEY))
    info = source.put(b"to be damaged" * 1000)
    path = Path(source.locate(info.sha256))
    path.write_bytes(path.read_bytes()[:-1] + b"?")
    with pytest.raises(CorruptStateError, match=str(path).replace(".", r"\.")):
        target.copy_from(source, info.sha256, size=info.size)
    assert target.entries() == [] and target.temp_entries() == []


# -- expiry --------------------------------------------------------------------------------------


def test_expired_ref_is_missing(area: BlobArea) -> None:
    info = area.put(b"short-lived")
    past = datetime(2020, 1, 1, tzinfo=UTC)
    expired = info.ref(expires_at=past).bind(RefSource(area), "run 'r1', node 'tmp'")
    for read in (expired.load, expired.open):
        with pytest.raises(BlobMissingError, match=r"run 'r1', node 'tmp' expired at 2020-01-01"):
            read()
    later = info.ref(expires_at=datetime(2999, 1, 1, tzinfo=UTC)).bind(RefSource(area))
    assert later.load() == b"short-lived"


@pytest.mark.parametrize("digest", ["../" * 21 + "a", "a" * 63, "A" * 64, "/etc/passwd", ""])
def test_area_refuses_what_is_not_a_hash(area: BlobArea, digest: str) -> None:
    for call in (area.exists, area.read, area.open, area.check, area.name_of):
        with pytest.raises(StoreError, match="is not a sha256"):
            call(digest)


def test_copies_of_a_ref_keep_their_binding() -> None:
    area = MemoryBlobs()
    ref = area.put(b"x").ref(extracted={"cols": ["a"]}).bind(RefSource(area), "run 'r'")
    assert copy.copy(ref) is ref
    deep = copy.deepcopy(ref)
    assert deep == ref and deep.bound and deep.load() == b"x"
    assert deep.extracted is not ref.extracted
