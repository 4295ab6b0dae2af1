from __future__ import annotations

import flatbuffers

import typing
from typing import cast

uoffset: typing.TypeAlias = flatbuffers.number_types.UOffsetTFlags.py_type

class FormatVersion(object):
  Invalid = cast(int, ...)
  V1 = cast(int, ...)

