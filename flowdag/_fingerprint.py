"""Code fingerprints: what a node's output depends on in code, as a digest with named parts.

Design
------
A node's fingerprint covers its function and what the function reaches that
can change its output: the project-local helpers it calls (functions and
classes of modules outside the standard library and installed packages,
followed recursively), the values its closures capture, and the module
globals it reads. Each part is digested alone and kept by name (``"helper
clean_rows (etl/helpers.py)"``), so a change can be named, not only noticed.

A function counts by its *normalised source*: parsed, its docstrings dropped,
its own name and decorators neutralised, printed again (`ast.unparse`), so
comments, docstrings, formatting and a rename change nothing. Its bytecode
(instructions, names and constants) is digested apart: bytecode also catches
a function edited on disk but not reloaded, and one without source (built at
run time); a change of bytecode alone, with the same normalised source, is
what a new Python version does, and `Fingerprint.source_only` lets a caller
treat it so.

Captured values and globals: immutable constants (None, bool, int, float,
complex, str, bytes, and tuples and frozensets of them) count by value;
functions and classes by their own fingerprint; anything else (a list a test
appends to, a client, a connection) by its type only, so state that changes
as the program runs never makes every node look edited. Never silently: the
first time a process counts a function's global or captured value by type,
logger ``"flowdag"`` warns once, naming it and its type.

A node's fingerprint (`node_fingerprints`) is its function's, salted with its
``version=``, the fingerprints of its ``extract`` and ``preview`` hooks
(they shape the stored output), and its constant arguments and input binding
(`flowdag._binding`: parts ``"argument n"``, ``"input binding"``); options
that do not change the output (retries, timeout, pool) do not count.

Pure: reads source files through `inspect` and the objects it is given; no
other I/O. Each object is digested once per `Fingerprinter` (a run makes one).
"""

from __future__ import annotations

import functools
import inspect
import logging
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowdag._code_digests import (
    HOLDS_BOTH,
    HOLDS_DEFAULTS,
    HOLDS_VALUES,
    _captured,
    _class_source,
    _code_digest,
    _combine,
    _digest,
    _file_of,
    _installed_prefixes,
    _module_name,
    _name_of,
    _names_used,
    _source_digest,
    _Template,
    _value_key,
)
from flowdag._fingerprint_value import Fingerprint

if TYPE_CHECKING:
    from flowdag.dag import DAG

__all__ = ["Fingerprint", "Fingerprinter", "each_fingerprint", "node_fingerprints"]

logger = logging.getLogger("flowdag")

_MAX_DEPTH = 50  # helpers calling helpers: deeper chains are cut, by name
#: (function, part) pairs already warned about as counted by type: one warning per process.
_WARNED: set[tuple[str, str]] = set()


class Fingerprinter:
    """Fingerprints functions, each function and helper digested once.

    Args:
        project_root: where project-local code lives; None: any module that is
            neither in the standard library nor an installed package.
    """

    def __init__(self, project_root: str | Path | None = None) -> None:
        self._root = None if project_root is None else str(Path(project_root).resolve())
        # id(code) -> its bytecode digest, source digest, and the names it reads.
        self._done: dict[int, tuple[str, str, tuple[frozenset[str], frozenset[str]]]] = {}
        self._nodes: dict[tuple[int, str], Fingerprint] = {}  # (id(fn), extra) -> fingerprint
        self._keep: list[Any] = []  # the digested objects stay alive, so ids stay theirs
        # (id(code), id(globals), extra, filled cells, has defaults) -> what such functions share.
        self._templates: dict[tuple[Any, ...], tuple[_Template, Fingerprint | None]] = {}
        self._installed = _installed_prefixes()
        self._local_files: dict[str, bool] = {}  # file name -> whether project-local

    def fingerprint(self, fn: Callable[..., Any], *, extra: str = "") -> Fingerprint:
        """The fingerprint of node function ``fn``; ``extra`` (e.g. a version) counts too."""
        captured = _captured(fn)
        if captured is not None:
            return self._captured(fn, extra, *captured)
        known = self._nodes.get((id(fn), extra))
        if known is not None:  # many nodes share a function: one walk each
            return known
        parts: dict[str, str] = {}
        sources: dict[str, str] = {}
        # The node's own function is "function": renaming it changes nothing computed.
        self._function(fn, "function", parts, sources, 0)
        if extra:
            parts["version"] = sources["version"] = _digest(extra.encode())
        found = self._nodes[(id(fn), extra)] = Fingerprint(
            _combine(parts), _combine(sources), parts
        )
        self._keep.append(fn)
        return found

    def _captured(
        self,
        fn: Any,
        extra: str,
        cells: tuple[int, ...],
        values: tuple[Any, ...],
        defaults: tuple[Any, ...],
    ) -> Fingerprint:
        """A plain function capturing values that count by value (`_captured`).

        The functions one line makes in a loop (lambdas, closures over the loop's
        values) share code and globals, and differ only in what they capture: the
        rest is walked once per code and globals (a `_Template`), and each
        function costs the digests of its values and one hash.
        """
        code = fn.__code__
        key = (id(code), id(fn.__globals__), extra, cells, bool(defaults))
        known = self._templates.get(key)
        if known is None:
            parts: dict[str, str] = {}
            sources: dict[str, str] = {}
            self._function(fn, "function", parts, sources, 0, captured=False)
            if extra:
                parts["version"] = sources["version"] = _digest(extra.encode())
            names = tuple(f"function: closure {code.co_freevars[i]}" for i in cells)
            if defaults:
                names += ("function: defaults",)
            holds = HOLDS_BOTH if cells and defaults else HOLDS_VALUES if cells else HOLDS_DEFAULTS
            template = _Template(parts, sources, names, captured=True, holds=holds)
            # Capturing nothing: one fingerprint for all of them.
            shared = None if names else Fingerprint(_combine(parts), _combine(sources), parts)
            known = self._templates[key] = (template, shared)
            self._keep.append((code, fn.__globals__))
        template, shared = known
        if shared is not None:
            return shared
        return Fingerprint._of(template, template.held(values, defaults))

    # -- functions and what they reach ------------------------------------------------------

    def _function(
        self,
        fn: Any,
        name: str,
        parts: dict[str, str],
        sources: dict[str, str],
        depth: int,
        *,
        captured: bool = True,
    ) -> None:
        """Digest function ``fn`` as part ``name``, and what it reaches; without
        ``captured``, leave out its closure cells and defaults (see `_captured`)."""
        if name in parts:
            return
        fn = inspect.unwrap(fn) if callable(fn) else fn
        if isinstance(fn, functools.partial):
            bound = _value_key(
                fn.args, tuple(sorted(fn.keywords.items()))
            )  # by value, keywords too
            _warn_by_type(fn.func, f"{name}: partial arguments", bound)
            parts[name] = sources[name] = _digest(repr(bound).encode())
            self._function(fn.func, f"{name} -> {_name_of(fn.func)}", parts, sources, depth + 1)
            return
        code = getattr(fn, "__code__", None)
        if code is None:  # a class, a builtin, a callable object: by its type's code
            self._other(fn, name, parts, sources, depth)
            return
        # By code object: the lambdas one line makes in a loop share theirs, and
        # parsing its source once is what makes 100k such nodes cheap.
        cached = self._done.get(id(code))
        if cached is None:
            bytecode = _code_digest(code)
            # No source (built at run time, exec'd): its bytecode is all there is to
            # compare, so a change of it is a change of source, not a new Python.
            cached = (bytecode, _source_digest(fn) or bytecode, _names_used(code))
            self._done[id(code)] = cached
            self._keep.append(code)
        parts[name], sources[name], (global_names, attributes) = cached
        if depth >= _MAX_DEPTH:
            return
        if captured:
            self._values_of(fn, code, name, parts, sources, depth)
        module_globals = getattr(fn, "__globals__", {})
        for global_name in sorted(global_names):
            if global_name not in module_globals:
                continue  # a builtin
            value = module_globals[global_name]
            if isinstance(value, types.ModuleType):  # helpers.clean(...): follow the attribute
                self._members(value, attributes, parts, sources, depth + 1, {value})
                continue
            self._value(value, f"global {global_name}", parts, sources, depth + 1, fn)

    def _values_of(
        self,
        fn: Any,
        code: types.CodeType,
        name: str,
        parts: dict[str, str],
        sources: dict[str, str],
        depth: int,
    ) -> None:
        """The values ``fn`` captures: its closure cells and its defaults."""
        for cell_name, cell in zip(code.co_freevars, fn.__closure__ or (), strict=False):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell: nothing captured yet
                continue
            self._value(value, f"{name}: closure {cell_name}", parts, sources, depth + 1, fn)
        # Default values are captured values too: ``lambda x, k=k: x * k`` in a loop.
        defaults = (*(fn.__defaults__ or ()), *sorted((fn.__kwdefaults__ or {}).items()))
        if defaults:
            self._value(defaults, f"{name}: defaults", parts, sources, depth + 1, fn)

    def _members(
        self,
        module: types.ModuleType,
        attributes: frozenset[str],
        parts: dict[str, str],
        sources: dict[str, str],
        depth: int,
        seen: set[types.ModuleType],
    ) -> None:
        """The members of a project module read as attributes (``helpers.clean``,
        ``helpers.RATE``, ``pkg.helpers.clean``): functions and classes as helpers,
        immutable constants by value, submodules followed. Attribute names are not
        tied to their object in bytecode, so any attribute name the code loads counts."""
        members = vars(module)
        for attribute in sorted(attributes):
            member = members.get(attribute)
            if member is None:
                continue
            if inspect.isfunction(member) or inspect.isclass(member):
                self._value(member, "", parts, sources, depth)
            elif isinstance(member, types.ModuleType):
                if member not in seen and depth < _MAX_DEPTH and self._local(member):
                    seen.add(member)
                    self._members(member, attributes, parts, sources, depth + 1, seen)
            elif self._local(module) and not _by_type(_value_key(member)):
                key = _value_key(member)
                name = f"global {_module_name(module)}.{attribute}"
                parts[name] = sources[name] = _digest(repr(key).encode())

    def _value(
        self,
        value: Any,
        name: str,
        parts: dict[str, str],
        sources: dict[str, str],
        depth: int,
        owner: Any = None,
    ) -> None:
        """Digest ``value`` as part ``name`` of ``owner`` (a local function or class: a helper)."""
        if isinstance(value, types.ModuleType):
            return  # its functions count where they are used (attribute loads follow)
        if inspect.isfunction(value) or inspect.isclass(value) or inspect.ismethod(value):
            if self._local(value):
                self._function(value, f"helper {_name_of(value)}", parts, sources, depth)
            return  # installed or standard code: its version is the environment's
        key = _value_key(value)
        if owner is not None:
            _warn_by_type(owner, name, key)
        parts[name] = sources[name] = _digest(repr(key).encode())

    def _other(
        self, obj: Any, name: str, parts: dict[str, str], sources: dict[str, str], depth: int
    ) -> None:
        if inspect.isclass(obj):
            if not self._local(obj):
                parts[name] = sources[name] = _digest(_name_of(obj).encode())
                return
            text = _class_source(obj)
            parts[name] = sources[name] = _digest(text.encode())
            for attr in sorted(vars(obj)):
                member = vars(obj)[attr]
                if inspect.isfunction(member) and depth < _MAX_DEPTH:
                    self._function(member, f"{name}.{attr}", parts, sources, depth + 1)
            return
        call = vars(type(obj)).get("__call__")  # a callable object: its class's method
        if inspect.isfunction(call) and self._local(type(obj)):
            self._function(call, f"{name}.__call__", parts, sources, depth + 1)
            return
        parts[name] = sources[name] = _digest(_name_of(type(obj)).encode())

    def _local(self, obj: Any) -> bool:
        """Whether ``obj`` is project code (its file under the project, not installed)."""
        path = _file_of(obj)
        if path is None:  # built at run time, or in __main__ read from stdin: the user's
            return True
        local = self._local_files.get(path)
        if local is None:  # resolving a path costs a system call per component: once a file
            resolved = str(Path(path).resolve())
            if self._root is not None:
                local = resolved.startswith(self._root)
            else:
                local = not any(resolved.startswith(prefix) for prefix in self._installed)
            self._local_files[path] = local
        return local


def node_fingerprints(
    dag: DAG, fingerprinter: Fingerprinter | None = None
) -> dict[str, Fingerprint]:
    """Node -> its code fingerprint: what `flowdag.run` records and a resume compares
    (see `each_fingerprint`)."""
    return dict(zip(dag.specs, each_fingerprint(dag, fingerprinter), strict=True))


def each_fingerprint(dag: DAG, fingerprinter: Fingerprinter | None = None) -> Iterator[Fingerprint]:
    """Each node's code fingerprint, in the order of ``dag.specs``, made as it is taken:
    a caller that needs each once (a seal's digest) keeps none.

    The function's fingerprint, salted with the node's ``version=`` (part
    ``"version"``) and with its ``extract`` and ``preview`` hooks (parts
    ``"extract: ..."``, ``"preview: ..."``): they change the stored output.
    Constant arguments and a binding of inputs add their parts (``"argument n"``,
    ``"input binding"``, digested when the node was added).
    Nodes sharing a function and those options share one `Fingerprint`.
    """
    fingerprinter = Fingerprinter() if fingerprinter is None else fingerprinter
    shared: dict[tuple[Any, ...], Fingerprint] = {}
    # (id(fingerprint of the function), names of the parts bound) -> what such nodes share.
    templates: dict[tuple[int, tuple[str, ...]], _Template] = {}
    last_fn: Any = None
    last: Fingerprint | None = None
    for spec in dag.specs.values():
        fn, version, extract, preview, binding = (
            spec.fn,
            spec.version,
            spec.extract,
            spec.preview,
            spec.binding,
        )
        if version is None and extract is None and preview is None and binding is None:
            # The usual node: its function alone. A loop's nodes often share one.
            if fn is not last_fn or last is None:
                last_fn, last = fn, fingerprinter.fingerprint(fn)
            yield last
            continue
        bound = () if binding is None else binding.parts
        key: tuple[Any, ...] = (fn, version, extract, preview)
        try:
            found = shared.get(key)
        except TypeError:  # an unhashable callable object: by identity
            key = (id(fn), version, id(extract), id(preview))
            found = shared.get(key)
        if found is None:
            extra = "" if version is None else f"{type(version).__name__}:{version}"
            found = fingerprinter.fingerprint(fn, extra=extra)
            if extract is not None or preview is not None:
                found = _with_hooks(fingerprinter, found, extract=extract, preview=preview)
            shared[key] = found
        if bound:
            # A constant per node (``args=(i,)``): the function's parts are shared.
            names = tuple(part for part, _ in bound)
            template = templates.get((id(found), names))
            if template is None:
                template = templates[(id(found), names)] = _bound_template(found, names)
            found = Fingerprint._of(template, tuple(digest for _, digest in bound))
        yield found


def _with_hooks(
    fingerprinter: Fingerprinter, base: Fingerprint, **hooks: Callable[[Any], Any] | None
) -> Fingerprint:
    parts = dict(base.parts)
    source_parts = {"function": base.source_digest}
    for label, hook in hooks.items():
        if hook is None:
            continue
        found = fingerprinter.fingerprint(hook)
        for part, digest in found.parts.items():
            parts[f"{label}: {part}"] = digest
        source_parts[label] = found.source_digest
    return Fingerprint(_combine(parts), _combine(source_parts), parts)


def _bound_template(base: Fingerprint, names: tuple[str, ...]) -> _Template:
    """``base`` with parts ``names`` added: a node's constants count in its source digest too."""
    fixed = {part: digest for part, digest in base.parts.items() if part not in names}
    sources = {"function": base.source_digest} if "function" not in names else {}
    return _Template(fixed, sources, names, captured=False)


def _warn_by_type(owner: Any, name: str, key: Any) -> None:
    """Warn, once per process and (function, part), that a value counts by type only."""
    kinds = _by_type(key)
    if not kinds:
        return
    function = _name_of(owner)
    if (function, name) in _WARNED:
        return
    _WARNED.add((function, name))
    logger.warning(
        "fingerprint of %s: %s (%s) counts by its type only, not its value: a change "
        "of its contents does not make the node run again; make it an immutable "
        "constant (number, string, tuple) or pass version= to the node when it changes",
        function,
        name.rpartition(": ")[2] if name.startswith("function: ") else name,
        ", ".join(sorted(kinds)),
    )


def _by_type(key: Any) -> set[str]:
    """The type names a `_value_key` result counts by type only."""
    found: set[str] = set()
    stack = [key]
    while stack:
        item = stack.pop()
        if type(item) is tuple and len(item) == 2 and item[0] == "object":
            found.add(str(item[1]))
        elif type(item) is str and item.startswith("('object', "):  # inside a frozenset
            found.add(item[11:-1].strip("'\""))
        elif type(item) is tuple or type(item) is list:
            stack.extend(item)
    return found
