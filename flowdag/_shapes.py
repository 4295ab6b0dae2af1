"""What calling a node's function needs of its signature, read once per function.

`shape_of` reads a signature into a `Shape` (its parameters, whether it is
``async``, which parameters are annotated `flowdag.Ref`, whether it takes
``ctx``) and memoises it: once per code object for plain functions (a lambda
per node in a loop shares one code, and nothing but the code and which
parameters have defaults shapes its signature), once per object (weakly) for
any other callable. `flowdag._binding` checks a node's inputs and constants
against it.
"""

from __future__ import annotations

import inspect
import types
import typing
import weakref
from dataclasses import dataclass, field
from typing import Any

from flowdag.refs import Ref

__all__ = ["Shape", "shape_of"]

_POSITIONAL_ONLY = inspect.Parameter.POSITIONAL_ONLY
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_VAR_POSITIONAL = inspect.Parameter.VAR_POSITIONAL
_VAR_KEYWORD = inspect.Parameter.VAR_KEYWORD
_VARIADIC = (_VAR_POSITIONAL, _VAR_KEYWORD)


@dataclass(frozen=True, slots=True)
class Shape:
    """What binding needs of a function's signature, read once per function.

    ``params`` is None when the function has no signature to read (some
    builtins): it is then called with what it is given, unchecked.
    """

    params: tuple[tuple[str, inspect._ParameterKind, bool], ...] | None  # (name, kind, default?)
    is_async: bool
    ref_params: frozenset[str]  # parameters annotated `flowdag.Ref`
    by_name: dict[str, tuple[inspect._ParameterKind, bool]] = field(default_factory=dict)
    positionals: tuple[str, ...] = ()  # the parameters a positional argument can fill, in order
    varargs: str | None = None  # the name of its ``*args``, if it has one
    takes_kwargs: bool = False  # it has a ``**kwargs``
    wants_ctx: bool = False  # a parameter ``ctx`` that a keyword can reach: the Context
    #: Checked bindings (`_layout`), without their nodes and values: nodes bound
    #: alike are checked once.
    layouts: dict[tuple[Any, ...], Any] = field(default_factory=dict, compare=False)


# Weak: a function made per node (a lambda in a loop) is not kept alive by its shape.
_SHAPES: weakref.WeakKeyDictionary[Any, Shape] = weakref.WeakKeyDictionary()


#: id(code) -> (the code, {(positional defaults, keyword-only names with defaults):
#: Shape}): plain functions of one code (a lambda per node in a loop) share a shape.
#: Keyed by id, the code kept beside it (a code object's hash is recomputed from its
#: contents at every lookup); emptied past 1024 codes, so code made by exec cannot pile up.
_BY_CODE: dict[int, tuple[types.CodeType, dict[Any, Shape]]] = {}


def shape_of(fn: Any) -> Shape:
    """The `Shape` of ``fn``'s signature; inspected once per code (plain functions)
    or once per function object (any other callable)."""
    global _last
    if type(fn) is types.FunctionType and _plain(fn):
        # Nothing but its code and which parameters have defaults shapes its signature.
        code, defaults, kwdefaults = fn.__code__, fn.__defaults__, fn.__kwdefaults__
        last = _last  # one tuple, read once: another thread may replace it meanwhile
        if (
            code is last[0]
            and kwdefaults is None
            and (0 if defaults is None else len(defaults)) == last[1]
        ):
            return last[2]  # the same code as the last function: a lambda per node
        entry = _BY_CODE.get(id(code))
        if entry is None or entry[0] is not code:
            if len(_BY_CODE) >= 1024:
                _BY_CODE.clear()
            entry = _BY_CODE[id(code)] = (code, {})
        key = (len(defaults or ()), tuple(kwdefaults or ()))
        shape = entry[1].get(key)
        if shape is None:
            shape = entry[1][key] = _inspect(fn)
        if kwdefaults is None:
            _last = (code, key[0], shape)
        return shape
    try:
        known = _SHAPES.get(fn)
    except TypeError:  # unhashable, or no weak reference to it (a builtin): not memoised
        return _inspect(fn)
    if known is None:
        known = _SHAPES[fn] = _inspect(fn)
    return known


def _plain(fn: types.FunctionType) -> bool:
    """Whether a function's signature is its code's: no annotations, nothing
    ``inspect.signature`` follows instead (``__wrapped__``, ``__signature__``).

    Read without ``fn.__dict__`` and, for a lambda (which has no annotations),
    ``fn.__annotations__``: each gives the function an empty dict it keeps (64
    bytes a node, for a lambda per node).
    """
    if fn.__code__.co_name != "<lambda>" and fn.__annotations__:
        return False
    return not (hasattr(fn, "__wrapped__") or hasattr(fn, "__signature__"))


#: The last plain function without keyword-only defaults: (its code, how many
#: positional defaults, its Shape). A loop adding a lambda per node asks for one shape.
_last: tuple[Any, int, Shape] = (None, -1, Shape(None, False, frozenset()))


def _inspect(fn: Any) -> Shape:
    is_async = inspect.iscoroutinefunction(fn)
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return Shape(None, is_async, frozenset())
    params = tuple(
        (p.name, p.kind, p.default is not p.empty) for p in signature.parameters.values()
    )
    ctx = signature.parameters.get("ctx")
    return Shape(
        params,
        is_async,
        _ref_params(fn, signature),
        {p: (kind, default) for p, kind, default in params},
        tuple(p for p, kind, _ in params if kind in _POSITIONAL),
        next((p for p, kind, _ in params if kind is _VAR_POSITIONAL), None),
        any(kind is _VAR_KEYWORD for _, kind, _ in params),
        ctx is not None and ctx.kind is not _POSITIONAL_ONLY,
    )


def _ref_params(fn: Any, signature: inspect.Signature) -> frozenset[str]:
    """The parameters annotated `flowdag.Ref`: they receive the Ref, not the value."""
    annotated = {
        p.name: p.annotation
        for p in signature.parameters.values()
        if p.annotation is not p.empty and p.kind not in _VARIADIC
    }
    if not annotated:
        return frozenset()
    try:  # string annotations (from __future__ import annotations) resolved
        hints = typing.get_type_hints(fn)
    except Exception:  # a name the function's module cannot resolve: read the strings
        hints = {}
    return frozenset(
        param
        for param, annotation in annotated.items()
        if hints.get(param, annotation) is Ref
        or (isinstance(annotation, str) and annotation.rpartition(".")[2] == "Ref")
    )
