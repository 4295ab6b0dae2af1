"""Standard-library types both codecs store, and the checks their decoders share.

Paths (`PurePosixPath`, `PureWindowsPath`, `PosixPath`, `WindowsPath`, each
kept as its own type), `collections` containers (`Counter`, `OrderedDict`,
`defaultdict`, `deque`), `complex`, `Fraction` and the `ipaddress` addresses,
networks and interfaces (v4 and v6). Each codec writes them with its own tags
(`flowdag._msgpack_ext`, `flowdag._json_tags`); this module holds what both
need: the names written for paths and factories, and the decoding checks, so
that whatever a blob says, a decoder returns exactly what encode wrote or
raises `CorruptStateError`.

A `defaultdict` keeps its ``default_factory`` only when it is None or one of a
few builtin types (`FACTORIES`): a factory is code, and decoding must never
look code up by a name a blob chose.
"""

from __future__ import annotations

import ipaddress
import math
import pathlib
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable
from fractions import Fraction
from pathlib import PurePath, PurePosixPath, PureWindowsPath
from typing import Any

from flowdag._values import Unsupported, invalid, parse_exact
from flowdag.errors import CorruptStateError

__all__ = [
    "FACTORIES",
    "IP_KINDS",
    "PATH_KINDS",
    "counter_from",
    "defaultdict_from",
    "deque_from",
    "factory_name",
    "fraction_from",
    "ip_from",
    "ordereddict_from",
    "path_from",
]

# Every concrete path class, whatever the platform: a WindowsPath can be encoded
# only on Windows, and decoded only there (elsewhere it cannot be created).
PATH_KINDS: dict[type, str] = {
    PurePosixPath: "PurePosixPath",
    PureWindowsPath: "PureWindowsPath",
    pathlib.PosixPath: "PosixPath",
    pathlib.WindowsPath: "WindowsPath",
}
_PATH_TYPES = {name: kind for kind, name in PATH_KINDS.items()}

# The factories a defaultdict may keep, by the name written for them.
FACTORIES: dict[str, type] = {
    kind.__name__: kind
    for kind in (list, dict, set, frozenset, tuple, int, float, complex, str, bytes, bool)
}

# ipaddress types by their kind: the text tells v4 from v6.
IP_KINDS: dict[type, str] = {
    ipaddress.IPv4Address: "address",
    ipaddress.IPv6Address: "address",
    ipaddress.IPv4Network: "network",
    ipaddress.IPv6Network: "network",
    ipaddress.IPv4Interface: "interface",
    ipaddress.IPv6Interface: "interface",
}
_IP_PARSERS: dict[str, Callable[[str], Any]] = {
    "address": ipaddress.ip_address,
    "network": ipaddress.ip_network,  # strict: host bits set is damage
    "interface": ipaddress.ip_interface,
}


def path_from(kind: Any, text: Any) -> PurePath:
    """The path of class ``kind`` (a `PATH_KINDS` name) whose ``str`` is ``text``."""
    cls = _PATH_TYPES.get(kind) if type(kind) is str else None
    if cls is None or type(text) is not str:
        raise invalid("path", [kind, text])
    try:
        path: PurePath = cls(text)
    except NotImplementedError as exc:  # a WindowsPath off Windows, or the reverse
        raise CorruptStateError(
            f"blob holds a {kind}, which cannot be created on this system; "
            "read the store where it was written, or return a PurePath"
        ) from exc
    if str(path) != text:
        raise invalid("path", text)
    return path


def factory_name(value: defaultdict[Any, Any]) -> str | None:
    """The name a defaultdict's factory is written as; `Unsupported` if it is not builtin."""
    factory = value.default_factory
    if factory is None:
        return None
    name = getattr(factory, "__name__", None)
    if type(name) is str and FACTORIES.get(name) is factory:
        return name
    raise Unsupported(
        value,
        f"its default_factory is {factory!r}; flowdag records only None or a builtin type "
        f"({', '.join(FACTORIES)}), so convert it with dict(x) or use one of those",
    )


def _mapping(payload: Any, what: str) -> dict[Any, Any]:
    if type(payload) is not dict:
        raise invalid(what, payload)
    return payload


def counter_from(payload: Any) -> Counter[Any]:
    return Counter(_mapping(payload, "Counter"))


def ordereddict_from(payload: Any) -> OrderedDict[Any, Any]:
    return OrderedDict(_mapping(payload, "OrderedDict"))


def defaultdict_from(payload: Any) -> defaultdict[Any, Any]:
    """``[factory name or None, items]`` as encode writes it."""
    if type(payload) is not list or len(payload) != 2:
        raise invalid("defaultdict", payload)
    name, items = payload
    if name is None:
        factory = None
    elif type(name) is str and name in FACTORIES:
        factory = FACTORIES[name]
    else:
        raise invalid("defaultdict factory", name)
    return defaultdict(factory, _mapping(items, "defaultdict"))


def deque_from(payload: Any) -> deque[Any]:
    """``[maxlen or None, items]`` as encode writes it."""
    if type(payload) is not list or len(payload) != 2:
        raise invalid("deque", payload)
    maxlen, items = payload
    if (
        not (maxlen is None or (type(maxlen) is int and 0 <= maxlen <= 1 << 62))
        or type(items) is not list
        or (maxlen is not None and len(items) > maxlen)
    ):
        raise invalid("deque", payload)
    return deque(items, maxlen)


def fraction_from(payload: Any) -> Fraction:
    """``[numerator, denominator]`` in lowest terms, denominator positive."""
    if (
        type(payload) is not list
        or len(payload) != 2
        or type(payload[0]) is not int
        or type(payload[1]) is not int
        or payload[1] <= 0
        or math.gcd(payload[0], payload[1]) != 1
    ):
        raise invalid("Fraction", payload)
    return Fraction(payload[0], payload[1])


def ip_from(kind: str, text: Any) -> Any:
    """The ipaddress value of ``kind`` ("address", "network", "interface") ``text`` spells."""
    return parse_exact(f"IP {kind}", text, _IP_PARSERS[kind])
