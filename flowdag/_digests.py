"""Digests of stored outputs: what early cutoff and the input digests compare.

An output's digest is taken from its encoding, the bytes the store keeps, so
no value is encoded twice; an output kept by reference (`flowdag.Ref`)
counts by its blob's sha256, which depends on the value alone. Two equal
values may still digest apart (a dict built in another order, a set iterated
in another order): the digest errs towards "changed", which runs a node again
but never reuses a stale output.
"""

from __future__ import annotations

import hashlib
from typing import Any

from flowdag.refs import Ref

__all__ = ["output_digest"]


def output_digest(encoded: bytes | memoryview, value: Any) -> str:
    """The digest of an output encoded as ``encoded`` (``value``: the value or its Ref)."""
    if type(value) is Ref:
        return value.sha256
    return hashlib.blake2b(encoded, digest_size=16).hexdigest()
