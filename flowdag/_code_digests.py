"""Digests of code and of captured values, for code fingerprints (`flowdag._fingerprint`).

Pure: reads source files through `inspect`, nothing else.
"""

from __future__ import annotations

import ast
import datetime
import decimal
import dis
import enum
import fractions
import functools
import hashlib
import inspect
import os
import re
import sys
import sysconfig
import textwrap
import types
import uuid
from pathlib import Path, PurePath
from typing import Any

_IMMUTABLE = (type(None), bool, int, float, complex, str, bytes)
#: Immutable values of the standard library that count by their repr (a path, a
#: date, a compiled pattern...): ``HERE = Path(__file__).parent`` is a constant.
_BY_REPR = (
    PurePath,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    decimal.Decimal,
    fractions.Fraction,
    uuid.UUID,
    range,
    re.Pattern,
    enum.Enum,
)
#: `flowdag.cli.loader` imports a workflow file under a fresh module name each
#: time: a part is named by the file's stem instead, the same on every run.
_LOADED = re.compile(r"_flowdag_workflow_(.+)_[0-9a-f]{8}")


# -- digests of code and values ---------------------------------------------------------------


def _code_digest(code: types.CodeType) -> str:
    """Instructions, names and constants, nested code included; no line numbers or file."""
    h = hashlib.sha256()
    _feed_code(h, code)
    return h.hexdigest()


def _feed_code(h: Any, code: types.CodeType) -> None:
    h.update(code.co_code)
    h.update(repr((code.co_names, code.co_varnames, code.co_freevars, code.co_argcount)).encode())
    consts = code.co_consts
    if (
        consts
        and (consts[0] is None or isinstance(consts[0], str))
        and (code.co_flags & inspect.CO_NEWLOCALS)
    ):
        # The docstring's slot (None without one): it does not count, and co_code
        # reads it only when that None is also a value the function uses.
        consts = consts[1:]
    for const in consts:
        if isinstance(const, types.CodeType):
            _feed_code(h, const)
        else:
            h.update(repr(_value_key(const)).encode())


def _source_digest(fn: Any) -> str:
    """The normalised source (see the module docstring), or "" when there is none."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return ""  # no source (built at run time) or not one statement (a lambda mid-line)
    _strip_docstrings(tree)
    if getattr(fn, "__name__", None) == "<lambda>":
        # Its source is the lines it is on: the lambda alone counts, not the call
        # around it (wf.add_node("x", lambda: ...)); several on one line: bytecode only.
        lambdas = [node for node in ast.walk(tree) if isinstance(node, ast.Lambda)]
        return _digest(ast.unparse(lambdas[0]).encode()) if len(lambdas) == 1 else ""
    top = tree.body[0] if tree.body else None
    if isinstance(top, ast.FunctionDef | ast.AsyncFunctionDef):
        top.name = "_"  # a rename does not change what the node computes
        top.decorator_list = []  # nor does how it was registered
    return _digest(ast.unparse(tree).encode())


def _class_source(cls: type) -> str:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return _name_of(cls)
    _strip_docstrings(tree)
    return ast.unparse(tree)


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = node.body[1:] or [ast.Pass()]


#: Captured values a shape may hold: their (type, value) pairs compare exactly.
_EXACT = frozenset({type(None), bool, int, float, str, bytes})


def _captured(fn: Any) -> tuple[tuple[int, ...], tuple[Any, ...], tuple[Any, ...]] | None:
    """What a plain function captures, when each value counts by value alone, else None.

    ``(cells, values, defaults)``: the indexes of its filled closure cells, their
    values, and its default values (``__defaults__``; a function with keyword
    defaults, or capturing anything but None, bool, int, float, str or bytes,
    gives None and is walked). The lambdas one line makes in a loop differ only here.
    """
    # Not ``fn.__dict__``: reading it gives every function a dict it keeps (64 bytes).
    if type(fn) is not types.FunctionType or fn.__kwdefaults__ or hasattr(fn, "__wrapped__"):
        return None  # keyword defaults, or a wrapper: what it wraps is walked instead
    defaults = fn.__defaults__ or ()
    closure = fn.__closure__
    cells: tuple[int, ...] = ()
    values: tuple[Any, ...] = ()
    if closure:
        filled = []
        for i, cell in enumerate(closure):
            try:
                filled.append((i, cell.cell_contents))
            except ValueError:  # an empty cell: nothing captured yet, no part
                continue
        cells = tuple(i for i, _ in filled)
        values = tuple(value for _, value in filled)
    for value in (*values, *defaults):
        if type(value) not in _EXACT:
            return None
    return cells, values, defaults


# The two below build ``repr(_value_key(...))`` of `_EXACT` values as text (the
# type names of `_EXACT` need no quoting): the same digests, at a third of the cost.


def _cell_digest(value: Any) -> str:
    """``_digest(repr(_value_key(value)))`` of a value of an `_EXACT` type."""
    return _digest(f"(('{type(value).__name__}', {value!r}),)".encode())


def _defaults_digest(defaults: tuple[Any, ...]) -> str:
    """``_digest(repr(_value_key(defaults)))`` of a non-empty tuple of `_EXACT` values."""
    if len(defaults) == 1:  # the usual: ``lambda x, i=i: ...``
        (value,) = defaults
        text = f"(('tuple', (('{type(value).__name__}', {value!r}),)),)"
        return hashlib.sha256(text.encode()).hexdigest()  # `_digest`, inlined
    items = ", ".join(f"('{type(value).__name__}', {value!r})" for value in defaults)
    return _digest(f"(('tuple', ({items})),)".encode())


#: What a captured template's fingerprints keep of their function (`_Template.held`).
HOLDS_VALUES, HOLDS_DEFAULTS, HOLDS_BOTH = 1, 2, 3


class _Template:
    """The digests of the parts many fingerprints share, and where the others go.

    ``fixed`` and ``fixed_sources`` are the shared parts (as a `Fingerprint`'s
    ``parts``, and the sources `_combine` digests into its ``source_digest``);
    ``names`` the parts each fingerprint has its own digest of (a function's
    filled closure cells, then its defaults, with ``captured``). `_combine` of
    the whole is the sorted lines ``name=digest`` joined by newlines: the text
    between the own digests never changes, so it is cut once into segments and
    a fingerprint costs one join and one hash of its own digests.
    """

    __slots__ = (
        "captured",
        "digest_text",
        "distinct",
        "fixed",
        "fixed_sources",
        "holds",
        "key",
        "names",
        "order",
        "source_text",
    )

    def __init__(
        self,
        fixed: dict[str, str],
        fixed_sources: dict[str, str],
        names: tuple[str, ...],
        *,
        captured: bool,
        holds: int = HOLDS_BOTH,
    ) -> None:
        self.captured = captured
        self.holds = holds
        self.fixed = fixed
        self.fixed_sources = fixed_sources
        self.names = names
        # Whether ``parts`` is ``fixed`` then ``names`` as they are (no name twice):
        # a store may then write the shared parts once and each fingerprint's own after.
        self.distinct = len(set(names)) == len(names) and not fixed.keys() & set(names)
        self.digest_text, self.order = _segments(fixed, names)
        self.source_text, _ = _segments(fixed_sources, names)
        # Equal for two templates only if they make the same digests of the same own parts.
        self.key = _digest(
            repr((self.digest_text, self.order, self.source_text, captured)).encode()
        )

    def own(self, raw: Any) -> tuple[str, ...]:
        """The digests of ``names`` from what a fingerprint keeps: with ``captured``,
        what `held` says of a function's values and defaults (`_captured`), else
        the digests themselves."""
        if not self.captured:
            return tuple(raw)
        holds = self.holds
        if holds == HOLDS_DEFAULTS:  # the usual: a lambda's defaults (``lambda x, i=i: ...``)
            return (_defaults_digest(raw),)
        if holds == HOLDS_VALUES:
            return tuple(map(_cell_digest, raw))
        values, defaults = raw
        return (*map(_cell_digest, values), _defaults_digest(defaults))

    def held(self, values: tuple[Any, ...], defaults: tuple[Any, ...]) -> Any:
        """What a fingerprint of a function with these captured ``values`` (of its
        filled cells) and ``defaults`` keeps: the one of them this template's
        functions have (the defaults, the function's own tuple: nothing per node),
        or both as ``(values, defaults)``."""
        holds = self.holds
        if holds == HOLDS_DEFAULTS:
            return defaults
        return values if holds == HOLDS_VALUES else (values, defaults)

    def captured_of(self, raw: Any) -> Any:
        """``(values, defaults)`` of what `held` gave (the fingerprint's identity)."""
        holds = self.holds
        if not self.captured or holds == HOLDS_BOTH:
            return raw
        return ((), raw) if holds == HOLDS_DEFAULTS else (raw, ())

    def digest(self, own: tuple[str, ...]) -> str:
        """`_combine` of the fixed parts and ``own`` (the digests of ``names``, in order)."""
        if len(own) == 1:  # `_joined` of the usual one own part, inlined (once per node)
            text = self.digest_text
            return hashlib.sha256((text[0] + own[0] + text[1]).encode()).hexdigest()
        return _digest(_joined(self.digest_text, self.order, own).encode())

    def source_digest(self, own: tuple[str, ...]) -> str:
        """`_combine` of the fixed sources and ``own``."""
        return _digest(_joined(self.source_text, self.order, own).encode())

    def parts(self, own: tuple[str, ...]) -> dict[str, str]:
        return {**self.fixed, **dict(zip(self.names, own, strict=True))}


def _segments(
    fixed: dict[str, str], names: tuple[str, ...]
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The text `_combine` hashes, cut around the digests of ``names``, and their order in it."""
    index = {name: i for i, name in enumerate(names)}
    segments: list[str] = []
    order: list[int] = []
    current: list[str] = []
    for k, name in enumerate(sorted(fixed.keys() | index.keys())):
        current.append(f"\n{name}=" if k else f"{name}=")
        if name in index:
            segments.append("".join(current))
            current = []
            order.append(index[name])
        else:
            current.append(fixed[name])
    segments.append("".join(current))
    return tuple(segments), tuple(order)


def _joined(segments: tuple[str, ...], order: tuple[int, ...], own: tuple[str, ...]) -> str:
    if len(order) == 1:  # the usual: one own part (a lambda's defaults, a constant)
        return segments[0] + own[order[0]] + segments[1]
    pieces = [segments[0]]
    for i, segment in zip(order, segments[1:], strict=True):
        pieces.append(own[i])
        pieces.append(segment)
    return "".join(pieces)


@functools.lru_cache(maxsize=4096)
def _names_used(code: types.CodeType) -> tuple[frozenset[str], frozenset[str]]:
    """The global names ``code`` (and code nested in it) loads, and the attributes it reads."""
    names: set[str] = set()
    attributes: set[str] = set()
    for instruction in dis.get_instructions(code):
        if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
            names.add(str(instruction.argval))
        elif instruction.opname in ("LOAD_ATTR", "LOAD_METHOD"):
            attributes.add(str(instruction.argval))
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            more_names, more_attributes = _names_used(const)
            names |= more_names
            attributes |= more_attributes
    return frozenset(names), frozenset(attributes)


def _value_key(*values: Any) -> Any:
    """What a captured value counts as: immutables by value, anything else by type."""
    out: list[Any] = []
    for value in values:
        if isinstance(value, _IMMUTABLE) and type(value) in _IMMUTABLE:
            out.append((type(value).__name__, value))
        elif type(value) is tuple:
            out.append(("tuple", _value_key(*value)))
        elif isinstance(value, re.Pattern):  # its repr is cut at 200 characters
            out.append(("re.Pattern", repr((value.pattern, value.flags))))
        elif isinstance(value, _BY_REPR):
            out.append((_name_of(type(value)), repr(value)))
        elif type(value) is frozenset:
            out.append(("frozenset", sorted(map(repr, _value_key(*value)))))
        else:
            out.append(("object", _name_of(type(value))))
    return tuple(out)


def _name_of(obj: Any) -> str:
    """``module.qualname (file.py)``: how a part is named when it changed."""
    module = getattr(obj, "__module__", "") or ""
    loaded = _LOADED.fullmatch(module)
    if loaded is not None:
        module = loaded.group(1)
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", repr(obj))
    file = _file_of(obj)
    where = f" ({os.path.basename(file)})" if file and not file.startswith("<") else ""
    return f"{module}.{qualname}{where}" if module else f"{qualname}{where}"


def _module_name(module: types.ModuleType) -> str:
    """A module's name, as `_name_of` shows it (a file the CLI loaded: its stem)."""
    loaded = _LOADED.fullmatch(module.__name__)
    return module.__name__ if loaded is None else loaded.group(1)


def _file_of(obj: Any) -> str | None:
    """The file ``obj``'s code comes from, or None."""
    if isinstance(obj, types.ModuleType):
        file = getattr(obj, "__file__", None)
        return None if file is None else str(file)
    code = getattr(obj, "__code__", None)
    if code is not None:
        return str(code.co_filename)
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    file = getattr(module, "__file__", None)
    return None if file is None else str(file)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _combine(parts: dict[str, str]) -> str:
    return _digest("\n".join(f"{name}={digest}" for name, digest in sorted(parts.items())).encode())


def _installed_prefixes() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    prefixes = {paths.get(key, "") for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    prefixes |= {sys.base_prefix, sys.prefix}
    return tuple(str(Path(p).resolve()) for p in prefixes if p)
