"""A code fingerprint's value: its digest and named parts (see `flowdag._fingerprint`).

Fingerprints that differ only in a few parts (the lambdas one line makes in a
loop, a constant per node) share a `flowdag._code_digests._Template` of the
other parts and keep only what their own are digested from; their
``source_digest`` and ``parts`` are made when first read, which a resume that
reuses every node never does (the digests of their own parts are made for each,
and not kept: the provenance holds the digests made of them), and a node's
provenance holds a view of the parts
(`Fingerprint.parts_view`) rather than a dict of them, which a store writes from
the template's shared parts and the node's own (`_PartsView.shared`). The view
in a record the runner makes holds the own digests its digests were made from
(`Fingerprint.recorded`): the store does not make them a second time.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from typing import Any

from flowdag._code_digests import _Template

__all__ = ["Fingerprint"]


class Fingerprint:
    """A node's code digest, and the digest of each named part it is made of.

    ``parts`` maps a part's name (``"function load"``, ``"helper clean_rows
    (etl/helpers.py)"``, ``"global RATE"``, ``"closure n"``) to its digest;
    ``source_digest`` covers the parts' normalised sources only (no bytecode).

    Fingerprints that differ only in a few parts (the lambdas one line makes in a
    loop, a constant per node) share a `_Template` of the others and keep only
    what their own parts are digested from: ``source_digest`` and ``parts`` are
    made when first read, which a resume that reuses every node never does. A
    million of them fit in a few hundred bytes each.
    """

    __slots__ = ("_digest", "_own", "_parts", "_source_digest", "_template")

    def __init__(self, digest: str, source_digest: str, parts: dict[str, str] | None = None):
        self._digest: str | None = digest
        self._source_digest: str | None = source_digest
        self._parts: dict[str, str] | None = {} if parts is None else parts
        self._template: _Template | None = None
        self._own: Any = None

    @classmethod
    def _of(cls, template: _Template, own: Any) -> Fingerprint:
        """The fingerprint of ``template``'s fixed parts and ``own`` (see `_Template.own`)."""
        made = cls.__new__(cls)
        made._digest = None  # made when first read: a resume that finds a seal never does
        made._source_digest = None
        made._parts = None
        made._template = template
        made._own = own
        return made

    def _own_digests(self) -> tuple[str, ...]:
        """The digests of the template's ``names``, made on each call and not kept:
        the digests made of them are, and a node's provenance holds those, so a
        run of a million nodes keeps no third digest per node. A store writing
        the node's parts makes them once more (`_PartsView.shared`)."""
        template = self._template
        assert template is not None
        return template.own(self._own)

    @property
    def digest(self) -> str:
        """The digest of the code and everything it reaches (see `flowdag._fingerprint`)."""
        found = self._digest
        if found is None:
            template = self._template
            assert template is not None
            # Made alone: a resume that compares digests keeps nothing more per node.
            found = self._digest = template.digest(template.own(self._own))
        return found

    def identity(self) -> Any:
        """A value equal for two fingerprints only if their digests are: the digest,
        or, for a template's, the template's key and what this one's own parts are
        digested from (packable with msgpack), so that no digest is made."""
        template = self._template
        if template is None:
            return self.digest
        return (template.key, template.captured_of(self._own))

    @property
    def source_digest(self) -> str:
        """The digest of the parts' normalised sources (no bytecode)."""
        found = self._source_digest
        # A run reads both, for each node it runs: from one making of the own digests.
        return found if found is not None else self.digests()[1]

    def digests(self, *, keep: bool = True) -> tuple[str, str]:
        """`digest` and `source_digest`, from one making of the own digests. Not
        ``keep``: made ones are not kept, for a caller that lets go of the record
        holding them (a ledger that forgets: `flowdag._ledger`), so that a run of a
        million nodes keeps none per node."""
        return self.recorded(keep=keep)[:2]

    def recorded(self, *, keep: bool = True) -> tuple[str, str, Mapping[str, str]]:
        """`digests` and `parts_view`, for a node's record: the view holds the own
        digests the two digests were made from, so that the store writing the
        record (`_PartsView.shared`) does not make them again."""
        digest, source = self._digest, self._source_digest
        if digest is not None and source is not None:
            return digest, source, self.parts_view()
        template = self._template
        assert template is not None
        own = template.own(self._own)
        digest, source = digest or template.digest(own), source or template.source_digest(own)
        if keep:
            self._digest, self._source_digest = digest, source
        parts = self._parts
        return digest, source, parts if parts is not None else _PartsView(self, own)

    @property
    def parts(self) -> dict[str, str]:
        """Part name -> its digest."""
        found = self._parts
        if found is None:
            assert self._template is not None
            found = self._parts = self._template.parts(self._own_digests())
        return found

    def parts_view(self) -> Mapping[str, str]:
        """``parts`` as a record keeps them: made again on each read and never kept,
        when they come from a template (a node's provenance holds this: a run of
        a million nodes keeps no dict of parts per node)."""
        return self._parts if self._parts is not None else _PartsView(self)

    def changed_parts(self, before: Fingerprint) -> list[str]:
        """The names of parts that differ from ``before`` (new, gone or edited), sorted."""
        now, then = self.parts, before.parts
        names = now.keys() | then.keys()
        return sorted(n for n in names if now.get(n) != then.get(n))

    def source_only(self, before: Fingerprint) -> bool:
        """Whether only bytecode differs from ``before`` (same normalised source)."""
        return self.digest != before.digest and self.source_digest == before.source_digest

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Fingerprint):
            return NotImplemented
        return (self.digest, self.source_digest, self.parts) == (
            other.digest,
            other.source_digest,
            other.parts,
        )

    def __hash__(self) -> int:
        return hash(self.digest)

    def __repr__(self) -> str:
        return (
            f"Fingerprint(digest={self.digest!r}, source_digest={self.source_digest!r}, "
            f"parts={self.parts!r})"
        )


class _PartsView(Mapping[str, str]):
    """The parts of a template's `Fingerprint`, made on each read (see `parts_view`)."""

    __slots__ = ("_fingerprint", "_own")

    def __init__(self, fingerprint: Fingerprint, own: tuple[str, ...] | None = None) -> None:
        self._fingerprint = fingerprint
        self._own = own  # the own digests, when made already (`Fingerprint.recorded`)

    def _own_digests(self) -> tuple[str, ...]:
        own = self._own
        return own if own is not None else self._fingerprint._own_digests()

    def _made(self) -> dict[str, str]:
        found = self._fingerprint
        if found._parts is not None:
            return found._parts
        template = found._template
        assert template is not None
        return template.parts(self._own_digests())

    def shared(self) -> tuple[_Template, tuple[str, ...]] | None:
        """The template these parts come from and the fingerprint's own digests (of
        its ``names``, in order), when the parts are the template's ``fixed`` then
        its names (`_Template.distinct`); else None. A store writes them from this
        without making the parts (`flowdag.stores._provenance`)."""
        found = self._fingerprint
        template = found._template
        if found._parts is not None or template is None or not template.distinct:
            return None
        return template, self._own_digests()

    def __getitem__(self, name: str) -> str:
        return self._made()[name]

    # Each made from one `_made` (the Mapping mixins would make the parts per key).
    def items(self) -> ItemsView[str, str]:
        return self._made().items()

    def keys(self) -> KeysView[str]:
        return self._made().keys()

    def values(self) -> ValuesView[str]:
        return self._made().values()

    def __eq__(self, other: object) -> bool:
        return self._made() == other

    __hash__ = None  # type: ignore[assignment]  # a mapping, as dict

    def __iter__(self) -> Iterator[str]:
        return iter(self._made())

    def __len__(self) -> int:
        return len(self._made())

    def __repr__(self) -> str:
        return repr(self._made())
