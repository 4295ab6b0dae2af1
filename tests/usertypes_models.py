"""User types the tests allow with `flowdag.register_types("tests.usertypes_models")`."""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime
from typing import Any, NamedTuple

POST_INITS: list[Any] = []  # __post_init__ runs here, never on decode


@dataclasses.dataclass
class Point:
    x: int
    y: float


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    name: str
    tags: tuple[str, ...]
    when: datetime


@dataclasses.dataclass
class Tracked:
    rows: list[Any]
    total: int = dataclasses.field(init=False, default=0)

    def __post_init__(self) -> None:
        POST_INITS.append(self)
        self.total = len(self.rows)


class Pair(NamedTuple):
    left: Any
    right: Any = None


class Color(enum.Enum):
    RED = 1
    GREEN = "g"
    CRIMSON = 1  # an alias of RED


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Outer:
    @dataclasses.dataclass
    class Inner:
        value: Any


def helper() -> None:
    """Not a type: a blob naming it is refused."""
