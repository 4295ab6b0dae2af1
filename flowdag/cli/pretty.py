"""Values pretty-printed for the terminal: `pprint`, plus user types read without their class.

``flowdag show`` decodes a user type as a `flowdag._usertypes.UserValue` (its
module is never imported). pprint knows nothing of it and would print it as one
line however long; here it is laid out like pprint lays out a dataclass: on one
line when it fits, else one field per line, each field's value laid out in turn.
"""

from __future__ import annotations

import pprint
from typing import Any

from flowdag._usertypes import UserValue

__all__ = ["pformat"]


def pformat(value: Any, width: int) -> str:
    """``value`` as `pprint.pformat` lays it out (dicts in their order), UserValues too."""
    return _Printer(width=width, sort_dicts=False).pformat(value)


class _Printer(pprint.PrettyPrinter):
    def _format(
        self,
        object: object,  # pprint's own name for it
        stream: Any,
        indent: int,
        allowance: int,
        context: dict[int, int],
        level: int,
    ) -> None:
        if (
            type(object) is not UserValue
            or type(object.data) is str  # an Enum member: always short
            or len(repr(object)) <= self._width - indent - allowance  # type: ignore[attr-defined]
        ):
            super()._format(object, stream, indent, allowance, context, level)
            return
        name = object.type.partition(":")[2] or object.type
        stream.write(name + "(")
        indent += len(name) + 1
        level += 1
        if type(object.data) is dict:  # fields by name, as pprint writes a dataclass
            items = list(object.data.items())
            for i, (key, item) in enumerate(items):
                if i:
                    stream.write(",\n" + " " * indent)
                stream.write(f"{key}=")
                last = i == len(items) - 1
                self._format(
                    item,
                    stream,
                    indent + len(key) + 1,
                    allowance + 1 if last else 1,
                    context,
                    level,
                )
        else:  # a NamedTuple's items, in order
            # _format_items indents by one more: it is given the column of the "(".
            self._format_items(object.data, stream, indent - 1, allowance + 1, context, level)
        stream.write(")")
