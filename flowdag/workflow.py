"""The builder: `Workflow` collects nodes; `Workflow.build` makes a validated `DAG`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypedDict, TypeVar, Unpack, overload

from flowdag._units import Duration, parse_duration
from flowdag._values import text_problem
from flowdag.dag import DAG, NodeSpec, check_pools
from flowdag.errors import DAGError, InvalidArgumentError, SignatureError

__all__ = ["Workflow"]

F = TypeVar("F", bound=Callable[..., Any])


class _NodeOptions(TypedDict, total=False):
    """The options of `Workflow.node`, as keyword arguments of `Workflow.add_node`."""

    deps: Iterable[str] | str
    retries: int
    retry_delay: Duration
    backoff: float
    max_retry_delay: Duration
    timeout: Duration | None
    pool: str | None


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
        _check_text("workflow name", name)
        self.name = name
        self.pools = check_pools(pools)
        self._specs: list[NodeSpec] = []

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
        deps: Iterable[str] | str = (),
        retries: int = 0,
        retry_delay: Duration = 0.0,
        backoff: float = 2.0,
        max_retry_delay: Duration = 60.0,
        timeout: Duration | None = None,
        pool: str | None = None,
    ) -> NodeSpec:
        """Add a node imperatively.

        Args:
            name: unique node name.
            fn: called with each dependency's output as the keyword argument of the
                same name (when it has such a parameter or ``**kwargs``) and with
                ``ctx`` (a `Context`) when it has a parameter named ``ctx``.
            deps: names of the nodes whose outputs this node needs.
            retries: extra attempts after the first, in each call of `run`
                (a resume gives a failed node its retries again).
            retry_delay: time before the first retry; later ones wait
                ``backoff`` times longer each, at most ``max_retry_delay``, with
                10% jitter. Durations are seconds, a `datetime.timedelta` or a
                string such as ``"90s"``, ``"30m"`` or ``"1h30m"``.
            timeout: time per attempt; an overrun fails it with `NodeTimeoutError`.
            pool: name of a concurrency pool (see ``run(..., pools=...)``).

        Raises:
            DAGError: an option is out of range.
            SignatureError: ``fn`` is not callable or needs an argument it will not get.
        """
        dep_names = (deps,) if isinstance(deps, str) else tuple(deps)
        _check_options(name, dep_names, retries, backoff)
        kwarg_deps, wants_ctx = _bind(name, fn, dep_names)
        spec = NodeSpec(
            name=name,
            fn=fn,
            deps=dep_names,
            retries=retries,
            retry_delay=_seconds(name, "retry_delay", retry_delay),
            backoff=float(backoff),
            max_retry_delay=_seconds(name, "max_retry_delay", max_retry_delay),
            timeout=_timeout(name, timeout),
            pool=pool,
            kwarg_deps=kwarg_deps,
            wants_ctx=wants_ctx,
            is_async=inspect.iscoroutinefunction(fn),
        )
        self._specs.append(spec)
        return spec

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


def _check_options(
    name: object,
    deps: tuple[Any, ...],
    retries: object,
    backoff: object,
) -> None:
    if not isinstance(name, str) or not name:
        raise DAGError(f"node name must be a non-empty string, not {name!r}")
    _check_text("node name", name)
    for dep in deps:
        if not isinstance(dep, str) or not dep:
            raise DAGError(f"node '{name}': dependency names must be non-empty strings: {dep!r}")
        _check_text(f"node '{name}': dependency name", dep)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise DAGError(f"node '{name}': retries must be a whole number >= 0, not {retries!r}")
    if not _is_number(backoff) or backoff < 1:  # type: ignore[operator]
        raise DAGError(f"node '{name}': backoff must be a number >= 1, not {backoff!r}")


def _seconds(name: str, option: str, value: object) -> float:
    """A duration option in seconds (``2``, ``timedelta(minutes=1)``, ``"90s"``)."""
    try:
        return parse_duration(value, option)
    except InvalidArgumentError as exc:  # a DAGError, as every other bad node option
        raise DAGError(f"node '{name}': {exc}") from None


def _timeout(name: str, value: object) -> float | None:
    if value is None:
        return None
    seconds = _seconds(name, "timeout", value)
    if seconds == 0:
        raise DAGError(f"node '{name}': timeout must be above 0 or None, not {value!r}")
    return seconds


def _check_text(what: str, name: str) -> None:
    # Stores keep names as UTF-8: a name none can store is refused here, not at the first save.
    problem = text_problem(name)
    if problem is not None:
        raise DAGError(f"{what} {name!r} is not valid: {problem}; rename it")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _bind(name: str, fn: object, deps: tuple[str, ...]) -> tuple[tuple[str, ...], bool]:
    """Which deps ``fn`` takes as keyword arguments, and whether it wants ``ctx``."""
    if not callable(fn):
        raise SignatureError(f"node '{name}' is not callable: got {type(fn).__name__}")
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return (), False  # some builtins have no signature: call them without arguments
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwarg_deps = []
    for param in params.values():
        if param.name == "ctx" and param.kind is not param.POSITIONAL_ONLY:
            continue
        if param.name in deps and param.kind is not param.POSITIONAL_ONLY:
            kwarg_deps.append(param.name)
        elif param.kind is param.POSITIONAL_ONLY and param.default is param.empty:
            raise SignatureError(
                f"node '{name}': parameter '{param.name}' is positional-only (before '/'), "
                "but dependencies and ctx are passed by keyword; remove the '/' "
                "or give it a default"
            )
        elif param.default is param.empty and param.kind not in _VARIADIC:
            known = ", ".join(deps) if deps else "none"
            raise SignatureError(
                f"node '{name}': parameter '{param.name}' is neither a dependency "
                f"(deps: {known}) nor 'ctx'; add it to deps, give it a default, or remove it"
            )
    if takes_kwargs:
        # A parameter named ctx always gets the Context; a dep named ctx is in ctx.inputs.
        return tuple(d for d in deps if d != "ctx"), "ctx" in params
    return tuple(kwarg_deps), "ctx" in params
