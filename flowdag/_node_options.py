"""A node's name and run options, checked and normalised once per distinct set.

`Workflow.add_node` takes a dozen run options (retries, durations, pool,
caching...). Each is checked and turned into what a `flowdag.NodeSpec` holds
(durations in seconds, a `CacheOptions`), and a bad one is a `DAGError` (or
`InvalidArgumentError`) naming the node and the option. A large workflow
passes the same options to node after node (the defaults at least), so
`RunOptions` keeps the last set it checked: a node whose options are the very
same objects gets the same normalised values (and shares their objects)
without a check; anything else is checked as before, in the same order, so
every error and its message stay as they were.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any

from flowdag._units import parse_duration, parse_size
from flowdag._values import text_problem
from flowdag.dag import CODE_CHANGE_POLICIES, RUN_DEFAULT, CacheOptions, _RunDefault
from flowdag.errors import DAGError, InvalidArgumentError, InvalidArgumentTypeError

__all__ = ["RunOptions", "check_names", "check_text", "seconds"]

#: The normalised options, in `NodeSpec`'s order: retries, retry_delay, backoff,
#: max_retry_delay, timeout, pool, inline_limit, extract, preview, ttl, version,
#: on_code_change, cache.
Options = tuple[Any, ...]


class RunOptions:
    """Checks a workflow's node options; remembers the last set, by identity."""

    __slots__ = ("_given", "_options")

    def __init__(self) -> None:
        self._given: tuple[Any, ...] = (object(),) * 16  # matches no call
        self._options: Options = ()

    def check(
        self,
        name: str,
        retries: object,
        retry_delay: object,
        backoff: object,
        max_retry_delay: object,
        timeout: object,
        pool: object,
        inline_limit: object,
        extract: object,
        preview: object,
        ttl: object,
        version: object,
        on_code_change: object,
        cache: object,
        cache_key: object,
        cache_ttl: object,
        cache_version: object,
    ) -> Options:
        """Node ``name``'s options normalised (see `Options`).

        Raises:
            DAGError: an option is out of range.
            InvalidArgumentTypeError, InvalidArgumentError: as `Workflow.add_node`.
        """
        last = self._given
        if (  # the very objects of the last call: checked then, with the same outcome
            retries is last[0]
            and retry_delay is last[1]
            and backoff is last[2]
            and max_retry_delay is last[3]
            and timeout is last[4]
            and pool is last[5]
            and inline_limit is last[6]
            and extract is last[7]
            and preview is last[8]
            and ttl is last[9]
            and version is last[10]
            and on_code_change is last[11]
            and cache is last[12]
            and cache_key is last[13]
            and cache_ttl is last[14]
            and cache_version is last[15]
        ):
            return self._options
        _check_retries(name, retries, backoff)
        for option, hook in (("extract", extract), ("preview", preview)):
            if hook is not None and not callable(hook):
                raise DAGError(
                    f"node '{name}': {option} must be a function of the output or None, "
                    f"not {type(hook).__name__}"
                )
        _check_code_options(name, version, on_code_change)
        caching = _cache_options(name, cache, cache_key, cache_ttl, cache_version)
        options = (
            retries,
            seconds(name, "retry_delay", retry_delay),
            float(backoff),  # type: ignore[arg-type]
            seconds(name, "max_retry_delay", max_retry_delay),
            _timeout(name, timeout),
            pool,
            _inline_limit(name, inline_limit),
            extract,
            preview,
            None if ttl is None else _ttl(name, ttl),
            version,
            on_code_change,
            caching,
        )
        self._given = (
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
        self._options = options
        return options


def check_names(name: object, deps: tuple[Any, ...]) -> None:
    """Refuse a node name or dependency name that is not a non-empty str a store can keep.

    Raises:
        DAGError: naming the node (and the dependency).
    """
    global _checked_deps
    if type(name) is not str or not name or not name.isascii():
        if not isinstance(name, str) or not name:
            raise DAGError(f"node name must be a non-empty string, not {name!r}")
        check_text("node name", name)
    if deps is _checked_deps:  # nodes bound alike share their deps tuple: checked once
        return
    for dep in deps:
        if type(dep) is not str or not dep or not dep.isascii():
            if not isinstance(dep, str) or not dep:
                raise DAGError(
                    f"node '{name}': dependency names must be non-empty strings: {dep!r}"
                )
            check_text(f"node '{name}': dependency name", dep)
    _checked_deps = deps


#: The last deps tuple `check_names` passed (kept alive here, so never another's id).
_checked_deps: tuple[Any, ...] = ()


def check_text(what: str, name: str) -> None:
    """Refuse a name no store can keep (stores keep names as UTF-8), at build time."""
    problem = text_problem(name)
    if problem is not None:
        raise DAGError(f"{what} {name!r} is not valid: {problem}; rename it")


def _check_retries(name: str, retries: object, backoff: object) -> None:
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise DAGError(f"node '{name}': retries must be a whole number >= 0, not {retries!r}")
    if not _is_number(backoff) or backoff < 1:  # type: ignore[operator]
        raise DAGError(f"node '{name}': backoff must be a number >= 1, not {backoff!r}")


def _check_code_options(name: str, version: object, on_code_change: object) -> None:
    if version is not None and (isinstance(version, bool) or not isinstance(version, str | int)):
        raise InvalidArgumentTypeError(
            f"node '{name}': version must be a str or an int (e.g. version=2), "
            f"not {type(version).__name__}"
        )
    if on_code_change is not None and on_code_change not in CODE_CHANGE_POLICIES:
        raise InvalidArgumentError(
            f"node '{name}': on_code_change must be one of "
            f"{', '.join(map(repr, CODE_CHANGE_POLICIES))} or None, not {on_code_change!r}"
        )


def seconds(name: str, option: str, value: object) -> float:
    """A duration option in seconds (``2``, ``timedelta(minutes=1)``, ``"90s"``).

    Raises:
        DAGError: not a duration, naming the node and the option.
    """
    try:
        if type(value) in _DURATION_TYPES:  # hashable, so parsed once per value
            return _parsed_duration(value, option)
        return parse_duration(value, option)
    except InvalidArgumentError as exc:  # a DAGError, as every other bad node option
        raise DAGError(f"node '{name}': {exc}") from None


# Every node of a large workflow passes the same few durations (the defaults at least).
_DURATION_TYPES = frozenset({int, float, str, timedelta})  # exact types: no bool
_parsed_duration = functools.lru_cache(maxsize=256, typed=True)(parse_duration)


def _timeout(name: str, value: object) -> float | None:
    if value is None:
        return None
    took = seconds(name, "timeout", value)
    if took == 0:
        raise DAGError(f"node '{name}': timeout must be above 0 or None, not {value!r}")
    return took


def _inline_limit(name: str, value: object) -> int | _RunDefault | None:
    if value is None or value is RUN_DEFAULT:
        return value
    try:
        return parse_size(value, "inline_limit")
    except InvalidArgumentError as exc:
        raise DAGError(f"node '{name}': {exc}") from None


def _ttl(name: str, value: object, option: str = "ttl") -> timedelta:
    took = seconds(name, option, value)
    if took <= 0:
        raise DAGError(f"node '{name}': {option} must be above 0 or None, not {value!r}; e.g. '7d'")
    return timedelta(seconds=took)


def _cache_options(
    name: str, cache: object, key: object, ttl: object, version: object
) -> CacheOptions | None:
    if not isinstance(cache, bool):
        raise InvalidArgumentTypeError(
            f"node '{name}': cache must be True or False, not {type(cache).__name__}"
        )
    if key is not None and not callable(key):
        raise InvalidArgumentTypeError(
            f"node '{name}': cache_key must be a function of the node's inputs or None, "
            f"not {type(key).__name__}"
        )
    if version is not None and (isinstance(version, bool) or not isinstance(version, str | int)):
        raise InvalidArgumentTypeError(
            f"node '{name}': cache_version must be a str or an int, not {type(version).__name__}"
        )
    if not cache and key is None:
        if ttl is not None or version is not None:
            raise InvalidArgumentError(
                f"node '{name}': cache_ttl and cache_version need cache=True or a cache_key"
            )
        return None
    return CacheOptions(
        key,
        None if ttl is None else _ttl(name, ttl, "cache_ttl"),
        "" if version is None else f"{type(version).__name__}:{version}",
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value
