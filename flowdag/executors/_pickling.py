"""Node functions pickled for other processes, keeping the file names of their code.

cloudpickle sends a function that is not importable where it goes (one of
``__main__``, of a workflow file ``flowdag run`` imported, a lambda, a closure)
by value: its code object and all. But it renames every such code object's
file to ``<dynamic-code>`` (so that its bytes do not depend on where the code
lives), and a traceback from a worker then reads ``File "<dynamic-code>",
line 17`` instead of naming the workflow file. `dumps` pickles each code object
with `marshal` instead, which keeps everything, file name included, so the
worker's traceback names the file and line, with the source line wherever the
worker can read the file. Loading needs nothing but ``pickle.loads``: the
worker calls `marshal.loads`, and the node function's own globals as
cloudpickle sends them.

marshal's format is tied to the Python version, as cloudpickle's code objects
already are: driver and workers must run the same Python.
"""

from __future__ import annotations

import io
import marshal
import types
from typing import Any

import cloudpickle

__all__ = ["dumps"]


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle is untyped
    """cloudpickle's pickler, with code objects sent whole (file name included)."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is types.CodeType:
            try:
                return marshal.loads, (marshal.dumps(obj),)
            except ValueError:  # a constant marshal cannot write: cloudpickle's way
                return NotImplemented
        return super().reducer_override(obj)


def dumps(obj: Any) -> bytes:
    """``obj`` pickled by cloudpickle, with the file names of its code kept."""
    with io.BytesIO() as buffer:
        _Pickler(buffer, protocol=cloudpickle.DEFAULT_PROTOCOL).dump(obj)
        return buffer.getvalue()
