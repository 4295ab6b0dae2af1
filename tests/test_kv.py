"""store.kv(): get, set, delete, update, items and who wrote an entry, on every store kind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag import InvalidKeyError
from flowdag._kv_entries import UpdateFailedError
from flowdag.errors import (
    CorruptStateError,
    FlowdagError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    SerializationError,
)
from flowdag.stores.base import Store
from tests import kv_stores

store = kv_stores.store  # fixtures: every store kind


BIG = list(range(100_000))  # about 360 KiB of msgpack, above the 256 KiB inline limit


def test_set_get_and_default(store: Store) -> None:
    kv = store.kv()
    assert kv.get("billing:cursor") is None
    assert kv.get("billing:cursor", default=0) == 0
    kv.set("billing:cursor", 42)
    assert kv.get("billing:cursor", default=0) == 42
    kv.set("billing:cursor", {"page": 3, "seen": [1, 2]})
    assert kv.get("billing:cursor") == {"page": 3, "seen": [1, 2]}


def test_values_keep_their_types(store: Store) -> None:
    kv = store.kv()
    values: dict[str, Any] = {
        "int": 1,
        "str": "1",
        "float": 1.0,
        "tuple": (1, 2),
        "list": [1, 2],
        "none": None,
        "bytes": b"\x00\xff",
        "when": datetime(2026, 1, 2, tzinfo=UTC),
    }
    for key, value in values.items():
        kv.set(key, value)
    for key, value in values.items():
        got = kv.get(key, default="absent")
        assert got == value and type(got) is type(value), key


def test_an_entry_records_its_writer_and_times(store: Store) -> None:
    kv = store.kv()
    before = datetime.now(UTC)
    kv.set("k", 1, ttl="7d")
    entry = kv.entry("k")
    assert entry is not None
    assert entry.value == 1
    assert entry.run_id is None and entry.node is None  # written outside runs
    assert before <= entry.written_at <= datetime.now(UTC)
    assert entry.expires_at == entry.written_at + timedelta(days=7)
    kv.set("k", 2)
    entry = kv.entry("k")
    assert entry is not None and entry.expires_at is None  # each write sets its own expiry
    assert kv.entry("missing") is None


@pytest.mark.parametrize(
    ("ttl", "seconds"),
    [(90, 90.0), (1.5, 1.5), (timedelta(minutes=30), 1800.0), ("90s", 90.0), ("4h", 14400.0)],
)
def test_ttl_takes_every_duration_form(store: Store, ttl: Any, seconds: float) -> None:
    kv = store.kv()
    kv.set("k", 1, ttl=ttl)
    entry = kv.entry("k")
    assert entry is not None and entry.expires_at is not None
    assert (entry.expires_at - entry.written_at).total_seconds() == pytest.approx(seconds)


def test_expired_entries_are_absent_at_once(store: Store) -> None:
    kv = store.kv()
    kv.set("gone", 1, ttl=0)  # expires as it is written
    kv.set("kept", 2)
    assert kv.get("gone", default="absent") == "absent"
    assert kv.entry("gone") is None
    assert kv.items() == [("kept", 2)]
    assert kv.delete("gone") is False  # nothing live was there
    kv.set("gone", 1, ttl=0)
    assert kv.update("gone", lambda old: ("saw", old)) == ("saw", None)


def test_delete_says_whether_a_value_was_there(store: Store) -> None:
    kv = store.kv()
    kv.set("k", 1)
    assert kv.delete("k") is True
    assert kv.delete("k") is False
    assert kv.get("k") is None


def test_update_runs_against_the_latest_value_and_returns_the_new_one(store: Store) -> None:
    kv = store.kv()
    assert kv.update("n", lambda old: (old or 0) + 1) == 1
    assert kv.update("n", lambda old: (old or 0) + 1, ttl="1h") == 2
    entry = kv.entry("n")
    assert entry is not None and entry.value == 2 and entry.expires_at is not None


def test_an_update_that_raises_writes_nothing_and_names_the_key(store: Store) -> None:
    kv = store.kv()
    kv.set("n", 1)

    def broken(old: Any) -> Any:
        raise ZeroDivisionError("no")

    with pytest.raises(UpdateFailedError, match=r"'n'.*ZeroDivisionError"):
        kv.update("n", broken)
    assert kv.get("n") == 1
    with pytest.raises(InvalidArgumentTypeError, match="function"):
        kv.update("n", 3)  # type: ignore[arg-type]


def test_items_are_sorted_and_filtered_by_prefix(store: Store) -> None:
    kv = store.kv()
    for key in ["b:2", "a", "b:1", "c", "b:10"]:
        kv.set(key, key.upper())
    assert [key for key, _ in kv.items()] == ["a", "b:1", "b:10", "b:2", "c"]
    assert kv.items(prefix="b:") == [("b:1", "B:1"), ("b:10", "B:10"), ("b:2", "B:2")]
    assert kv.items(prefix="zz") == []


@pytest.mark.parametrize(
    "key",
    ["", "a b", "a/b", "é", "a\x00", "x" * 513, 1, None, b"key"],
)
def test_bad_keys_are_refused(store: Store, key: Any) -> None:
    kv = store.kv()
    for call in (
        lambda: kv.get(key),
        lambda: kv.set(key, 1),
        lambda: kv.delete(key),
        lambda: kv.update(key, lambda old: old),
        lambda: kv.entry(key),
    ):
        with pytest.raises(InvalidKeyError, match=r"A-Z a-z 0-9 _ : \. -") as info:
            call()
        assert isinstance(info.value, ValueError)
        assert isinstance(info.value, FlowdagError)


@pytest.mark.parametrize("key", ["a", "A-Z_0.9:x", "x" * 512, "billing:2026-11:rows"])
def test_good_keys_are_taken(store: Store, key: str) -> None:
    store.kv().set(key, 1)
    assert store.kv().get(key) == 1


def test_a_bad_ttl_is_refused(store: Store) -> None:
    with pytest.raises(InvalidArgumentError, match="ttl"):
        store.kv().set("k", 1, ttl="soon")
    with pytest.raises(InvalidArgumentError, match="ttl"):
        store.kv().set("k", 1, ttl=-1)


def test_a_value_that_cannot_be_stored_names_the_key_and_type(store: Store) -> None:
    with pytest.raises(SerializationError, match=r"'k'.*object"):
        store.kv().set("k", object())
    assert store.kv().get("k") is None


def test_a_large_value_is_kept_in_the_blob_area(store: Store) -> None:
    kv = store.kv()
    before = len(store.blobs.entries())
    kv.set("big", BIG)
    assert len(store.blobs.entries()) == before + 1
    assert kv.get("big") == BIG
    assert kv.update("big", lambda old: old[:3]) == [0, 1, 2]
    assert kv.get("big") == [0, 1, 2]


def test_a_damaged_entry_is_refused_by_name(store: Store) -> None:
    store.transact_tables(lambda txn: txn.put("kv", "broken", b"\xc1 not an entry"))
    with pytest.raises(CorruptStateError, match="'broken'"):
        store.kv().get("broken")
    store.transact_tables(lambda txn: txn.put("kv", "other", store.codec.encode({"version": 9})))
    with pytest.raises(CorruptStateError, match="'other'"):
        store.kv().items(prefix="oth")
    assert store.kv().delete("broken") is True  # what the message says to do works
    assert store.kv().get("broken") is None


def test_kv_is_exported() -> None:
    assert issubclass(flowdag.InvalidKeyError, ValueError)
    assert "InvalidKeyError" in flowdag.__all__


def test_entries_survive_a_conversion_to_another_codec(tmp_path: Path) -> None:
    from flowdag.stores import open_store
    from flowdag.stores.transfer import copy_tables

    values = {"n": 1, "t": (1, "x"), "when": datetime(2026, 1, 2, tzinfo=UTC), "d": {"a": [1]}}
    with (
        open_store(f"lmdb://{tmp_path / 'src'}") as src,
        open_store(f"json://{tmp_path / 'dst'}") as dst,
    ):
        assert src.codec.name != dst.codec.name
        for key, value in values.items():
            src.kv().set(key, value, ttl="1h")
        copy_tables(src, dst)
        assert dst.kv().items() == src.kv().items() == sorted(values.items())
        assert dst.kv().entry("n") == src.kv().entry("n")
