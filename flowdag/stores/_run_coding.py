"""The bytes side of `Store`: a `RunState` turned into the blobs a backend keeps, and back.

A backend keeps bytes, never Python values: `RunCoding`, a mixin of
`flowdag.stores.base.Store`, encodes a run with the store's codec
(`_to_stored`: the header, each node's meta record and output, each ``ctx.data``
value), decodes one (`_decoder`, `_decode_run`), words its damage
(`_damaged`) and hides a run whose ttl ran out (`_unexpired`). It also checks
that the codec suits the store's files (`_check_codec_kind`).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar

from flowdag.errors import CorruptStateError, InvalidArgumentTypeError, RunNotFoundError
from flowdag.refs import collecting
from flowdag.state import NO_BLOBS, NodeState, NodeStatus, RunState
from flowdag.stores._decoding import RunDecoder
from flowdag.stores._records import check_state, encode_meta, header_record
from flowdag.stores._stored import StoredNode, StoredRun

if TYPE_CHECKING:
    from flowdag.codec import ValueCodec
    from flowdag.stores._blobs import RefSource

__all__ = ["RunCoding"]


class RunCoding:
    """Encoding and decoding of runs for `Store` (see the module docstring)."""

    __slots__ = ()
    codec_kind: ClassVar[str]
    if TYPE_CHECKING:  # `Store`'s
        codec: ValueCodec

        @property
        def ref_source(self) -> RefSource: ...
        def describe(self, run_id: str) -> str: ...

    def _check_codec_kind(self) -> None:
        kind = self.codec_kind
        # Not imported here: a codec can only be a JSONCodec once its module is loaded.
        json_codec = sys.modules.get("flowdag.json_codec")
        # getattr: another thread may be importing it still (no JSONCodec exists yet then).
        json_class = getattr(json_codec, "JSONCodec", None)
        is_json = json_class is not None and isinstance(self.codec, json_class)
        if kind == "json" and not is_json:
            raise InvalidArgumentTypeError(
                f"a {type(self).__name__} needs a JSONCodec (flowdag.json_codec), not "
                f"{type(self.codec).__name__}: its files hold JSON; pass codec=JSONCodec(...) "
                "or leave codec out"
            )
        if kind == "binary" and is_json:
            raise InvalidArgumentTypeError(
                f"a {type(self).__name__} needs a binary codec such as flowdag.codec.Codec, "
                f"not {type(self.codec).__name__} (JSON fragments are for the JSON store); "
                "pass codec=Codec(...) or leave codec out"
            )

    def _to_stored(self, state: RunState) -> StoredRun:
        check_state(state)  # copy_run comes here without save
        encode = self.codec.encode
        header = encode(header_record(state))
        # A node that never ran needs no entry: the header lists it, and a node
        # without an entry loads as pending. Saving a new run then costs O(header).
        nodes = {}
        pending = None  # a new run's nodes share a pending state per deps: compared once
        for name, node in state.nodes.items():
            if node is pending or node == NodeState(deps=node.deps):
                pending = node
                continue
            output = None
            blobs: Mapping[str, datetime | None] = NO_BLOBS
            if node.status is NodeStatus.COMPLETED:
                with collecting() as blobs:  # the blobs its meta record lists, for gc
                    output = encode(node.output)
            nodes[name] = StoredNode(encode_meta(self.codec.encode, node, blobs), output)
        data = {key: encode(value) for key, value in state.data.items()}
        return StoredRun(header, nodes, data)

    def _from_stored(self, run_id: str, run: StoredRun) -> RunState:
        return self._decode_run(run_id, run.header, run.nodes, run.data)

    def _decode_run(
        self,
        run_id: str,
        header_blob: bytes,
        nodes: Mapping[str, StoredNode],
        data: Mapping[str, bytes],
    ) -> RunState:
        with self._decoder(run_id) as decoder:
            decoder.feed(header_blob, nodes, data)
            return decoder.finish()

    def _decoder(self, run_id: str) -> RunDecoder:
        return RunDecoder(
            run_id, self.codec.decode, self.ref_source, lambda why: self._damaged(run_id, why)
        )

    def _damaged(self, run_id: str, why: object) -> CorruptStateError:
        return CorruptStateError(
            f"run '{run_id}' in {self.describe(run_id)} is damaged ({why}); "
            "restore it from a backup or delete it and run again"
        )

    def _unexpired(self, state: RunState) -> RunState:
        """``state``, unless its ttl has run out: then it is gone for every reader."""
        if state.ttl is not None:
            expires_at = state.expires_at
            if expires_at is not None and datetime.now(UTC) >= expires_at:
                raise RunNotFoundError(
                    f"run '{state.run_id}' expired at {expires_at.isoformat(timespec='seconds')} "
                    f"(ttl {state.ttl} after it finished); `flowdag gc` deletes it, and a run "
                    "with the same id starts afresh"
                )
        return state
