"""User types the tests allow with `flowdag.register_types("tests.usertypes_models")`."""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime
from decimal import Decimal
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


# -- attrs classes and pydantic models (the dev extras install both) ------------------

import attr  # noqa: E402  (kept apart from the stdlib kinds above)
import attrs  # noqa: E402
import pydantic  # noqa: E402


@attrs.define
class Box:
    """Slotted and mutable, as attrs.define makes it."""

    label: str
    items: list[Any]
    where: Any = None


@attrs.frozen
class Sealed:
    code: int
    inner: Any


@attr.s
class Legacy:
    """The old API: a __dict__ class, a private attribute, a post-init hook."""

    x = attr.ib()
    _hidden = attr.ib(default=0)
    total = attr.ib(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        POST_INITS.append(self)
        self.total = self.x


class Item(pydantic.BaseModel):
    name: str
    price: Decimal
    tags: set[str] = set()


class Order(pydantic.BaseModel):
    items: list[Item]
    at: datetime
    point: Point
    note: str | None = None

    def model_post_init(self, context: Any, /) -> None:
        POST_INITS.append(self)


class FrozenModel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True)
    key: str
    pair: tuple[int, int]


class Loose(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    a: int


class WithPrivate(pydantic.BaseModel):
    a: int
    _seen: int = pydantic.PrivateAttr(default=0)


class Ids(pydantic.RootModel[list[int]]):
    pass
