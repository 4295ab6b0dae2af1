"""Digests of stored outputs: what early cutoff and the input digests compare.

An output's digest is taken from its encoding, the bytes the store keeps, so
no value is encoded twice: the sha256 of its plain encoding (`Codec.plain`,
payload uncompressed), which is the address its blob has when the output is
kept by reference, so an output counts the same inline or as a `flowdag.Ref`
(a Ref counts by its ``sha256``): a change of ``inline_limit`` changes no digest. Two equal
values may still digest apart (a dict built in another order, a set iterated
in another order): the digest errs towards "changed", which runs a node again
but never reuses a stale output.
"""

from __future__ import annotations

import hashlib
from typing import Any

from flowdag.codec import ValueCodec
from flowdag.refs import Ref

__all__ = ["output_digest"]


def output_digest(codec: ValueCodec, encoded: bytes, value: Any) -> str:
    """The digest of an output ``codec`` encoded as ``encoded`` (``value``: the value or its
    Ref): the sha256 of the plain encoding, or the Ref's own."""
    if type(value) is Ref:
        return value.sha256
    return hashlib.sha256(codec.plain(encoded)).hexdigest()
