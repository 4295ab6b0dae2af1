"""Code fingerprints: edits that change what a node computes count, the rest does not.

Each case writes a small project (a workflow module and a helper module) to a
temporary directory, imports it fresh, fingerprints a node function, edits
the files, imports again and compares, as a user editing code between a crash
and a resume does.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flowdag import Workflow
from flowdag._code_digests import _combine, _digest
from flowdag._fingerprint import Fingerprint, Fingerprinter, node_fingerprints
from flowdag.state import Provenance
from flowdag.stores._provenance import _code_document, provenance_record

HELPERS = """
RATE = 3


def clean(rows):
    return [r * RATE for r in rows]


def unused():
    return 0
"""

FLOW = '''
import helpers
from helpers import clean

LIMIT = 10
calls = []


def transform(rows):
    """Scale the rows."""
    # keep only the first LIMIT rows
    return clean(rows)[:LIMIT]


def other(rows):
    return len(rows)


def via_module(rows):
    return helpers.clean(rows)


def make(k):
    def scaled(rows):
        return [r * k for r in rows]

    return scaled


def appends(rows):
    calls.append(1)
    return rows
'''


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Write the project (with edits) to a fresh directory and import it from there.

    The modules keep their names (``flow``, ``helpers``) from one version to
    the next, as a user's project does; each version is a new import.
    """
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no stale .pyc of an edit
    counter = iter(range(1000))

    def load(flow: str = FLOW, helpers: str = HELPERS) -> Any:
        where = tmp_path / f"v{next(counter)}"
        where.mkdir()
        (where / "helpers.py").write_text(textwrap.dedent(helpers))
        (where / "flow.py").write_text(textwrap.dedent(flow))
        for name in ("flow", "helpers"):
            sys.modules.pop(name, None)
        monkeypatch.syspath_prepend(str(where))
        importlib.invalidate_caches()
        module = importlib.import_module("flow")
        for name in ("flow", "helpers"):  # the next version imports afresh
            sys.modules.pop(name, None)
        return module

    return load


def fingerprint(fn: Callable[..., Any]) -> Fingerprint:
    return Fingerprinter().fingerprint(fn)


@pytest.mark.parametrize(
    "edit",
    [
        ("    # keep only the first LIMIT rows\n", "    # a comment, reworded\n\n\n"),
        ('    """Scale the rows."""\n', '    """Another docstring,\n    on two lines."""\n'),
        ("    return clean(rows)[:LIMIT]", "    return clean(  rows )[ : LIMIT ]"),
        ("def transform(rows):", "def renamed(rows):"),
        ("def other(rows):\n    return len(rows)", "def other(rows):\n    return -1"),
    ],
    ids=["comment", "docstring", "formatting", "rename", "another function"],
)
def test_edits_that_change_nothing_computed_keep_the_fingerprint(
    project: Callable[..., Any], edit: tuple[str, str]
) -> None:
    before = project()
    after = project(FLOW.replace(*edit))
    fn = getattr(after, "renamed", None) or after.transform
    assert fingerprint(fn).digest == fingerprint(before.transform).digest


def test_a_changed_body_changes_it_and_names_the_function(project: Callable[..., Any]) -> None:
    before = fingerprint(project().transform)
    after = fingerprint(project(FLOW.replace("[:LIMIT]", "[:LIMIT - 1]")).transform)
    assert after.digest != before.digest
    assert after.changed_parts(before) == ["function"]


def test_a_changed_helper_changes_its_users_only_and_is_named(project: Callable[..., Any]) -> None:
    old = project()
    new = project(helpers=HELPERS.replace("r * RATE", "r * RATE + 1"))
    for user in ("transform", "via_module"):
        before, after = fingerprint(getattr(old, user)), fingerprint(getattr(new, user))
        assert after.digest != before.digest, user
        (changed,) = after.changed_parts(before)
        assert changed.startswith("helper helpers.clean") and "(helpers.py)" in changed, changed
        assert ".py)" in changed  # the file is named
    assert fingerprint(new.other).digest == fingerprint(old.other).digest


def test_an_unused_helper_does_not_count(project: Callable[..., Any]) -> None:
    old = project()
    new = project(helpers=HELPERS.replace("return 0", "return 1"))
    assert fingerprint(new.transform).digest == fingerprint(old.transform).digest


def test_module_constants_count_by_value(project: Callable[..., Any]) -> None:
    old, new = project(), project(FLOW.replace("LIMIT = 10", "LIMIT = 11"))
    after, before = fingerprint(new.transform), fingerprint(old.transform)
    assert after.changed_parts(before) == ["global LIMIT"]
    helper_const = project(helpers=HELPERS.replace("RATE = 3", "RATE = 4"))
    assert fingerprint(helper_const.transform).digest != before.digest


def test_closures_count_their_captured_values(project: Callable[..., Any]) -> None:
    flow = project()
    two, three, again = fingerprint(flow.make(2)), fingerprint(flow.make(3)), flow.make(2)
    assert two.digest != three.digest
    assert fingerprint(again).digest == two.digest
    assert three.changed_parts(two) == ["function: closure k"]


def test_mutable_state_counts_by_type_only(project: Callable[..., Any]) -> None:
    flow = project()
    before = fingerprint(flow.appends)
    flow.appends([1])
    flow.calls.extend([2, 3])
    assert fingerprint(flow.appends).digest == before.digest


def test_bytecode_alone_is_told_apart_from_source(project: Callable[..., Any]) -> None:
    flow = project()
    before = fingerprint(flow.other)
    # The same source, other bytecode: what a new Python version (or code edited
    # on disk and not reloaded) looks like.
    flow.other.__code__ = flow.other.__code__.replace(co_consts=(None, "x"))
    after = fingerprint(flow.other)
    assert after.digest != before.digest and after.source_only(before)


def test_functions_without_source_still_get_a_fingerprint() -> None:
    namespace: dict[str, Any] = {}
    exec("def built(x):\n    return x + 1\n", namespace)
    exec("def built2(x):\n    return x + 2\n", namespace)
    one, two = fingerprint(namespace["built"]), fingerprint(namespace["built2"])
    assert one.digest != two.digest
    assert fingerprint(lambda x: x + 1).digest != fingerprint(lambda x: x + 2).digest


def test_an_extra_version_counts() -> None:
    def node(x: int) -> int:
        return x

    plain = Fingerprinter().fingerprint(node)
    assert Fingerprinter().fingerprint(node, extra="2").digest != plain.digest
    assert Fingerprinter().fingerprint(node, extra="2").changed_parts(plain) == ["version"]


def test_recursive_helpers_terminate(project: Callable[..., Any]) -> None:
    flow = project(
        FLOW
        + "\n\ndef ping(n):\n    return pong(n - 1) if n else 0\n"
        + "\n\ndef pong(n):\n    return ping(n)\n"
    )
    assert fingerprint(flow.ping).digest == fingerprint(flow.ping).digest


def test_a_callable_object_counts_by_its_class_code(project: Callable[..., Any]) -> None:
    source = FLOW + "\n\nclass Scale:\n    def __call__(self, rows):\n        return rows * 2\n"
    old = project(source)
    new = project(source.replace("rows * 2", "rows * 3"))
    assert fingerprint(old.Scale()).digest != fingerprint(new.Scale()).digest
    assert fingerprint(old.Scale()).digest == fingerprint(project(source).Scale()).digest


def test_a_partial_counts_its_bound_arguments_by_value() -> None:
    import functools

    def scale(rows: list[int], k: int) -> list[int]:
        return [r * k for r in rows]

    two, three = functools.partial(scale, k=2), functools.partial(scale, k=3)
    assert fingerprint(two).digest != fingerprint(three).digest
    assert fingerprint(functools.partial(scale, k=2)).digest == fingerprint(two).digest


#: Values a lambda made in a loop captures, each counted by value (`_captured`).
CAPTURED = [
    0,
    -7,
    2**80,
    True,
    False,
    None,
    1.5,
    -0.0,
    float("nan"),
    float("inf"),
    "",
    "é'\"\n",
    b"",
    b"\x00'",
]


def _walked(fn: Callable[..., Any], extra: str = "") -> Fingerprint:
    """The fingerprint of ``fn`` by the full walk, which the shared templates stand in for."""
    fingerprinter = Fingerprinter()
    parts: dict[str, str] = {}
    sources: dict[str, str] = {}
    fingerprinter._function(fn, "function", parts, sources, 0)
    if extra:
        parts["version"] = sources["version"] = _digest(extra.encode())
    return Fingerprint(_combine(parts), _combine(sources), parts)


def _closure(value: Any, other: Any) -> Callable[[int], Any]:
    def node(source: int) -> Any:
        return (value, other, source)

    return node


def test_functions_sharing_code_get_the_digests_of_a_full_walk() -> None:
    """Lambdas in a loop share a template of their parts: same digests as walking each."""
    made: list[Callable[..., Any]] = []
    for value in CAPTURED:
        made.append(lambda source, v=value: (v, source))
        made.append(lambda source, v=value, w=(): (v, w, source))  # a tuple: walked
        count = len(made)
        made.append(lambda source, v=value, k=count: (v, k, source))
        made.append(_closure(value, len(made)))
    fingerprinter = Fingerprinter()
    for fn in made:
        for extra in ("", "int:2"):
            shared, walked = fingerprinter.fingerprint(fn, extra=extra), _walked(fn, extra)
            assert (shared.digest, shared.source_digest, shared.parts) == (
                walked.digest,
                walked.source_digest,
                walked.parts,
            )
            assert shared == walked
            view = fingerprinter.fingerprint(fn, extra=extra).parts_view()
            assert dict(view.items()) == dict(view) == walked.parts == view
            assert sorted(view.keys()) == sorted(walked.parts.keys())
            assert sorted(view.values()) == sorted(walked.parts.values())
            assert len(view) == len(walked.parts) and all(n in view for n in walked.parts)
            _assert_packs_as_its_parts(shared)
            _assert_records_as_walked(fingerprinter.fingerprint(fn, extra=extra), walked)


def test_constant_arguments_share_the_function_parts() -> None:
    """``args=(i,)`` per node: each node's fingerprint is its function's plus its constant."""
    wf = Workflow("constants")
    wf.add_node("source", lambda: 1)
    for i, value in enumerate(CAPTURED):
        wf.add_node(f"n{i}", _add, args=(value,), deps={"source": "source"})
    fingerprints = node_fingerprints(wf.build())
    for i in range(len(CAPTURED)):
        found = fingerprints[f"n{i}"]
        base = fingerprint(_add)
        assert set(found.parts) == {*base.parts, "argument value"}
        assert found.digest == _combine(found.parts)
        assert found.source_digest == _combine(
            {"function": base.source_digest, "argument value": found.parts["argument value"]}
        )
        _assert_packs_as_its_parts(found)
    assert len({fp.digest for fp in fingerprints.values()}) == len(CAPTURED) + 1


def _assert_records_as_walked(fresh: Fingerprint, walked: Fingerprint) -> None:
    """What a run's record holds of a fingerprint none of whose digests were read yet
    (`Fingerprint.recorded`, its parts view holding the own digests) is what the
    full walk gives, and packs as a record holding the walk's parts."""
    for keep in (False, True):
        digest, source, parts = fresh.recorded(keep=keep)
        assert (digest, source, dict(parts)) == (walked.digest, walked.source_digest, walked.parts)
        recorded = provenance_record(Provenance(digest, source, parts, "o" * 64))
        as_walked = Provenance(walked.digest, walked.source_digest, walked.parts, "o" * 64)
        assert recorded == provenance_record(as_walked)


def _assert_packs_as_its_parts(found: Fingerprint) -> None:
    """A record holding a fingerprint's parts view packs as one holding a dict of them."""
    view = found.parts_view()
    provenance = Provenance(found.digest, found.source_digest, view, "o" * 64)
    record = provenance_record(provenance)
    as_dict = Provenance(found.digest, found.source_digest, dict(view), "o" * 64)
    assert record[0] == _code_document(as_dict, as_dict.parts)
    assert record == provenance_record(as_dict)


def _add(value: Any, source: int) -> tuple[Any, int]:
    return (value, source)
