"""The bad-input catalogue: every bad input across the API and the CLI, and what it gets.

Each row names a bad input, the exact error type it must raise and the
culprits the message must name. API rows raise (or, for failures inside a run,
record the error against the node in the `RunResult`); CLI rows must exit 2
with a one-line reason that names the culprit, and never print a traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import flowdag
from flowdag import (
    CorruptStateError,
    CycleError,
    DAGError,
    DecryptionError,
    DuplicateNodeError,
    FlowdagError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidRunIdError,
    MissingDependencyError,
    RunLockedError,
    RunNotFoundError,
    SerializationError,
    SignatureError,
    StoreError,
    WorkflowChangedError,
)
from flowdag.cli import main
from flowdag.codec import Codec
from flowdag.stores import open_store
from flowdag.stores._crypto import generate_key

KEY = generate_key()


# -- helpers that build bad inputs ------------------------------------------------------


def one_node(fn: Any = lambda: 1, **options: Any) -> flowdag.Workflow:
    wf = flowdag.Workflow("wf")
    wf.add_node("a", fn, **options)
    return wf


def build(*nodes: tuple[str, Any, list[str]]) -> flowdag.DAG:
    wf = flowdag.Workflow("wf")
    for name, fn, deps in nodes:
        wf.add_node(name, fn, deps=deps)
    return wf.build()


def run_in(tmp: Path, wf: flowdag.Workflow, run_id: str = "r", **options: Any) -> Any:
    with open_store(f"lmdb://{tmp / 'store'}") as store:
        return flowdag.run(wf, run_id=run_id, store=store, **options)


def run_of_another_workflow(tmp: Path) -> Any:
    run_in(tmp, one_node())  # stored as workflow 'wf'
    other = flowdag.Workflow("report")
    other.add_node("a", lambda: 1)
    return run_in(tmp, other)


def changed_workflow(tmp: Path) -> Any:
    run_in(tmp, one_node())
    wf = flowdag.Workflow("wf")
    wf.add_node("a", lambda: 1)
    wf.add_node("extra", lambda a: a, deps=["a"])
    return run_in(tmp, wf)


def locked_run(tmp: Path) -> Any:
    with open_store(f"lmdb://{tmp / 'store'}") as store, store.lock("busy"):
        return flowdag.run(one_node(), run_id="busy", store=store)


def damaged_run(tmp: Path) -> Any:
    with open_store(f"json://{tmp / 'store'}") as store:
        flowdag.run(one_node(), run_id="r", store=store)
    snapshot = tmp / "store" / "runs" / "r" / "snapshot.json"
    snapshot.write_bytes(snapshot.read_bytes().replace(b'"wf"', b'"WF"'))
    with open_store(f"json://{tmp / 'store'}") as store:
        return store.load("r")


def wrong_key(tmp: Path) -> Any:
    with open_store(f"flatbuffers://{tmp / 'store'}", key=KEY) as store:
        flowdag.run(one_node(), run_id="r", store=store)
    with open_store(f"flatbuffers://{tmp / 'store'}", key=generate_key()) as store:
        return store.load("r")


def missing_key(tmp: Path) -> Any:
    with open_store(f"lmdb://{tmp / 'store'}", key=KEY) as store:
        flowdag.run(one_node(), run_id="r", store=store)
    with open_store(f"lmdb://{tmp / 'store'}") as store:
        return store.load("r")


def store_on_a_file(tmp: Path) -> Any:
    (tmp / "afile").write_text("not a directory")
    return open_store(f"json://{tmp / 'afile'}")


def set_bad_data(ctx: flowdag.Context) -> None:
    ctx.data["handle"] = object()


class Opaque:
    """A type no codec can store."""


def required_param(x: int) -> int:
    return x


def keyword_only(*, limit: int) -> int:
    return limit


# (id, action, error type, culprits the message names)
API_CASES: list[tuple[str, Callable[[Path], Any], type[Exception], list[str]]] = [
    (
        "run id: path traversal",
        lambda t: run_in(t, one_node(), "../../etc"),
        InvalidRunIdError,
        ["'../../etc'"],
    ),
    ("run id: slash", lambda t: run_in(t, one_node(), "a/b"), InvalidRunIdError, ["'a/b'"]),
    (
        "run id: NUL byte",
        lambda t: run_in(t, one_node(), "a\x00b"),
        InvalidRunIdError,
        ["'a\\x00b'"],
    ),
    (
        "run id: leading dot",
        lambda t: run_in(t, one_node(), ".hidden"),
        InvalidRunIdError,
        ["'.hidden'", "'.'"],
    ),
    ("run id: empty", lambda t: run_in(t, one_node(), ""), InvalidRunIdError, ["''"]),
    ("run id: too long", lambda t: run_in(t, one_node(), "x" * 201), InvalidRunIdError, ["1-200"]),
    ("run id: not a str", lambda t: run_in(t, one_node(), 42), InvalidRunIdError, ["int"]),  # type: ignore[arg-type]
    ("run id: newline", lambda t: run_in(t, one_node(), "a\nb"), InvalidRunIdError, ["'a\\nb'"]),
    (
        "store.load: traversal",
        lambda t: open_store(f"lmdb://{t}").load("../x"),
        InvalidRunIdError,
        ["'../x'"],
    ),
    (
        "store.delete: NUL",
        lambda t: open_store(f"json://{t}").delete("\x00"),
        InvalidRunIdError,
        ["'\\x00'"],
    ),
    (
        "cycle",
        lambda t: build(
            ("a", lambda c: 1, ["c"]), ("b", lambda a: 1, ["a"]), ("c", lambda b: 1, ["b"])
        ),
        CycleError,
        ["a -> b -> c -> a"],
    ),
    ("self-loop", lambda t: build(("a", lambda a: 1, ["a"])), CycleError, ["a -> a"]),
    (
        "missing dependency",
        lambda t: build(("a", lambda ghost: 1, ["ghost"])),
        MissingDependencyError,
        ["'a'", "'ghost'"],
    ),
    (
        "duplicate names",
        lambda t: build(("a", lambda: 1, []), ("a", lambda: 2, [])),
        DuplicateNodeError,
        ["'a'"],
    ),
    (
        "non-callable node",
        lambda t: one_node(42).build(),
        SignatureError,
        ["'a'", "not callable", "int"],
    ),
    (
        "required parameter not a dep",
        lambda t: one_node(required_param).build(),
        SignatureError,
        ["'a'", "'x'"],
    ),
    (
        "keyword-only parameter",
        lambda t: one_node(keyword_only).build(),
        SignatureError,
        ["'a'", "'limit'"],
    ),
    (
        "node name not a str",
        lambda t: flowdag.Workflow("w").add_node(5, lambda: 1),
        DAGError,
        ["5"],
    ),  # type: ignore[arg-type]
    (
        "negative retries",
        lambda t: one_node(retries=-1).build(),
        DAGError,
        ["'a'", "retries", "-1"],
    ),
    (
        "negative timeout",
        lambda t: one_node(timeout=-1).build(),
        DAGError,
        ["'a'", "timeout", "-1"],
    ),
    (
        "unserializable output",
        lambda t: run_in(t, one_node(Opaque)),
        SerializationError,
        ["'a'", "Opaque"],
    ),
    (
        "unserializable ctx.data",
        lambda t: run_in(t, one_node(set_bad_data)),
        SerializationError,
        ["'a'", "ctx.data['handle']", "object"],
    ),
    (
        "output over max_blob_size",
        lambda t: flowdag.run(
            one_node(lambda: os.urandom(5000)),
            store=flowdag.MemoryStore(codec=Codec(max_blob_size=1000)),
        ),
        SerializationError,
        ["'a'", "max_blob_size=1000"],
    ),
    (
        "store URL: unknown scheme",
        lambda t: open_store("s3://bucket/key"),
        StoreError,
        ["'s3://bucket/key'"],
    ),
    ("store URL: no directory", lambda t: open_store("lmdb://"), StoreError, ["'lmdb://'"]),
    ("store URL: no scheme", lambda t: open_store("state"), StoreError, ["'state'"]),
    ("store on a file", store_on_a_file, StoreError, ["afile", "not a directory"]),
    (
        "run of another workflow",
        run_of_another_workflow,
        WorkflowChangedError,
        ["'r'", "'wf'", "'report'"],
    ),
    ("changed workflow", changed_workflow, WorkflowChangedError, ["extra"]),
    ("run locked", locked_run, RunLockedError, ["'busy'", "locked"]),
    (
        "run not found",
        lambda t: open_store(f"lmdb://{t}").load("nope"),
        RunNotFoundError,
        ["'nope'"],
    ),
    ("damaged snapshot", damaged_run, CorruptStateError, ["'r'", "snapshot.json"]),
    ("wrong key", wrong_key, DecryptionError, ["'r'", "snapshot.fb", "wrong key"]),
    ("encrypted store, no key", missing_key, DecryptionError, ["'r'", "data.mdb", "encrypted"]),
    ("key too short", lambda t: open_store(f"lmdb://{t}", key="abcd"), StoreError, ["256-bit key"]),
    ("run(): not a DAG", lambda t: flowdag.run("etl.py"), InvalidArgumentTypeError, ["str"]),  # type: ignore[arg-type]
    (
        "run(): max_workers 0",
        lambda t: flowdag.run(one_node(), max_workers=0),
        InvalidArgumentError,
        ["max_workers", "0"],
    ),
    (
        "run(): bad pool cap",
        lambda t: flowdag.run(one_node(), pools={"db": 0}),
        InvalidArgumentError,
        ["pools['db']", "0"],
    ),
    (
        "run(): unknown executor",
        lambda t: flowdag.run(one_node(), executor="gpu"),
        flowdag.InvalidArgumentError,
        ["'gpu'"],
    ),
    (
        "run(): store not a store",
        lambda t: flowdag.run(one_node(), store=42),
        InvalidArgumentTypeError,
        ["int"],
    ),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(
    ("action", "error", "culprits"),
    [pytest.param(a, e, c, id=i) for i, a, e, c in API_CASES],
)
def test_api_bad_input(
    tmp_path: Path, action: Callable[[Path], Any], error: type[Exception], culprits: list[str]
) -> None:
    try:
        outcome = action(tmp_path)
    except FlowdagError as exc:
        assert type(exc) is error, f"{type(exc).__name__}: {exc}"
        message = str(exc)
    else:
        # Failures inside a run are recorded against the node, not raised.
        assert isinstance(outcome, flowdag.RunResult), f"no error for {outcome!r}"
        assert not outcome.ok
        errors = list(outcome.errors.values())
        assert [e.type for e in errors] == [error.__name__], errors
        message = errors[0].message
    for culprit in culprits:
        assert culprit in message, f"{culprit!r} not in {message!r}"


# -- the command line -----------------------------------------------------------------

FILES = {
    "wf.py": """
        import flowdag
        wf = flowdag.Workflow("etl")
        @wf.node
        def a():
            return 1
        @wf.node(deps=["a"])
        def b(a):
            return a + 1
    """,
    "report.py": """
        import flowdag
        wf = flowdag.Workflow("report")
        wf.add_node("a", lambda: 1)
    """,
    "raises.py": """
        raise RuntimeError("broken at import")
    """,
    "cycle.py": """
        import flowdag
        wf = flowdag.Workflow("c")
        wf.add_node("x", lambda y: 1, deps=["y"])
        wf.add_node("y", lambda x: 1, deps=["x"])
    """,
    "nothing.py": """
        x = 1
    """,
    "two.py": """
        import flowdag
        one = flowdag.Workflow("one"); one.add_node("a", lambda: 1)
        two = flowdag.Workflow("two"); two.add_node("a", lambda: 1)
    """,
    "badsig.py": """
        import flowdag
        wf = flowdag.Workflow("s")
        wf.add_node("a", lambda missing: 1)
    """,
}


@pytest.fixture(scope="module")
def cli_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Workflow files and two stores, made once; each test works on a copy."""
    template = tmp_path_factory.mktemp("cli")
    cwd = os.getcwd()
    os.chdir(template)
    try:
        cli_setup(template)
    finally:
        os.chdir(cwd)
    return template


def cli_setup(tmp: Path) -> None:
    for name, text in FILES.items():
        (tmp / name).write_text(textwrap.dedent(text))
    (tmp / "binary.py").write_bytes(b"import flowdag\x00\xff\xfe")
    (tmp / "folder.py").mkdir()
    (tmp / "afile").write_text("")
    assert main(["run", "wf.py", "--run-id", "R1", "--store", "lmdb://st"]) == 0
    assert main(["run", "wf.py", "--run-id", "E1", "--store", "json://enc"]) == 0


# (id, argv, environment, culprits in stderr)
CLI_CASES: list[tuple[str, list[str], dict[str, str], list[str]]] = [
    ("missing workflow file", ["run", "missing.py"], {}, ["missing.py"]),
    ("workflow path is a folder", ["run", "folder.py"], {}, ["folder.py"]),
    ("workflow file not Python", ["run", "binary.py"], {}, ["binary.py", "null bytes"]),
    (
        "workflow raises at import",
        ["run", "raises.py"],
        {},
        ["raises.py", "RuntimeError", "broken at import"],
    ),
    ("no workflow in file", ["run", "nothing.py"], {}, ["nothing.py", "no flowdag.Workflow"]),
    ("several workflows", ["run", "two.py"], {}, ["two.py", "one", "two"]),
    ("unknown workflow name", ["run", "wf.py:nosuch"], {}, ["'nosuch'", "wf.py"]),
    ("cycle in the file", ["run", "cycle.py"], {}, ["x -> y -> x"]),
    ("bad signature in the file", ["run", "badsig.py"], {}, ["'a'", "'missing'"]),
    ("run id: traversal", ["run", "wf.py", "--run-id", "../x"], {}, ["'../x'"]),
    ("run id: NUL byte", ["run", "wf.py", "--run-id", "a\x00b"], {}, ["'a\\x00b'"]),
    ("status: bad run id", ["status", "..", "--store", "lmdb://st"], {}, ["'..'"]),
    ("unknown store scheme", ["run", "wf.py", "--store", "s3://x"], {}, ["'s3://x'"]),
    ("store URL without a dir", ["list", "--store", "json://"], {}, ["'json://'"]),
    (
        "store on a file",
        ["run", "wf.py", "--store", "lmdb://afile"],
        {},
        ["afile", "not a directory"],
    ),
    ("list: store on a file", ["list", "--store", "lmdb://afile"], {}, ["afile", "no store at"]),
    ("list: no store", ["list", "--store", "json://nowhere"], {}, ["nowhere", "no store at"]),
    ("status: no store", ["status", "r1", "--store", "lmdb://nowhere"], {}, ["no store at"]),
    ("verify a missing store", ["store", "verify", "json://nowhere"], {}, ["nowhere"]),
    ("unknown run", ["status", "nope", "--store", "lmdb://st"], {}, ["'nope'"]),
    (
        "run of another workflow",
        ["run", "report.py", "--run-id", "R1", "--store", "lmdb://st"],
        {},
        ["'R1'", "'etl'", "'report'"],
    ),
    ("unknown option", ["run", "wf.py", "--bogus"], {}, ["--bogus"]),
    ("unknown command", ["bogus"], {}, ["'bogus'"]),
    ("workers not positive", ["run", "wf.py", "--workers", "0"], {}, ["--workers", "'0'"]),
    ("unknown executor", ["run", "wf.py", "--executor", "gpu"], {}, ["--executor", "'gpu'"]),
    ("missing argument", ["status"], {}, ["RUN_ID"]),
    (
        "malformed FLOWDAG_KEY",
        ["list", "--store", "lmdb://st"],
        {"FLOWDAG_KEY": "secret"},
        ["FLOWDAG_KEY", "256-bit"],
    ),
    (
        "FLOWDAG_KEY on a plain store",
        ["status", "E1", "--store", "json://enc"],
        {"FLOWDAG_KEY": KEY},
        ["'E1'", "snapshot.json", "not encrypted"],
    ),
]


@pytest.mark.parametrize(
    ("argv", "env", "culprits"),
    [pytest.param(a, e, c, id=i) for i, a, e, c in CLI_CASES],
)
def test_cli_bad_input(
    tmp_path: Path,
    cli_template: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: dict[str, str],
    culprits: list[str],
) -> None:
    work = tmp_path / "work"
    shutil.copytree(cli_template, work)
    monkeypatch.chdir(work)
    monkeypatch.delenv("FLOWDAG_KEY", raising=False)
    capsys.readouterr()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    reason = [line for line in err.splitlines() if "error:" in line]
    assert len(reason) == 1, err  # one line says why
    for culprit in culprits:
        assert culprit in reason[0], f"{culprit!r} not in {reason[0]!r}"


def test_cli_bad_input_in_a_real_process(tmp_path: Path) -> None:
    argv = ["run", "raises.py"]
    for name, text in FILES.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    (tmp_path / "binary.py").write_bytes(b"\x00\xff")
    env = {k: v for k, v in os.environ.items() if k != "FLOWDAG_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "flowdag", *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stderr.startswith("flowdag: error: ")
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_cli_unreadable_workflow_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.py").write_text(textwrap.dedent(FILES["wf.py"]))
    (tmp_path / "secret.py").chmod(0)
    assert main(["run", "secret.py"]) == 2
    err = capsys.readouterr().err
    assert "secret.py" in err and "Traceback" not in err


def test_catalogue_size() -> None:
    assert len(API_CASES) + len(CLI_CASES) >= 30
