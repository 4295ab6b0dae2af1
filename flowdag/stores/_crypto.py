"""Encryption at rest for the disk stores: AES-256-GCM on bytes, at the store edge.

Design
------
A store with a key seals every byte string it writes (LMDB values, journal
record payloads, snapshot files) with one `Cipher` and opens it again on
load. The codecs and formats never see ciphertext: sealing wraps their bytes,
so every store, format and codec works the same with or without a key.

A sealed blob is laid out as::

    offset  size    field
    0       4       magic b"FDX1" (flowdag sealed, version 1)
    4       12      nonce: 96 fresh random bits (os.urandom) per encryption
    16      n + 16  AES-256-GCM ciphertext of the n plaintext bytes, then the tag

*Associated data* binds each ciphertext to its place without being stored: the
store passes bytes naming the store kind, the run id and the entry (an LMDB
key, a snapshot, or a journal's generation and the record's byte offset). A
ciphertext copied to another entry, run or store fails its tag exactly like a
wrong key or a changed byte, and raises `DecryptionError`: wrong data never
comes back.

Nonces are random, never counters, so processes sharing a key cannot collide
by construction; NIST SP 800-38D bounds one key to 2**32 random-nonce
encryptions (a collision chance below 2**-32), which is billions of node
commits. Rotate the key (``flowdag store convert`` to a store with a new key,
through the API) well before that.

Keys are 32 bytes, given as bytes, as 64 hex digits or as base64 (standard or
URL-safe, padding optional). The library never reads the environment on its
own: `Cipher.from_env` reads `KEY_ENV` when a caller (the CLI does) asks it to.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from typing import Any

from flowdag.errors import DecryptionError, OptionalDependencyError, StoreError

__all__ = ["KEY_ENV", "MAGIC", "Cipher", "generate_key", "is_sealed", "make_cipher"]

#: The environment variable the command line reads a key from.
KEY_ENV = "FLOWDAG_KEY"
#: First bytes of every sealed blob.
MAGIC = b"FDX1"
_NONCE_SIZE = 12
_TAG_SIZE = 16
_KEY_SIZE = 32
_OVERHEAD = len(MAGIC) + _NONCE_SIZE + _TAG_SIZE
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


def generate_key() -> str:
    """A new random 256-bit key as 64 hex digits, e.g. for ``FLOWDAG_KEY``."""
    return os.urandom(_KEY_SIZE).hex()


def is_sealed(blob: bytes | memoryview) -> bool:
    """Whether ``blob`` looks like a `Cipher` output (starts with `MAGIC`)."""
    return bytes(blob[: len(MAGIC)]) == MAGIC


def _parse_key(key: bytes | str, source: str) -> bytes:
    if isinstance(key, bytes | bytearray):
        raw = bytes(key)
    elif isinstance(key, str):
        text = key.strip()
        if _HEX_KEY.fullmatch(text):
            raw = bytes.fromhex(text)
        else:
            try:
                padded = text + "=" * (-len(text) % 4)
                raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
            except (binascii.Error, ValueError):
                raw = b""
    else:
        raise StoreError(f"{source} must be bytes or a str, not {type(key).__name__}")
    if len(raw) != _KEY_SIZE:
        raise StoreError(
            f"{source} is not a 256-bit key: give 32 bytes, 64 hex digits or their base64 "
            "(make one with: python -c 'import os; print(os.urandom(32).hex())')"
        )
    return raw


class Cipher:
    """AES-256-GCM with a random nonce per encryption and caller-chosen associated data.

    Args:
        key: 32 bytes, 64 hex digits, or base64 of 32 bytes.

    Raises:
        StoreError: the key is malformed.
        OptionalDependencyError: the ``cryptography`` package is missing
            (``pip install 'flowdag[encrypt]'``).
    """

    __slots__ = ("_aead", "_key")

    def __init__(self, key: bytes | str, *, source: str = "the encryption key") -> None:
        raw = _parse_key(key, source)
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError as exc:
            raise OptionalDependencyError(
                "encryption at rest needs the cryptography package: pip install 'flowdag[encrypt]'"
            ) from exc
        self._aead = AESGCM(raw)
        self._key = raw  # only for derive_key; never pickled (see __reduce__)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Cipher | None:
        """A cipher for the key in ``FLOWDAG_KEY``, or None when it is unset or empty."""
        value = (os.environ if environ is None else environ).get(KEY_ENV, "")
        return cls(value, source=KEY_ENV) if value.strip() else None

    def __repr__(self) -> str:
        return "Cipher(<key hidden>)"

    def __reduce__(self) -> Any:
        # A key never travels by pickle (stores may cross process boundaries).
        raise TypeError("a Cipher holds a key and cannot be pickled")

    def derive_key(self, purpose: bytes) -> bytes:
        """A 32-byte subkey for ``purpose`` (HKDF-SHA256): one key per use, never the key itself."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        kdf = HKDF(algorithm=hashes.SHA256(), length=_KEY_SIZE, salt=None, info=purpose)
        return kdf.derive(self._key)

    def encrypt(self, plaintext: bytes | memoryview, aad: bytes) -> bytes:
        """Seal ``plaintext``, bound to ``aad``; a fresh random nonce every call.

        Raises:
            StoreError: the plaintext is over AES-GCM's 2 GiB per-call limit.
        """
        nonce = os.urandom(_NONCE_SIZE)
        try:
            sealed: bytes = self._aead.encrypt(nonce, bytes(plaintext), aad)
        except OverflowError as exc:
            raise StoreError(f"cannot encrypt {len(plaintext)} bytes at once ({exc})") from exc
        return b"".join((MAGIC, nonce, sealed))

    def decrypt(self, sealed: bytes | memoryview, aad: bytes, where: str) -> bytes:
        """Open what `encrypt` sealed with the same key and ``aad``.

        Args:
            where: names the entry in error messages, e.g. ``run 'x': /s/snapshot.fb``.

        Raises:
            DecryptionError: ``sealed`` is not sealed, was sealed with another
                key or for another place, or was changed.
        """
        from cryptography.exceptions import InvalidTag

        if not is_sealed(sealed):
            raise DecryptionError(
                f"{where} is not encrypted, but this store was opened with a key; "
                "open it without a key, or convert it to an encrypted store"
            )
        if len(sealed) < _OVERHEAD:
            raise DecryptionError(f"{where} is too short to be encrypted data: truncated")
        view = memoryview(sealed)
        nonce = view[len(MAGIC) : len(MAGIC) + _NONCE_SIZE]
        try:
            plain: bytes = self._aead.decrypt(
                bytes(nonce), bytes(view[len(MAGIC) + _NONCE_SIZE :]), aad
            )
        except InvalidTag:
            raise DecryptionError(
                f"cannot decrypt {where}: wrong key, or the data was changed or moved "
                "from another entry (AES-GCM authentication failed)"
            ) from None
        return plain


def make_cipher(key: bytes | str | Cipher | None) -> Cipher | None:
    """The store's cipher for its ``key=`` argument (None: no encryption)."""
    if key is None or isinstance(key, Cipher):
        return key
    return Cipher(key)


def not_encrypted_error(where: str) -> DecryptionError:
    """What a store without a key raises when it meets sealed data."""
    return DecryptionError(
        f"{where} is encrypted; open the store with its key "
        f"(key=... in Python, or the {KEY_ENV} environment variable for the command line)"
    )
