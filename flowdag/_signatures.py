"""A node function's signature, inspected once per code object or once per function.

`inspect.signature` costs several microseconds, and a builder calls it for
every node: a fan-out of a million nodes written as one lambda per node
(``lambda root: ...`` in a loop) makes a million function objects over a
single code object. For a plain function (a `types.FunctionType` with no
attributes, so no ``__wrapped__``, ``__signature__`` or coroutine marker, and
no annotations) the signature follows from three things only: its code
object (parameter names, kinds, ``async``), how many positional parameters
have defaults, and which keyword-only ones do. Those are the memo's key, so
such a fan-out inspects one signature. Any other callable is inspected once
per object (memoised weakly).

In the signature given back for a plain function, each default is the
placeholder `DEFAULT`: functions of one code have defaults of their own, so
callers may ask whether a parameter has one (``param.default is
param.empty``), never what it is.
"""

from __future__ import annotations

import inspect
import types
import weakref
from typing import Any, Final

__all__ = ["DEFAULT", "signature_of"]


class _Default:
    def __repr__(self) -> str:
        return "<default>"


#: The default of a parameter in a signature memoised by code: it has one.
DEFAULT: Final = _Default()

#: id(code) -> (the code, {(positional defaults, keyword-only names with defaults):
#: signature or None}). Keyed by id, the code kept beside it: a code object's hash is
#: recomputed from its contents at every lookup. Emptied when it grows past
#: _MAX_CODES, so code compiled on the fly (exec) cannot pile up here.
_BY_CODE: dict[int, tuple[types.CodeType, dict[Any, inspect.Signature | None]]] = {}
_MAX_CODES = 1024
_BY_OBJECT: weakref.WeakKeyDictionary[Any, inspect.Signature | None] = weakref.WeakKeyDictionary()


def signature_of(fn: Any) -> inspect.Signature | None:
    """``inspect.signature(fn)``, or None when it has none (some builtins); memoised."""
    if type(fn) is types.FunctionType and not fn.__dict__ and not fn.__annotations__:
        code = fn.__code__
        entry = _BY_CODE.get(id(code))
        if entry is None or entry[0] is not code:
            if len(_BY_CODE) >= _MAX_CODES:
                _BY_CODE.clear()
            entry = _BY_CODE[id(code)] = (code, {})
        key = (len(fn.__defaults__ or ()), tuple(fn.__kwdefaults__ or ()))
        by_defaults = entry[1]
        try:
            return by_defaults[key]
        except KeyError:
            found = by_defaults[key] = _placeholders(_inspect(fn))
            return found
    try:
        return _BY_OBJECT[fn]
    except KeyError:
        found = _BY_OBJECT[fn] = _inspect(fn)
        return found
    except TypeError:  # unhashable, or no weak reference to it (a builtin): not memoised
        return _inspect(fn)


def _inspect(fn: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def _placeholders(signature: inspect.Signature | None) -> inspect.Signature | None:
    if signature is None:
        return None
    return signature.replace(
        parameters=[
            p if p.default is p.empty else p.replace(default=DEFAULT)
            for p in signature.parameters.values()
        ]
    )
