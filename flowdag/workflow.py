"""The builder: `Workflow` collects nodes; `Workflow.build` makes a validated `DAG`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from enum import Enum
from typing import Any, Final, TypeVar, Unpack, overload

from flowdag._binding import bind
from flowdag._maps import MapOptions
from flowdag._node_options import RunOptions, check_names, check_text, seconds
from flowdag._units import Duration, Size
from flowdag.dag import (
    DAG,
    RUN_DEFAULT,
    InputOptions,
    NodeSpec,
    _new_spec,
    _RunDefault,
    check_pools,
)
from flowdag.errors import DAGError, InvalidArgumentTypeError, SignatureError

__all__ = ["NO_DEFAULT", "Workflow"]

F = TypeVar("F", bound=Callable[..., Any])


class _NoDefault(Enum):
    NO_DEFAULT = "no default"

    def __repr__(self) -> str:
        return "NO_DEFAULT"


#: ``add_input(default=...)`` left out: at its deadline the input node fails.
NO_DEFAULT: Final = _NoDefault.NO_DEFAULT


class _NodeOptions(MapOptions, total=False):
    """The options of `Workflow.node`, as keyword arguments of `Workflow.add_node`:
    those a map takes too (`flowdag._maps.MapOptions`), and these."""

    deps: Iterable[str] | Mapping[str, str] | str
    inputs: str


class Workflow:
    """A named set of nodes and their dependencies.

    >>> wf = Workflow("nightly-etl")
    >>> @wf.node
    ... def extract():
    ...     return [1, 2]
    >>> @wf.node(deps=["extract"])
    ... def total(extract):
    ...     return sum(extract)
    >>> wf.build().nodes
    ['extract', 'total']
    """

    def __init__(self, name: str, *, pools: Mapping[str, int] | None = None) -> None:
        """A workflow named ``name``.

        Args:
            pools: pool name -> how many nodes tagged ``pool=`` that name may run
                at once; ``run(pools=...)`` overrides a cap pool by pool.

        Raises:
            DAGError: the name is empty or cannot be stored.
            InvalidArgumentTypeError, InvalidArgumentError: ``pools`` is not a
                mapping of names to whole numbers >= 1.
        """
        if not isinstance(name, str) or not name:
            raise DAGError(f"workflow name must be a non-empty string, not {name!r}")
        check_text("workflow name", name)
        self.name = name
        self.pools = check_pools(pools)
        self._specs: list[NodeSpec] = []
        self._options = RunOptions()

    @overload
    def node(self, fn: F, /) -> F: ...

    @overload
    def node(
        self, fn: None = None, /, *, name: str | None = None, **options: Unpack[_NodeOptions]
    ) -> Callable[[F], F]: ...

    def node(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        **options: Unpack[_NodeOptions],
    ) -> Any:
        """Register a function as a node; usable as ``@wf.node`` or ``@wf.node(...)``.

        Returns the function unchanged. Options are those of `add_node`; the node's
        name defaults to the function's name.
        """

        unknown = options.keys() - _NodeOptions.__optional_keys__
        if unknown:  # as a plain signature would, before any function is registered
            raise TypeError(f"Workflow.node() got an unexpected keyword argument {min(unknown)!r}")

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            node_name = name if name is not None else getattr(func, "__name__", None)
            if node_name is None:
                raise SignatureError(f"{func!r} has no __name__; pass name= to @wf.node")
            self.add_node(node_name, func, **options)
            return func

        return register if fn is None else register(fn)

    def add_node(
        self,
        name: str,
        fn: Callable[..., Any],
        *,
        deps: Iterable[str] | Mapping[str, str] | str = (),
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        inputs: str = "kwargs",
        retries: int = 0,
        retry_delay: Duration = 0.0,
        backoff: float = 2.0,
        max_retry_delay: Duration = 60.0,
        timeout: Duration | None = None,
        pool: str | None = None,
        inline_limit: Size | _RunDefault | None = RUN_DEFAULT,
        extract: Callable[[Any], Any] | None = None,
        preview: Callable[[Any], Any] | None = None,
        ttl: Duration | None = None,
        version: str | int | None = None,
        on_code_change: str | None = None,
        cache: bool = False,
        cache_key: Callable[..., Any] | None = None,
        cache_ttl: Duration | None = None,
        cache_version: str | int | None = None,
    ) -> NodeSpec:
        """Add a node imperatively.

        Args:
            name: unique node name.
            fn: called with each dependency's output as the keyword argument of the
                same name (when it has such a parameter or ``**kwargs``) and with
                ``ctx`` (a `Context`) when it has a parameter named ``ctx``.
            deps: names of the nodes whose outputs this node needs, or a mapping
                ``{parameter: node}``: that node's output goes as that parameter.
            args: constant arguments for the leading positional parameters; they
                count in the node's code fingerprint (a change runs it again on resume).
            kwargs: constant keyword arguments, counted likewise.
            inputs: ``"kwargs"`` (each output by keyword, as above) or ``"list"``:
                the deps' outputs as one positional list in declared order, after ``args``.
            retries: extra attempts after the first, in each call of `run`
                (a resume gives a failed node its retries again).
            retry_delay: time before the first retry; later ones wait
                ``backoff`` times longer each, at most ``max_retry_delay``, with
                10% jitter. Durations are seconds, a `datetime.timedelta` or a
                string such as ``"90s"``, ``"30m"`` or ``"1h30m"``.
            timeout: time per attempt; an overrun fails it with `NodeTimeoutError`.
            pool: name of a concurrency pool (see ``run(..., pools=...)``).
            inline_limit: an output whose encoded size is above this (bytes, or
                a string such as ``"256KiB"``) is kept in the store's blob area,
                and the node's record holds a `flowdag.Ref` to it; None keeps
                every output inline. Default: ``run(inline_limit=...)``'s.
            extract: called with an output kept by reference; the small dict it
                returns is kept inline, as ``Ref.extracted``.
            preview: called likewise; what it returns (a sample) is kept inline
                as ``Ref.preview``, cut to about 2 KiB.
            ttl: the output's blob expires this long after the node finishes
                (its run may live longer); None: it lives as long as its run.
            version: a string or int counted in the node's code fingerprint:
                change it to make a resume run the node again.
            on_code_change: what a resume does when the node's code changed
                since its output was stored: ``"rerun"``, ``"warn"`` (reuse it,
                with a warning) or ``"ignore"``; None: ``run(on_code_change=...)``'s.
            cache: reuse the output of any earlier run (of any run id) whose node
                had the same code and the same inputs, without calling the node;
                see README "Cross-run cache".
            cache_key: called with the node's inputs (as keyword arguments) to key
                the cache instead of the inputs' content; it implies ``cache``.
                Its value counts with its types; None means "do not cache this call".
            cache_ttl: a cached output is reused for this long after it was stored.
            cache_version: a str or int in the key: change it to leave earlier
                entries behind.

        Raises:
            DAGError: an option is out of range.
            InvalidArgumentTypeError: ``version`` is neither a str nor an int.
            InvalidArgumentError: ``on_code_change`` is not one of the three.
            SignatureError: ``fn`` is not callable, needs an argument it will not
                get, or a parameter is bound twice or not taken (named in the message).
            InvalidArgumentTypeError: a constant that cannot be part of a fingerprint.
        """
        bound = bind(name, fn, deps, args, kwargs, inputs)
        check_names(name, bound.deps)
        (
            retries,
            delay,
            backoff,
            max_delay,
            per_attempt,
            pool,
            limit,
            extract,
            preview,
            lifetime,
            version,
            on_code_change,
            caching,
        ) = self._options.check(
            name,
            retries,
            retry_delay,
            backoff,
            max_retry_delay,
            timeout,
            pool,
            inline_limit,
            extract,
            preview,
            ttl,
            version,
            on_code_change,
            cache,
            cache_key,
            cache_ttl,
            cache_version,
        )
        spec = _new_spec(  # every field, in order
            name,
            fn,
            bound.deps,
            retries,
            delay,
            backoff,
            max_delay,
            per_attempt,
            pool,
            bound.kwarg_deps,
            bound.wants_ctx,
            bound.is_async,
            limit,
            extract,
            preview,
            lifetime,
            bound.ref_deps,
            version,
            on_code_change,
            caching,
            bound.binding,
            None,
            None,
        )
        self._specs.append(spec)
        return spec

    def map(
        self,
        name: str,
        fn: Callable[..., Any],
        *,
        over: str,
        deps: Iterable[str] | Mapping[str, str] | str = (),
        **options: Unpack[MapOptions],
    ) -> NodeSpec:
        """Add a map node: ``fn(item, ...)`` runs once per item of ``over``'s output.

        The items run as nodes ``name[0]``, ``name[1]``, ... (each with its own
        attempts, retries, timeout, pool and checkpoint), with the other ``deps``
        by keyword as for `add_node`, whose options they take; a node depending
        on ``name`` gets the list of their results in item order (README
        "Mapping over a list"). With ``cache=True`` each item is keyed on its
        own item (``cache_key`` is called as ``cache_key(item, **inputs)``), so
        equal items share an entry and compute once per run.

        Raises:
            SignatureError: ``fn`` takes no positional parameter for the item,
                or needs an argument it will not get.
            DAGError: as `add_node`.
        """
        from flowdag._maps import map_deps, map_spec, mapped_fn

        spec = self.add_node(name, mapped_fn(name, fn), deps=map_deps(name, over, deps), **options)
        self._specs[-1] = spec = map_spec(spec, fn, over)
        return spec

    def add_input(
        self,
        name: str,
        *,
        schema: object,
        deps: Iterable[str] | str = (),
        timeout: Duration | None = None,
        default: Any = NO_DEFAULT,
        prompt: Callable[..., Any] | None = None,
    ) -> NodeSpec:
        """Add an input node: its output is a value someone gives (`flowdag.provide_input`).

        When its deps are done the run records a wait and goes on with what does
        not depend on it; with nothing else to do it returns ``SUSPENDED``, the
        wait's one-time key in ``result.waits[name]`` (see README "Waiting for
        input"). The node's output is the given value in JSON form.

        Args:
            name: unique node name.
            schema: what the value must fit: a pydantic model, a dataclass, a
                TypedDict or a JSON Schema dict. It is stored with the wait as
                JSON Schema, and a value is checked against the stored one.
            deps: nodes that must be done before the wait starts; their outputs
                go to ``prompt``.
            timeout: time from the wait's start to its deadline (fixed then);
                None: it never expires.
            default: the value the node takes at the deadline (checked against
                the schema now); without one the node fails with `InputTimeoutError`.
            prompt: called with the deps' outputs (as keyword arguments, like a
                node); its JSON value is stored with the wait for whoever answers.

        Raises:
            DAGError: ``timeout`` is not above 0.
            InvalidArgumentTypeError, InvalidArgumentError: ``schema`` is not one
                of those kinds, or ``default`` is not JSON or does not fit it.
            SignatureError: ``prompt`` needs an argument it will not get.
        """
        from flowdag._schemas import json_form, json_schema_of, schema_digest, validate

        where = f"input node '{name}'"
        if isinstance(deps, Mapping):
            raise InvalidArgumentTypeError(
                f"{where}: deps must be node names (the prompt gets each output as the "
                "keyword of its node's name), not a mapping"
            )
        json_schema = json_schema_of(schema, where)
        digest = schema_digest(json_schema)
        defaults: tuple[Any, ...] = ()
        if default is not NO_DEFAULT:
            defaults = (json_form(default, f"{where}: default"),)
            validate(json_schema, defaults[0], node=name)
        wait = None if timeout is None else seconds(name, "timeout", timeout)
        if wait is not None and wait <= 0:
            raise DAGError(f"{where}: timeout must be above 0 or None, not {timeout!r}")
        fn = _no_prompt if prompt is None else prompt
        if prompt is not None and inspect.iscoroutinefunction(prompt):
            raise SignatureError(f"{where}: prompt must be a plain function, not async")
        # The schema is in the fingerprint: a changed schema asks again on resume.
        spec = self.add_node(name, fn, deps=deps, version=f"input schema {digest[:16]}")
        spec = replace(spec, input=InputOptions(json_schema, digest, wait, defaults))
        self._specs[-1] = spec
        return spec

    def input(
        self,
        *,
        schema: object,
        name: str | None = None,
        deps: Iterable[str] | str = (),
        timeout: Duration | None = None,
        default: Any = NO_DEFAULT,
    ) -> Callable[[F], F]:
        """`add_input` as a decorator of the prompt function; the name defaults to its name.

        >>> wf = Workflow("po")
        >>> @wf.input(schema={"type": "boolean"})
        ... def approved():
        ...     return "Send the order?"
        """

        def register(prompt: F) -> F:
            node_name = name if name is not None else getattr(prompt, "__name__", None)
            if node_name is None:
                raise SignatureError(f"{prompt!r} has no __name__; pass name= to @wf.input")
            self.add_input(
                node_name, schema=schema, deps=deps, timeout=timeout, default=default, prompt=prompt
            )
            return prompt

        return register

    @property
    def specs(self) -> tuple[NodeSpec, ...]:
        """The nodes in the order they were added."""
        return tuple(self._specs)

    def build(self) -> DAG:
        """Validate the nodes and return the `DAG`.

        Raises:
            DuplicateNodeError, MissingDependencyError, CycleError: the message
                names the culprits.
        """
        return DAG(self.name, self._specs, self.pools)

    def __repr__(self) -> str:
        return f"Workflow({self.name!r}, nodes={len(self._specs)})"


def _no_prompt() -> None:
    """The prompt of an input node declared without one: there is nothing to show."""
    return None
