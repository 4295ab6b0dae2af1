"""Which codec wrote a store: recorded on creation, checked on open; a wrong codec family refused.

Stores written before the record existed (``fixtures/legacy``, made by the
previous release) still open, load and resume, with no record added.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag.codec import Codec
from flowdag.errors import (
    CodecMismatchError,
    FlowdagError,
    InvalidArgumentTypeError,
    StoreError,
)
from flowdag.json_codec import JSONCodec
from flowdag.state import NodeStatus
from flowdag.stores import open_store
from tests.stores.conformance import files_under, pending_state
from tests.stores.fixtures.legacy import KEY, SCHEMES, WHEN, build

LEGACY = Path(__file__).parent / "fixtures" / "legacy"


class OtherCodec(Codec):
    name = "other-msgpack"


class OtherJSONCodec(JSONCodec):
    name = "json-other"


class NamelessCodec:
    """A user codec without a ``name``: its class's name is recorded."""

    def __init__(self) -> None:
        self._inner = Codec()

    def encode(self, value: Any) -> bytes:
        return self._inner.encode(value)

    def decode(self, blob: bytes) -> Any:
        return self._inner.decode(blob)


def default_codec(scheme: str) -> Codec | JSONCodec:
    return JSONCodec() if scheme == "json" else Codec()


def other_codec(scheme: str) -> Codec | JSONCodec:
    return OtherJSONCodec() if scheme == "json" else OtherCodec()


def record(where: Path, scheme: str) -> Any:
    return json.loads((where / f"{scheme}-store.json").read_text())


# -- the record -------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_new_store_records_its_codec(tmp_path: Path, scheme: str, key: str | None) -> None:
    where = tmp_path / "store"
    with open_store(f"{scheme}://{where}", key=key) as store:
        store.save(pending_state("r", "a"))
    name = "json" if scheme == "json" else "msgpack"
    assert record(where, scheme) == {"flowdag": f"{scheme}-store", "codec": name}
    with open_store(f"{scheme}://{where}", key=key, codec=default_codec(scheme)) as store:
        assert store.load("r") == pending_state("r", "a")


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_another_codec_is_refused_on_open(tmp_path: Path, scheme: str, key: str | None) -> None:
    where = tmp_path / "store"
    with open_store(f"{scheme}://{where}", key=key) as store:
        store.save(pending_state("r", "a"))
    before = files_under(where)
    other = other_codec(scheme)
    with pytest.raises(CodecMismatchError) as info:
        open_store(f"{scheme}://{where}", key=key, codec=other)
    message = str(info.value)
    written = "'json'" if scheme == "json" else "'msgpack'"
    assert f"written with the {written} codec, not '{other.name}'" in message, message
    assert str(where) in message and "open it with" in message
    assert isinstance(info.value, StoreError)
    assert files_under(where) == before
    # and the other way round: a store made with the other codec refuses the default
    with open_store(f"{scheme}://{tmp_path / 'other'}", codec=other):
        pass
    with pytest.raises(CodecMismatchError, match=f"written with the '{other.name}' codec"):
        open_store(f"{scheme}://{tmp_path / 'other'}")


@pytest.mark.parametrize("scheme", ["lmdb", "flatbuffers"])
def test_a_codec_without_a_name_records_its_class(tmp_path: Path, scheme: str) -> None:
    where = tmp_path / "store"
    with open_store(f"{scheme}://{where}", codec=NamelessCodec()) as store:
        store.save(pending_state("r", "a"))
    assert record(where, scheme)["codec"] == "NamelessCodec"
    with open_store(f"{scheme}://{where}", codec=NamelessCodec()) as store:
        assert store.list_runs() == ["r"]
    with pytest.raises(CodecMismatchError, match="'NamelessCodec' codec, not 'msgpack'"):
        open_store(f"{scheme}://{where}")


def test_json_and_flatbuffers_sharing_a_directory_keep_their_own_records(tmp_path: Path) -> None:
    with open_store(f"json://{tmp_path}"), open_store(f"flatbuffers://{tmp_path}"):
        pass
    assert record(tmp_path, "json")["codec"] == "json"
    assert record(tmp_path, "flatbuffers")["codec"] == "msgpack"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_damaged_record_is_reported(tmp_path: Path, scheme: str) -> None:
    with open_store(f"{scheme}://{tmp_path}"):
        pass
    (tmp_path / f"{scheme}-store.json").write_text("{not json")
    with pytest.raises(flowdag.CorruptStateError, match=f"{scheme}-store.json is damaged"):
        open_store(f"{scheme}://{tmp_path}")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_read_only_opens_write_no_record(tmp_path: Path, scheme: str) -> None:
    with open_store(f"{scheme}://{tmp_path}") as store:
        store.save(pending_state("r", "a"))
    (tmp_path / f"{scheme}-store.json").unlink()  # as a store from before records
    with open_store(f"{scheme}://{tmp_path}", create=False) as store:
        assert store.list_runs() == ["r"]
    assert not (tmp_path / f"{scheme}-store.json").exists()


# -- the wrong codec family -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "codec", "store_class", "needs"),
    [
        ("json", Codec(), "JSONStore", "needs a JSONCodec"),
        ("lmdb", JSONCodec(), "LMDBStore", "needs a binary codec such as flowdag.codec.Codec"),
        ("flatbuffers", JSONCodec(), "FlatBuffersStore", "needs a binary codec"),
    ],
)
def test_a_codec_of_the_wrong_family_is_refused_at_construction(
    tmp_path: Path, scheme: str, codec: Any, store_class: str, needs: str
) -> None:
    where = tmp_path / "store"
    with pytest.raises(InvalidArgumentTypeError) as info:
        open_store(f"{scheme}://{where}", codec=codec)
    message = str(info.value)
    assert f"a {store_class} {needs}" in message, message
    assert type(codec).__name__ in message and "leave codec out" in message
    assert isinstance(info.value, TypeError) and isinstance(info.value, FlowdagError)
    assert not where.exists()  # refused before touching the disk


# -- stores written by the previous release --------------------------------------------------


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_store_of_the_previous_release_loads_and_resumes(
    tmp_path: Path, scheme: str, encrypted: bool
) -> None:
    where = tmp_path / "store"
    shutil.copytree(LEGACY / (f"{scheme}-encrypted" if encrypted else scheme), where)
    url = f"{scheme}://{where}"
    key = {"key": KEY} if encrypted else {}
    with open_store(url, create=False, **key) as store:
        state = store.load("legacy")
        statuses = store.load_statuses("legacy")
    assert {name: node.status for name, node in state.nodes.items()} == {
        "extract": NodeStatus.COMPLETED,
        "transform": NodeStatus.FAILED,
        "load": NodeStatus.SKIPPED,
    }
    assert statuses.nodes["transform"].status is NodeStatus.FAILED
    assert state.nodes["extract"].output == {"rows": (1, 2, 3), "when": WHEN, "name": "héllo"}
    assert state.nodes["transform"].error is not None
    assert state.nodes["transform"].error.message == "planned failure"
    assert state.data == {"rows": 3}
    calls: list[str] = []
    with open_store(url, **key) as store:
        result = flowdag.run(build(fail=False, calls=calls), run_id="legacy", store=store)
        assert result.ok and calls == ["transform", "load"]  # extract is not run again
        assert result.outputs["load"] == 12
        resumed = store.load("legacy")
    assert resumed.nodes["load"].output == 12 and resumed.data == {"rows": 3}
    # Its codec is not known, so none is recorded, and any codec of the family opens it.
    assert not (where / f"{scheme}-store.json").exists()
    with open_store(url, codec=other_codec(scheme), **key) as store:
        assert store.list_runs() == ["legacy"]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_codec_recorded_by_another_opener_meanwhile_is_checked(
    tmp_path: Path, scheme: str
) -> None:
    # The race: this opener found no record; before it records its own, another
    # opener with another codec records its codec and saves a run. This opener
    # then sees runs, writes no record, and must still refuse the other codec.
    where = tmp_path / "s"
    with open_store(f"{scheme}://{tmp_path / 'probe'}") as probe:
        store_class = type(probe)

    class RacedStore(store_class):  # type: ignore[misc, valid-type]
        def _open(self) -> None:
            super()._open()
            with open_store(f"{scheme}://{where}", codec=other_codec(scheme)) as first:
                first.save(pending_state("r1"))

    with pytest.raises(CodecMismatchError):
        RacedStore(where, codec=default_codec(scheme))
