"""How a node's function is called: its inputs and constants checked against its signature.

Design
------
By default each dependency's output goes as the keyword argument of the
dependency's name (when the function has such a parameter or ``**kwargs``),
and ``ctx`` gets the `Context`. `bind` also takes a mapping ``{parameter:
node}``, constant ``args``/``kwargs``, and ``inputs="list"`` (the deps'
outputs as one positional list, after ``args``), and checks all of it against
the signature at build time, as Python would bind the call: a parameter
bound twice, one the function does not take, one left without a value, or
too many positional arguments is a `SignatureError` naming it. A node that
uses none of these gets no `Binding` and is called as before.

A signature is read once per function, or once per code object for plain
functions (`flowdag._shapes.shape_of`): a fan-out of a million nodes over one
function, or one lambda per node, inspects it once. Constants count in the
node's code fingerprint, each by the digest of its canonical typed encoding
(`flowdag._cache_keys`): a changed constant makes a resume run the node
again, naming the argument; one that cannot be digested is refused here, at
build time.
"""

from __future__ import annotations

import functools
import keyword
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from flowdag._cache_keys import _Refused, _Walk
from flowdag._code_digests import _digest
from flowdag._fastinit import slot_init
from flowdag._shapes import (
    _POSITIONAL_ONLY,
    _VARIADIC,
    Shape,
    shape_of,
)
from flowdag.dag import Binding
from flowdag.errors import InvalidArgumentError, InvalidArgumentTypeError, SignatureError

__all__ = ["INPUT_MODES", "Bound", "bind"]

#: What ``inputs=`` takes: each output as a keyword argument, or all as one list.
INPUT_MODES: Final = ("kwargs", "list")


@dataclass(frozen=True, slots=True)
class Bound:
    """How one node is called: the `NodeSpec` fields `bind` fills in."""

    deps: tuple[str, ...]
    kwarg_deps: tuple[str, ...]
    wants_ctx: bool
    is_async: bool
    ref_deps: frozenset[str]
    binding: Binding | None


slot_init(Bound)  # one per node bound with constants or a mapping


def bind(
    name: str,
    fn: object,
    deps: Iterable[str] | Mapping[str, str] | str,
    args: object = (),
    kwargs: object = None,
    inputs: object = "kwargs",
) -> Bound:
    """Check how node ``name`` calls ``fn`` and say how to call it.

    Args:
        deps: dep names (each output as the keyword of its name), or a mapping
            ``{parameter: node}``.
        args, kwargs: constant arguments: ``args`` fill the leading positional
            parameters, ``kwargs`` named ones.
        inputs: ``"kwargs"`` or ``"list"`` (the deps' outputs as one positional
            list, in declared order, after ``args``).

    Raises:
        SignatureError: ``fn`` is not callable, or a parameter is bound twice,
            not taken, or left without a value.
        InvalidArgumentError: ``inputs`` is not one of `INPUT_MODES`, or a
            mapping of deps with ``inputs="list"``.
        InvalidArgumentTypeError: ``args``/``kwargs``/``deps`` of the wrong
            type, or a constant that cannot be digested.
    """
    if not callable(fn):
        raise SignatureError(f"node '{name}' is not callable: got {type(fn).__name__}")
    if (
        (type(deps) is list or type(deps) is tuple)
        and type(args) is tuple
        and not args
        and kwargs is None
        and inputs == "kwargs"
    ):  # the default binding, as most nodes have it: the steps below, in short
        return _by_name(name, shape_of(fn), tuple(deps))
    if inputs not in INPUT_MODES:
        raise InvalidArgumentError(
            f"node '{name}': inputs must be one of {', '.join(map(repr, INPUT_MODES))}, "
            f"not {inputs!r}"
        )
    shape = shape_of(fn)
    if type(deps) is dict or isinstance(deps, Mapping):
        if inputs == "list":
            raise InvalidArgumentError(
                f"node '{name}': inputs='list' passes the deps' outputs as one list in "
                "declared order: give deps as a list of names, not a mapping"
            )
        mapping = _names(name, "deps", deps)
        dep_names = tuple(mapping.values())
    else:
        mapping = None
        dep_names = (deps,) if isinstance(deps, str) else tuple(deps)
    constants = _constant_args(name, args)
    keywords = _NO_KWARGS if kwargs is None else _names(name, "kwargs", kwargs)
    if mapping is None and not constants and not keywords and inputs == "kwargs":
        return _by_name(name, shape, dep_names)
    return _explicit(name, fn, shape, dep_names, mapping, constants, keywords, inputs == "list")


def _by_name(name: str, shape: Shape, deps: tuple[Any, ...]) -> Bound:
    """The default binding, checked once per function and tuple of deps."""
    global _last
    last = _last  # one tuple, read once: another thread may replace it meanwhile
    if shape is last[0] and deps == last[1]:
        return last[2]  # a fan-out: node after node of one function over the same deps
    key = ("by name", deps)
    known: Bound | None = shape.layouts.get(key)
    if known is None:
        kwarg_deps, wants_ctx = _by_dep_name(name, shape, deps)
        refs = frozenset(d for d in kwarg_deps if d in shape.ref_params)
        known = Bound(deps, kwarg_deps, wants_ctx, shape.is_async, refs, None)
        if len(shape.layouts) < _MAX_LAYOUTS:
            shape.layouts[key] = known
    _last = (shape, deps, known)
    return known


#: The last default binding: (Shape, deps, Bound).
_last: tuple[Shape | None, tuple[Any, ...], Bound] = (
    None,
    (),
    Bound((), (), False, False, frozenset(), None),
)


#: The constant keyword arguments of a node given none: one dict for all (never changed).
_NO_KWARGS: dict[str, Any] = {}


def _names(name: str, option: str, given: object) -> dict[str, Any]:
    """``deps=``/``kwargs=`` as a dict whose keys are parameter names."""
    if type(given) is not dict and not isinstance(given, Mapping):
        raise InvalidArgumentTypeError(
            f"node '{name}': {option} must be a mapping of parameter names, e.g. "
            f"{option}={{'src': 'source'}}, not {type(given).__name__}"
        )
    for key in given:
        if not isinstance(key, str):
            raise InvalidArgumentTypeError(
                f"node '{name}': {option} keys must be parameter names (str), not {key!r}"
            )
        if not key.isidentifier() or keyword.iskeyword(key):
            raise SignatureError(
                f"node '{name}': {option} key {key!r} is not a valid parameter name; "
                "use the name of one of the function's parameters"
            )
    return dict(given)


def _constant_args(name: str, args: object) -> tuple[Any, ...]:
    if type(args) is tuple:
        return args
    if isinstance(args, tuple | list):
        return tuple(args)
    raise InvalidArgumentTypeError(
        f"node '{name}': args must be a tuple of constant arguments, e.g. args=(3,), "
        f"not {type(args).__name__}"
    )


def _by_dep_name(name: str, shape: Shape, deps: tuple[str, ...]) -> tuple[tuple[str, ...], bool]:
    """The default binding: which deps go as keywords of their name, and whether ``ctx``."""
    params = shape.params
    if params is None:
        return (), False  # some builtins have no signature: call them without arguments
    kwarg_deps = []
    for param, kind, has_default in params:
        if param == "ctx" and kind is not _POSITIONAL_ONLY:
            continue
        if param in deps and kind is not _POSITIONAL_ONLY:
            kwarg_deps.append(param)
        elif kind is _POSITIONAL_ONLY and not has_default:
            raise SignatureError(
                f"node '{name}': parameter '{param}' is positional-only (before '/'), "
                "but dependencies and ctx are passed by keyword; remove the '/', "
                "give it a default, or pass it with args="
            )
        elif not has_default and kind not in _VARIADIC:
            known = ", ".join(deps) if deps else "none"
            raise SignatureError(
                f"node '{name}': parameter '{param}' is neither a dependency "
                f"(deps: {known}) nor 'ctx'; add it to deps, give it a default, or remove it"
            )
    wants_ctx = any(param == "ctx" for param, _, _ in params)
    if shape.takes_kwargs:
        # A parameter named ctx always gets the Context; a dep named ctx is in ctx.inputs.
        return tuple(d for d in deps if d != "ctx"), wants_ctx
    return tuple(kwarg_deps), wants_ctx


def _explicit(
    name: str,
    fn: object,
    shape: Shape,
    deps: tuple[str, ...],
    mapping: dict[str, str] | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    listed: bool,
) -> Bound:
    """A binding with a mapping of deps, constants or an input list, checked."""
    # The check depends on parameter names and counts only, not on the nodes bound
    # or the constants' values: a fan-out of nodes bound alike is checked once.
    key = (
        None if mapping is None else tuple(mapping),
        deps if mapping is None and not listed else None,
        len(args),
        tuple(kwargs),
        listed,
    )
    layout = shape.layouts.get(key)
    if layout is None:
        layout = _layout(name, fn, shape, deps, mapping, len(args), kwargs, listed)
        if len(shape.layouts) < _MAX_LAYOUTS:
            shape.layouts[key] = layout
    global _last_derived
    last = _last_derived  # one tuple, read once: another thread may replace it meanwhile
    if layout is last[0] and deps == last[1]:
        derived = last[2]  # a fan-out: nodes bound alike over the same deps
    else:
        derived = _derive(shape, layout, deps, mapping, listed)
        _last_derived = (layout, deps, derived)
    pairs, passed, ref_params, refs, input_part = derived
    parts = [
        (part, _constant_digest(name, "args", i, value))
        for i, (part, value) in enumerate(zip(layout.arg_parts, args, strict=True))
    ]
    if kwargs:
        taken = {part for part, _ in parts}
        for param, value in kwargs.items():
            part = f"argument {param}"  # a positional-only one of that name may be in args
            if part in taken:
                part = f"{part} (by keyword)"
            parts.append((part, _constant_digest(name, "kwargs", param, value)))
    if input_part is not None:
        parts.append(input_part)
    binding = Binding(
        args, kwargs, pairs, deps if listed else None, tuple(sorted(parts)), ref_params
    )
    declared = deps if mapping is None else passed
    return Bound(declared, passed, shape.wants_ctx, shape.is_async, refs, binding)


def _derive(
    shape: Shape,
    layout: _Layout,
    deps: tuple[str, ...],
    mapping: dict[str, str] | None,
    listed: bool,
) -> tuple[Any, ...]:
    """What a binding's layout and deps fix, whatever its constants: (pairs, the deps
    passed, the parameters and the deps that get a Ref, the input binding's part)."""
    if mapping is not None:
        pairs = tuple(zip(layout.params, mapping.values(), strict=True))
        passed = tuple(dict.fromkeys(mapping.values()))
    else:
        pairs = tuple((dep, dep) for dep in layout.params)
        passed = tuple(dict.fromkeys(deps)) if listed else layout.params
    ref_params = frozenset(param for param, _ in pairs if param in shape.ref_params)
    refs = frozenset(dep for param, dep in pairs if param in ref_params)
    input_part = None
    if listed:
        input_part = ("input binding", _layout_digest(("list", *deps)))
    elif any(param != dep for param, dep in pairs):
        input_part = ("input binding", _layout_digest(tuple(sorted(pairs))))
    return pairs, passed, ref_params or _NO_REFS, refs or _NO_REFS, input_part


_NO_REFS: frozenset[str] = frozenset()  # shared by every binding without a Ref parameter

#: The last explicit binding's (layout, deps, what `_derive` made of them).
_last_derived: tuple[Any, tuple[Any, ...], tuple[Any, ...]] = (None, (), ())


_MAX_LAYOUTS = 256  # per function: deps bound by their own names can vary without end


@dataclass(frozen=True, slots=True)
class _Layout:
    """A checked binding, without its nodes and values."""

    arg_parts: tuple[str, ...]  # the fingerprint part of each constant positional argument
    params: tuple[str, ...]  # the keyword parameters deps go to (mapping keys, or dep names)


def _layout(
    name: str,
    fn: object,
    shape: Shape,
    deps: tuple[str, ...],
    mapping: dict[str, str] | None,
    nargs: int,
    kwargs: dict[str, Any],
    listed: bool,
) -> _Layout:
    check = _Check(name, fn, shape)
    arg_parts = tuple(check.positional(f"args[{i}]") for i in range(nargs))
    if listed:
        check.positional("the input list (inputs='list')")
    params: list[str] = []
    if mapping is not None:
        for param, dep in mapping.items():
            check.keyword(param, f"deps (node '{dep}')")
            params.append(param)
    elif not listed:  # deps by name, beside constants: as the default binding passes them
        for dep in deps:
            if check.accepts(dep):
                check.keyword(dep, "deps")
                params.append(dep)
    for param in kwargs:
        check.keyword(param, "kwargs")
    check.complete()
    return _Layout(arg_parts, tuple(params))


class _Check:
    """Binds a call's arguments to parameters one by one, as Python would, refusing conflicts."""

    def __init__(self, name: str, fn: object, shape: Shape) -> None:
        self.node = name
        self.fn = getattr(fn, "__qualname__", None) or type(fn).__name__
        self.params = shape.params
        self.by_name = shape.by_name
        self.positionals = shape.positionals
        self.varargs = shape.varargs
        self.takes_kwargs = shape.takes_kwargs
        self.wants_ctx = shape.wants_ctx
        self.bound: dict[str, str] = {}  # named parameter -> what binds it
        self.extra: dict[str, str] = {}  # keyword going to **kwargs -> what binds it
        self.count = 0  # positional arguments so far

    def positional(self, what: str) -> str:
        """Bind the next positional argument; the name of its fingerprint part."""
        index = self.count
        self.count += 1
        if self.params is None:
            return f"argument #{index}"
        if index < len(self.positionals):
            param = self.positionals[index]
            if param == "ctx" and self.wants_ctx:
                self._twice(param, what, "the Context (ctx)")
            self.bound[param] = what
            return f"argument {param}"
        if self.varargs is None:
            shown = ", ".join(self.positionals) or "none"
            raise SignatureError(
                f"node '{self.node}': {what} has no parameter to go to: {self.fn} takes "
                f"{len(self.positionals)} positional parameter(s) ({shown}); pass fewer "
                "args, or name the parameter with kwargs="
            )
        return f"argument *{self.varargs}[{index - len(self.positionals)}]"

    def accepts(self, param: str) -> bool:
        """Whether a dep named ``param`` is passed by name (the default binding's rule)."""
        if param == "ctx":
            return False  # ctx is the Context; a dep named ctx is in ctx.inputs
        found = self.by_name.get(param)
        if found is not None and found[0] not in _VARIADIC and found[0] is not _POSITIONAL_ONLY:
            return True
        return self.takes_kwargs

    def keyword(self, param: str, what: str) -> None:
        """Bind keyword argument ``param``."""
        if param == "ctx":
            raise SignatureError(
                f"node '{self.node}': {what} binds parameter 'ctx', which is reserved for "
                "the Context; rename that parameter"
            )
        if self.params is None:
            self._bind_once(self.extra, param, what)
            return
        found = self.by_name.get(param)
        if found is None or found[0] in _VARIADIC or found[0] is _POSITIONAL_ONLY:
            if self.takes_kwargs:  # Python sends it to **kwargs
                self._bind_once(self.extra, param, what)
                return
            if found is not None and found[0] is _POSITIONAL_ONLY:
                raise SignatureError(
                    f"node '{self.node}': {what} binds parameter '{param}' by keyword, but it "
                    f"is positional-only (before '/'); pass it with args= or remove the '/'"
                )
            shown = ", ".join(p for p, k, _ in self.params if k not in _VARIADIC) or "none"
            raise SignatureError(
                f"node '{self.node}': {what} binds parameter '{param}', which {self.fn} "
                f"does not take (its parameters: {shown}); fix the name or add the parameter"
            )
        self._bind_once(self.bound, param, what)

    def _bind_once(self, bound: dict[str, str], param: str, what: str) -> None:
        if param in bound:
            self._twice(param, bound[param], what)
        bound[param] = what

    def _twice(self, param: str, first: str, second: str) -> typing.NoReturn:
        raise SignatureError(
            f"node '{self.node}': parameter '{param}' is bound twice, by {first} and by "
            f"{second}; bind it once"
        )

    def complete(self) -> None:
        """Refuse a parameter left without a value."""
        for param, kind, has_default in self.params or ():
            if has_default or kind in _VARIADIC or param in self.bound:
                continue
            if param == "ctx" and self.wants_ctx:
                continue
            raise SignatureError(
                f"node '{self.node}': parameter '{param}' gets no value; bind it with "
                f"deps={{'{param}': NODE}}, args= or kwargs=, give it a default, or remove it"
            )


@functools.lru_cache(maxsize=1024)  # a fan-out binds many nodes alike: one digest
def _layout_digest(layout: tuple[Any, ...]) -> str:
    return _digest(repr(layout).encode())


def _constant_digest(name: str, option: str, at: object, value: Any) -> str:
    """The digest of a constant argument's canonical typed encoding (``option[at]``)."""
    try:
        return _digest(_Walk().encode(value, "", 0))
    except _Refused as exc:
        why = f" ({exc.reason})" if exc.reason else ""
        raise InvalidArgumentTypeError(
            f"node '{name}': constant {option}[{at!r}]{exc.path} is a "
            f"{type(exc.value).__qualname__}, "
            f"which cannot be part of the node's code fingerprint{why}; pass plain values "
            "(numbers, strings, tuples, lists, dicts, dataclasses), or make it inside the node"
        ) from None
