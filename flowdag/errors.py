"""The flowdag exception tree.

Every error flowdag raises on purpose derives from `FlowdagError`::

    FlowdagError
    ├── DAGError                      build time: the workflow is not a valid DAG
    │   ├── CycleError
    │   ├── MissingDependencyError
    │   ├── DuplicateNodeError
    │   └── SignatureError
    ├── NodeError                     recorded against one node while running
    │   ├── NodeTimeoutError
    │   └── SerializationError        (also a TypeError)
    ├── InvalidArgumentError          (also a ValueError) an argument flowdag cannot use
    │   ├── InvalidArgumentTypeError  (also a TypeError) an argument of the wrong type
    │   └── InvalidKeyError           a key-value key of the wrong shape
    ├── InputNotFoundError            (also a LookupError) a wrong, used or expired input key
    ├── InputValidationError          (also a ValueError) a provided input does not fit the
    │                                 wait's schema; `.fields` names each failing field
    ├── InputTimeoutError             an input wait ran out and the node has no default
    ├── OptionalDependencyError       (also an ImportError) an extra is not installed
    ├── MainGuardError                (also a RuntimeError) worker processes would re-run
    │                                 the main file: it needs `if __name__ == "__main__":`
    ├── RunFailedError                raised by RunResult.raise_on_failure()
    ├── WorkflowChangedError          resume of a run whose DAG has changed
    └── StoreError                    anything the store cannot do
        ├── InvalidRunIdError         (also a ValueError)
        ├── RunNotFoundError          (also a KeyError)
        ├── RunLockedError
        ├── RunChangedError           a result read lazily after its run changed
        ├── CodecMismatchError        the store was written with another codec
        ├── BlobMissingError          a ref's blob is missing or expired
        └── CorruptStateError
            └── DecryptionError       wrong key, or encrypted data changed or moved

Constructor arguments stay plain and picklable (messages are built before the
call to ``Exception.__init__``) because errors cross process and Dask boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BlobMissingError",
    "CacheKeyError",
    "CodecMismatchError",
    "CorruptStateError",
    "CycleError",
    "DAGError",
    "DecryptionError",
    "DuplicateNodeError",
    "FieldProblem",
    "FlowdagError",
    "InputNotFoundError",
    "InputTimeoutError",
    "InputValidationError",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "InvalidKeyError",
    "InvalidRunIdError",
    "MainGuardError",
    "MissingDependencyError",
    "NodeError",
    "NodeTimeoutError",
    "OptionalDependencyError",
    "RunChangedError",
    "RunFailedError",
    "RunLockedError",
    "RunNotFoundError",
    "SerializationError",
    "SignatureError",
    "StoreError",
    "WorkflowChangedError",
]


class FlowdagError(Exception):
    """Base of every error flowdag raises on purpose."""


class DAGError(FlowdagError):
    """The workflow cannot be built into a valid DAG."""


class CycleError(DAGError):
    """The dependencies form a cycle; the message shows it as ``a -> b -> a``."""


class MissingDependencyError(DAGError):
    """A node depends on a name that is not a node of the workflow."""


class DuplicateNodeError(DAGError):
    """Two nodes share one name."""


class SignatureError(DAGError):
    """A node function cannot be called with its dependencies and ``ctx``."""


class NodeError(FlowdagError):
    """An error recorded against one node while the run goes on."""


class NodeTimeoutError(NodeError, TimeoutError):
    """An attempt ran longer than its node's ``timeout``."""


class SerializationError(NodeError, TypeError):
    """A value cannot be stored: its type is not one flowdag can round-trip."""


class CacheKeyError(NodeError):
    """A node's ``cache_key`` raised, or returned a value that cannot be a key."""


class InvalidArgumentError(FlowdagError, ValueError):
    """An argument flowdag cannot use: the message names it and what it accepts."""


class InvalidKeyError(InvalidArgumentError):
    """A key-value key is not 1 to 512 of ``A-Z a-z 0-9 _ : . -``."""


class InvalidArgumentTypeError(InvalidArgumentError, TypeError):
    """An argument of the wrong type: the message names it and the types it accepts."""


class InputNotFoundError(FlowdagError, LookupError):
    """No open wait has that input key: it is wrong, was used already, or has expired."""


class InputTimeoutError(FlowdagError):
    """An input wait ran past its deadline and its node has no ``default``."""


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One field of a provided input that does not fit the schema.

    ``field`` is a path such as ``"approved"``, ``"items[2].qty"`` or ``"(value)"`` for
    the whole value; ``message`` says what is wrong with it.
    """

    field: str
    message: str


class InputValidationError(FlowdagError, ValueError):
    """A provided input does not fit the schema stored with its wait.

    ``fields`` holds every failing field (sorted by path); the wait stays open, so a
    corrected value can be provided with the same key.
    """

    def __init__(self, node: str | None, fields: tuple[FieldProblem, ...]) -> None:
        self.node = node
        self.fields = tuple(fields)
        super().__init__(node, self.fields)  # plain args: pickles as cls(node, fields)

    def __str__(self) -> str:
        what = "input" if self.node is None else f"input for node {self.node!r}"
        problems = "; ".join(f"{p.field}: {p.message}" for p in self.fields)
        return f"{what} is invalid: {problems or 'it does not fit the schema'}"


class OptionalDependencyError(FlowdagError, ImportError):
    """A feature needs an optional extra that is not installed; the message says how to get it."""


class MainGuardError(FlowdagError, RuntimeError):
    """Worker processes started now would run the main file's module-level code again.

    Raised before any worker starts; the message names the file and line, and the fix:
    put that code under ``if __name__ == "__main__":``.
    """


class RunFailedError(FlowdagError):
    """A run finished with failed nodes (see `RunResult.raise_on_failure`)."""


class WorkflowChangedError(FlowdagError):
    """The stored run does not match the DAG it is resumed with."""


class StoreError(FlowdagError):
    """The store cannot do what was asked: bad URL, I/O failure, and so on."""


class InvalidRunIdError(StoreError, ValueError):
    """A run id that could escape the store or is otherwise not allowed."""


class RunNotFoundError(StoreError, KeyError):
    """The store holds no run with that id."""

    def __str__(self) -> str:
        # KeyError.__str__ would quote the whole message as a repr.
        return str(self.args[0]) if self.args else ""


class RunLockedError(StoreError):
    """Another process (or run in this process) is running that run id."""


class RunChangedError(StoreError):
    """A result whose nodes were left in the store is read after the run changed there."""


class CodecMismatchError(StoreError):
    """A store is opened with another codec than the one that wrote it."""


class BlobMissingError(StoreError):
    """The blob a `Ref` points at is missing or expired: no placeholder value is returned."""


class CorruptStateError(StoreError):
    """Stored data is damaged; flowdag refuses to return it."""


class DecryptionError(CorruptStateError):
    """Encrypted data cannot be opened: wrong or missing key, or changed or moved bytes."""
