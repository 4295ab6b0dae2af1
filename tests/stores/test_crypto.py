"""Encryption at rest (AES-256-GCM) for every disk store, and pickle only by opt-in per store.

The `Cipher` first (keys, nonces, associated data), then each disk store with a
key: values round-trip, no plaintext reaches the disk, a wrong or missing key is
a clear `DecryptionError`, and ciphertexts cannot be moved between entries,
runs or places in a journal. What encryption does not stop (rolling a whole run
back to an older copy of its files) is pinned too, as the README's threat
model says.
"""

from __future__ import annotations

import base64
import pickle
import shutil
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag.codec import Codec
from flowdag.errors import (
    CorruptStateError,
    DecryptionError,
    OptionalDependencyError,
    StoreError,
)
from flowdag.json_codec import JSONCodec
from flowdag.state import AttemptInfo, ErrorInfo, NodeRecord, NodeState, NodeStatus, RunState
from flowdag.stores import open_store
from flowdag.stores._crypto import KEY_ENV, MAGIC, Cipher, generate_key, is_sealed
from flowdag.stores._framing import journal as journal_of
from flowdag.stores._framing import read_journal
from flowdag.stores.base import Store
from flowdag.stores.transfer import copy_run

KEY = generate_key()
OTHER_KEY = generate_key()
STORES = ["lmdb", "json", "flatbuffers"]
SECRET = "TOP-SECRET-VALUE"
T0 = datetime(2026, 11, 22, 3, 4, 5, tzinfo=UTC)


# -- the cipher -------------------------------------------------------------------------


RAW = bytes(range(32))


@pytest.mark.parametrize(
    "key",
    [
        RAW,
        RAW.hex(),
        RAW.hex().upper(),
        base64.b64encode(RAW).decode(),
        base64.urlsafe_b64encode(RAW).decode().rstrip("="),
        f"  {RAW.hex()}\n",
    ],
    ids=["bytes", "hex", "HEX", "base64", "urlsafe-unpadded", "whitespace"],
)
def test_key_forms(key: bytes | str) -> None:
    sealed = Cipher(key).encrypt(b"x", b"aad")
    assert Cipher(RAW).decrypt(sealed, b"aad", "here") == b"x"


@pytest.mark.parametrize(
    "key",
    [b"short", RAW + b"!", "00" * 31, "not a key at all", "", 42, RAW.hex()[:-1]],
    ids=["5 bytes", "33 bytes", "31 hex bytes", "text", "empty", "int", "odd hex"],
)
def test_bad_keys(key: Any) -> None:
    with pytest.raises(StoreError, match="key"):
        Cipher(key)


def test_missing_cryptography_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes the import fail, as if the package were not installed.
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)
    with pytest.raises(OptionalDependencyError, match=r"pip install 'flowdag\[encrypt\]'"):
        Cipher(RAW)
    with pytest.raises(ImportError):  # also the builtin callers expect
        Cipher(RAW)


def test_nonces_are_fresh_and_ciphertexts_differ() -> None:
    cipher = Cipher(KEY)
    sealed = [cipher.encrypt(b"same plaintext", b"aad") for _ in range(20_000)]
    nonces = {s[len(MAGIC) : len(MAGIC) + 12] for s in sealed}
    assert len(nonces) == len(sealed)
    assert len(set(sealed)) == len(sealed)
    assert all(is_sealed(s) for s in sealed)


def test_associated_data_and_tampering() -> None:
    cipher = Cipher(KEY)
    sealed = cipher.encrypt(b"payload", b"run a/node x")
    assert cipher.decrypt(sealed, b"run a/node x", "x") == b"payload"
    with pytest.raises(DecryptionError, match="moved"):
        cipher.decrypt(sealed, b"run a/node y", "entry y")
    with pytest.raises(DecryptionError, match="wrong key"):
        Cipher(OTHER_KEY).decrypt(sealed, b"run a/node x", "x")
    for at in range(len(sealed)):
        damaged = bytearray(sealed)
        damaged[at] ^= 0x01
        with pytest.raises(DecryptionError):
            cipher.decrypt(bytes(damaged), b"run a/node x", "x")
    for cut in range(len(sealed)):
        with pytest.raises(DecryptionError):
            cipher.decrypt(sealed[:cut], b"run a/node x", "x")
    with pytest.raises(DecryptionError, match="not encrypted"):
        cipher.decrypt(b'{"plain": 1}', b"run a/node x", "x")


def test_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Cipher.from_env({}) is None
    assert Cipher.from_env({KEY_ENV: "  "}) is None
    assert isinstance(Cipher.from_env({KEY_ENV: KEY}), Cipher)
    with pytest.raises(StoreError, match=KEY_ENV):
        Cipher.from_env({KEY_ENV: "hunter2"})
    monkeypatch.setenv(KEY_ENV, KEY)
    assert isinstance(Cipher.from_env(), Cipher)


def test_library_stores_never_read_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the CLI reads FLOWDAG_KEY: a library store without key= stays plain.
    monkeypatch.setenv(KEY_ENV, KEY)
    with open_store(f"json://{tmp_path}") as store:
        store.save(RunState("r", "wf", {"a": NodeState()}))
    assert (tmp_path / "runs" / "r" / "snapshot.json").read_bytes().startswith(b'{"flowdag"')


def test_a_cipher_hides_its_key() -> None:
    cipher = Cipher(KEY)
    assert KEY not in repr(cipher)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(cipher)


# -- every disk store with a key ----------------------------------------------------------


def opened(scheme: str, directory: Path, key: Any = KEY, **options: Any) -> Store:
    if key is not None:
        options["key"] = key
    return open_store(f"{scheme}://{directory}", **options)


@pytest.fixture(params=STORES)
def scheme(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def encrypted(scheme: str, tmp_path: Path) -> Iterator[Store]:
    options = {} if scheme == "lmdb" else {"compact_min_bytes": 2048}
    with opened(scheme, tmp_path / "store", **options) as store:
        yield store


def secret_state(run_id: str = "r") -> RunState:
    nodes = {
        "extract": NodeState(NodeStatus.COMPLETED, 1, T0, T0, {"rows": [SECRET] * 3, "t": (1, 2)}),
        "load": NodeState(deps=("extract",)),
    }
    return RunState(run_id, "secret-wf", nodes, {"token": SECRET}, {"owner": SECRET})


def all_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


def test_round_trip_and_nothing_plain_on_disk(
    encrypted: Store, scheme: str, tmp_path: Path
) -> None:
    state = secret_state()
    encrypted.save(state)
    encode = encrypted.codec.encode
    for i in range(40):  # enough commits for the journaled stores to compact
        record = NodeRecord(
            "load",
            NodeStatus.COMPLETED,
            i + 1,
            T0,
            T0,
            None,
            encode([SECRET, i]),
            {f"k{i}": encode(SECRET)},
            (AttemptInfo(1, T0, T0, ErrorInfo("E", SECRET, SECRET)), AttemptInfo(i + 1, T0, T0)),
        )
        encrypted.commit("r", [record])
    loaded = encrypted.load("r")
    assert loaded.nodes["load"].history == record.history  # attempts' errors encrypted too
    assert loaded.nodes["extract"] == state.nodes["extract"]
    assert loaded.nodes["load"].output == [SECRET, 39]
    assert loaded.data == {"token": SECRET} | {f"k{i}": SECRET for i in range(40)}
    assert encrypted.load_statuses("r").nodes["load"].attempts == 40
    disk = all_bytes(tmp_path / "store")
    for plain in (SECRET.encode(), b"secret-wf", b"extract", b"token", b"owner"):
        assert plain not in disk, f"{plain!r} is on the disk in clear"


def test_wrong_or_missing_key(encrypted: Store, scheme: str, tmp_path: Path) -> None:
    encrypted.save(secret_state())
    encrypted.close()
    with opened(scheme, tmp_path / "store", key=OTHER_KEY) as store:
        with pytest.raises(DecryptionError, match="wrong key") as info:
            store.load("r")
        assert "'r'" in str(info.value)
        with pytest.raises(DecryptionError):
            store.load_statuses("r")
    with (
        opened(scheme, tmp_path / "store", key=None) as store,
        pytest.raises(DecryptionError, match="encrypted; open the store with its key"),
    ):
        store.load("r")
    assert isinstance(DecryptionError("x"), CorruptStateError)


def test_key_on_a_plain_store(scheme: str, tmp_path: Path) -> None:
    with opened(scheme, tmp_path / "store", key=None) as store:
        store.save(secret_state())
    with (
        opened(scheme, tmp_path / "store") as store,
        pytest.raises(DecryptionError, match="not encrypted"),
    ):
        store.load("r")


def test_runs_and_resumes_encrypted(scheme: str, tmp_path: Path) -> None:
    calls: list[str] = []
    wf = flowdag.Workflow("wf")

    @wf.node
    def a(ctx: flowdag.Context) -> str:
        calls.append("a")
        ctx.data["seen"] = SECRET
        return SECRET

    @wf.node(deps=["a"])
    def b(a: str) -> str:
        calls.append("b")
        if len(calls) < 3:
            raise RuntimeError("first time")
        return a.lower()

    with opened(scheme, tmp_path / "store") as store:
        assert not flowdag.run(wf, run_id="r", store=store).ok
    with opened(scheme, tmp_path / "store") as store:
        result = flowdag.run(wf, run_id="r", store=store)
    assert result.ok
    assert calls == ["a", "b", "b"]
    assert result.outputs == {"a": SECRET, "b": SECRET.lower()}
    assert result.data == {"seen": SECRET}


def test_copy_between_plain_and_encrypted_stores(scheme: str, tmp_path: Path) -> None:
    with (
        opened(scheme, tmp_path / "plain", key=None) as plain,
        opened(scheme, tmp_path / "sealed") as sealed,
    ):
        plain.save(secret_state())
        copy_run(plain, sealed, "r")
        assert sealed.load("r") == plain.load("r")
    assert SECRET.encode() not in all_bytes(tmp_path / "sealed")


# -- moving ciphertexts around ---------------------------------------------------------------


@pytest.mark.parametrize("journaled", ["json", "flatbuffers"])
def test_snapshot_of_another_run_is_refused(journaled: str, tmp_path: Path) -> None:
    with opened(journaled, tmp_path) as store:
        store.save(secret_state("a"))
        store.save(secret_state("b"))
    name = "snapshot.json" if journaled == "json" else "snapshot.fb"
    shutil.copy(tmp_path / "runs" / "a" / name, tmp_path / "runs" / "b" / name)
    with opened(journaled, tmp_path) as store:
        assert store.load("a").run_id == "a"
        with pytest.raises(DecryptionError, match="'b'"):
            store.load("b")


@pytest.mark.parametrize("journaled", ["json", "flatbuffers"])
def test_journal_records_cannot_be_reordered_or_replayed(journaled: str, tmp_path: Path) -> None:
    with opened(journaled, tmp_path, compact_min_bytes=1 << 30) as store:
        store.save(secret_state())
        for i in range(3):
            record = NodeRecord("load", NodeStatus.COMPLETED, i + 1, output=store.codec.encode(i))
            store.commit("r", [record])
        assert store.load("r").nodes["load"].output == 2
    journal = next((tmp_path / "runs" / "r").glob("journal-*.log"))
    snapshot_id, payloads, _ = read_journal(journal.read_bytes())
    assert len(payloads) == 3
    for changed in (
        [payloads[0], payloads[2], payloads[1]],  # reordered (same sizes)
        [*payloads, payloads[0]],  # an old record replayed at the end
        [payloads[0], payloads[1], payloads[1]],  # one record twice
    ):
        journal.write_bytes(journal_of(snapshot_id, changed))
        with opened(journaled, tmp_path) as store, pytest.raises(DecryptionError, match="record"):
            store.load("r")


def test_lmdb_header_of_another_run_is_refused(tmp_path: Path) -> None:
    import lmdb

    with opened("lmdb", tmp_path) as store:
        store.save(secret_state("a"))
        store.save(secret_state("b"))
    env = lmdb.open(str(tmp_path), max_dbs=4)
    with env.begin(write=True) as txn:
        runs = env.open_db(b"runs", txn=txn)
        txn.put(b"b", txn.get(b"a", db=runs), db=runs)
    env.close()
    with opened("lmdb", tmp_path) as store, pytest.raises(DecryptionError, match="'b'"):
        store.load("b")


@pytest.mark.parametrize("journaled", ["json", "flatbuffers"])
def test_rolling_a_whole_run_back_is_not_detected(journaled: str, tmp_path: Path) -> None:
    # The threat model's limit: an older copy of a run's files, put back whole,
    # is a consistent older state. Encryption authenticates entries, not time.
    with opened(journaled, tmp_path / "s") as store:
        store.save(secret_state())
        shutil.copytree(tmp_path / "s" / "runs" / "r", tmp_path / "old")
        store.commit(
            "r", [NodeRecord("load", NodeStatus.COMPLETED, 1, output=store.codec.encode(1))]
        )
    shutil.rmtree(tmp_path / "s" / "runs" / "r")
    shutil.copytree(tmp_path / "old", tmp_path / "s" / "runs" / "r")
    with opened(journaled, tmp_path / "s") as store:
        assert store.load("r").nodes["load"].status is NodeStatus.PENDING


# -- pickle: off unless this store opts in ----------------------------------------------------


@pytest.mark.parametrize(
    ("scheme_name", "pickling"),
    [
        ("lmdb", Codec(allow_pickle=True)),
        ("flatbuffers", Codec(allow_pickle=True)),
        ("json", JSONCodec(allow_pickle=True)),
    ],
)
def test_pickle_only_for_the_store_that_allows_it(
    scheme_name: str, pickling: Any, tmp_path: Path
) -> None:
    state = RunState("p", "wf", {"a": NodeState(NodeStatus.COMPLETED, 1, output=range(1, 3))})
    with (
        pytest.raises(flowdag.SerializationError, match="range"),
        opened(scheme_name, tmp_path / "plain", key=None) as store,
    ):
        store.save(state)
    with opened(scheme_name, tmp_path / "trusted", key=KEY, codec=pickling) as trusting:
        trusting.save(state)
        assert trusting.load("p").nodes["a"].output == range(1, 3)
    # Another store on the same files, without the opt-in, refuses to unpickle.
    with (
        opened(scheme_name, tmp_path / "trusted", key=KEY) as careful,
        pytest.raises(CorruptStateError, match="allow_pickle"),
    ):
        careful.load("p")


def test_public_names() -> None:
    import flowdag.stores

    assert flowdag.stores.Cipher is Cipher
    key = flowdag.stores.generate_key()
    assert len(key) == 64 and int(key, 16) >= 0
    assert key != flowdag.stores.generate_key()
    assert {"Cipher", "generate_key"} <= set(flowdag.stores.__all__)
