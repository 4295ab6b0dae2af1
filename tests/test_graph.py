"""`flowdag.graph` and ``flowdag graph``: Mermaid, DOT, PNG, statuses, escaping, big DAGs."""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import flowdag
from flowdag.cli import main
from flowdag.graph import MAX_NODES, graph_view, to_dot, to_mermaid, write_png
from flowdag.state import NodeState, NodeStatus, RunState

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ODD_NAMES = [
    'quote"inside',
    "angle <b>bold</b>",
    "semi;colon & amp",
    "hash #35; entity",
    "[brackets] {braces} (parens)",
    "pipe|bar",
    "back\\slash \\n",
    "new\nline",
    "dollar $x$",
    "`tick` *star*",
    "ünïcode ✓",
    "-->arrow",
]

# a -> b -> c, with b failing: c is skipped; d stands alone and completes.
FAILING = """
import flowdag

wf = flowdag.Workflow("pipe")

@wf.node
def a():
    return 1

@wf.node(deps=["a"])
def b(a):
    raise RuntimeError("b is broken")

@wf.node(deps=["b"])
def c(b):
    return b

@wf.node
def d():
    return 4
"""


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setattr(sys, "path", list(sys.path))  # main() adds workflow folders
    monkeypatch.chdir(tmp_path)
    yield


def failing_run() -> tuple[flowdag.DAG, RunState]:
    wf = flowdag.Workflow("pipe")
    wf.add_node("a", lambda: 1)
    wf.add_node("b", _broken, deps=["a"])
    wf.add_node("c", lambda b: b, deps=["b"])
    wf.add_node("d", lambda: 4)
    dag = wf.build()
    store = flowdag.MemoryStore()
    flowdag.run(dag, run_id="r1", store=store)
    return dag, store.load_statuses("r1")


def _broken(a: int) -> int:
    raise RuntimeError("b is broken")


def odd_dag() -> flowdag.DAG:
    wf = flowdag.Workflow('odd "workflow"')
    previous: list[str] = []
    for name in ODD_NAMES:
        wf.add_node(name, lambda **kw: 1, deps=previous[-1:])
        previous.append(name)
    return wf.build()


def fanout(width: int) -> flowdag.DAG:
    wf = flowdag.Workflow("fan")
    wf.add_node("root", lambda: 1)
    for i in range(width):
        wf.add_node(f"n{i}", lambda root: root, deps=["root"])
    wf.add_node("sink", lambda **kw: 1, deps=[f"n{i}" for i in range(width)])
    return wf.build()


def chain(length: int) -> flowdag.DAG:
    wf = flowdag.Workflow("chain")
    wf.add_node("n0", lambda: 0)
    for i in range(1, length):
        wf.add_node(f"n{i}", lambda **kw: 0, deps=[f"n{i - 1}"])
    return wf.build()


# -- text formats with statuses -------------------------------------------------------


def test_mermaid_colours_nodes_by_status_and_shows_durations() -> None:
    dag, state = failing_run()
    text = to_mermaid(graph_view(dag, state))
    lines = text.splitlines()
    assert lines[:3] == [
        "---",
        "title: 'workflow pipe, run r1: 2 completed, 1 failed, 1 skipped'",
        "---",
    ]
    assert "flowchart TD" in lines
    ids = {m.group(2): m.group(1) for m in re.finditer(r'^\s+(n\d+)\["([^"<]*)', text, re.M)}
    assert set(ids) == {"a", "b", "c", "d"}
    assert f"    {ids['a']} --> {ids['b']}" in lines
    assert f"    {ids['b']} --> {ids['c']}" in lines
    classes = dict(re.findall(r"^\s+class (\S+) (\w+)$", text, re.M))
    by_class = {cls: set(members.split(",")) for members, cls in classes.items()}
    assert by_class["completed"] == {ids["a"], ids["d"]}
    assert by_class["failed"] == {ids["b"]}
    assert by_class["skipped"] == {ids["c"]}
    assert "classDef failed fill:#f4a6a6" in text
    # completed and failed nodes carry a duration; the skipped one says so and has none
    assert re.search(rf'{ids["a"]}\["a<br/>\d+(#181;s|ms|\.\d\ds)"\]', text), text
    assert re.search(rf'{ids["b"]}\["b<br/>failed \d', text), text
    assert f'{ids["c"]}["c<br/>skipped"]' in text


def test_dot_colours_nodes_by_status_and_shows_durations() -> None:
    dag, state = failing_run()
    text = to_dot(graph_view(dag, state))
    assert text.startswith("digraph flowdag {") and text.rstrip().endswith("}")
    nodes = dict(re.findall(r'^\s+(n\d+) \[label="([^"\\]*)', text, re.M))
    by_name = {label.split("\\n")[0]: node for node, label in nodes.items()}
    assert set(by_name) == {"a", "b", "c", "d"}
    assert f"{by_name['a']} -> {by_name['b']};" in text
    assert re.search(rf'{by_name["b"]} \[label="b\\nfailed [^"]+", fillcolor="#f4a6a6"', text)
    assert re.search(rf'{by_name["c"]} \[label="c\\nskipped", fillcolor="#ffe08a"', text)
    assert re.search(rf'{by_name["d"]} \[label="d\\n[^"]+", fillcolor="#b7e4c7"', text)
    assert "run r1" in text


def test_without_a_run_nodes_are_plain() -> None:
    dag, _ = failing_run()
    view = graph_view(dag)
    assert not view.with_status and not view.reduced and view.note == ""
    assert all(box.status is None and box.lines == box.nodes for box in view.boxes)
    assert "class n0,n1,n2,n3 node" in to_mermaid(view)


def test_running_and_pending_nodes_of_an_unfinished_run() -> None:
    dag, _ = failing_run()
    state = RunState("r2", "pipe", nodes={"a": NodeState(NodeStatus.RUNNING, 1)})
    view = graph_view(dag, state)
    assert {box.nodes[0]: box.status for box in view.boxes} == {
        "a": "running",
        "b": "pending",
        "c": "pending",
        "d": "pending",
    }
    assert "classDef running fill:#a9c9f5" in to_mermaid(view)


def test_running_nodes_of_an_interrupted_run_are_drawn_interrupted(tmp_path: Path) -> None:
    dag, _ = failing_run()
    state = RunState("r3", "pipe", nodes={"a": NodeState(NodeStatus.RUNNING, 1)})
    view = graph_view(dag, state, interrupted=True)
    assert {box.nodes[0]: box.status for box in view.boxes}["a"] == "interrupted"
    assert view.title == "workflow pipe, run r3: 3 pending, 1 interrupted"
    assert "a<br/>interrupted" in to_mermaid(view)
    assert "classDef interrupted fill:#e2c6f5" in to_mermaid(view)
    assert 'fillcolor="#e2c6f5"' in to_dot(view)
    pytest.importorskip("matplotlib")
    assert write_png(view, tmp_path / "g.png").read_bytes().startswith(PNG_MAGIC)


def test_a_grouped_interrupted_fanout_keeps_its_interrupted_nodes_in_sight() -> None:
    dag = fanout(998)
    nodes = {name: NodeState(NodeStatus.COMPLETED, 1) for name in dag.nodes}
    stuck = sorted(dag.nodes)[500]
    nodes[stuck] = NodeState(NodeStatus.RUNNING, 1)
    view = graph_view(dag, RunState("r", dag.name, nodes=nodes), interrupted=True)
    assert view.reduced
    assert any(box.nodes == [stuck] and box.status == "interrupted" for box in view.boxes)
    assert view.counts == {"completed": 999, "interrupted": 1}
    assert view.title.endswith("1 interrupted, 999 completed")


# -- escaping -----------------------------------------------------------------------------


def test_mermaid_escapes_odd_names() -> None:
    view = graph_view(odd_dag())
    text = to_mermaid(view)
    body = text.split("flowchart TD\n", 1)[1]
    labels = re.findall(r'^    n\d+\["(.*)"\]$', body, re.M)
    assert len(labels) == len(ODD_NAMES)
    for label in labels:
        # nothing that could end the label or start markup, and every entity well formed
        bare = re.sub(r"#\d+;", "", label)
        assert not set(bare) & set('"<>[]{}|;`*#&\n\\'), label
        assert re.fullmatch(r"([A-Za-z0-9 _.,:+\-()/]|#\d+;)*", label), label
    decoded = [re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), label) for label in labels]
    assert sorted(decoded) == sorted(ODD_NAMES)
    edges = re.findall(r"^    (n\d+) --> (n\d+)$", body, re.M)
    assert len(edges) == len(ODD_NAMES) - 1
    assert 'title: \'workflow odd "workflow"' in text


def test_dot_escapes_odd_names() -> None:
    text = to_dot(graph_view(odd_dag()))
    quoted = r'"((?:[^"\\]|\\.)*)"'
    labels = re.findall(rf"^    n\d+ \[label={quoted}, fillcolor=", text, re.M)
    assert len(labels) == len(ODD_NAMES)
    decoded = [
        re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), s) for s in labels
    ]
    assert sorted(decoded) == sorted(ODD_NAMES)
    # every statement is whole: no quote left open anywhere
    for line in text.splitlines():
        stripped = re.sub(quoted, "", line)
        assert '"' not in stripped, line


def test_png_of_odd_names(tmp_path: Path) -> None:
    target = write_png(graph_view(odd_dag()), tmp_path / "odd.png")
    assert target.read_bytes()[:8] == PNG_MAGIC


# -- big DAGs -----------------------------------------------------------------------------


def test_a_1000_node_fanout_is_grouped_and_says_so() -> None:
    dag = fanout(998)
    view = graph_view(dag)
    assert view.reduced
    assert len(view.boxes) <= MAX_NODES
    assert "1,000 nodes" in view.note and "grouped" in view.note
    groups = [box for box in view.boxes if box.group]
    assert sum(len(box.nodes) for box in view.boxes) == 1000  # every node is somewhere
    assert any("more nodes" in box.lines[0] for box in groups)
    assert "%% flowdag: 1,000 nodes" in to_mermaid(view)
    assert "1,000 nodes in 3 layers" in to_dot(view)
    assert "[[" in to_mermaid(view)  # groups have their own shape


def test_a_1000_node_chain_keeps_ends_and_where_the_run_stopped() -> None:
    dag = chain(1000)
    state = RunState("r", "chain")
    for i in range(1000):
        status = NodeStatus.COMPLETED if i < 600 else NodeStatus.PENDING
        state.nodes[f"n{i}"] = NodeState(status, 1 if i < 600 else 0)
    state.nodes["n600"] = NodeState(NodeStatus.FAILED, 3)
    view = graph_view(dag, state)
    assert view.reduced and len(view.boxes) <= 60
    singles = {box.nodes[0] for box in view.boxes if not box.group}
    assert {"n0", "n999", "n599", "n600", "n601"} <= singles
    assert sum(len(box.nodes) for box in view.boxes) == 1000
    # the group before the failure is all completed, and says how many nodes it holds
    lines = [" / ".join(box.lines) for box in view.boxes if box.group]
    assert any("completed" in line and "nodes, layers" in line for line in lines), lines
    # arrows still run from layer to layer through the groups
    assert len(view.edges) == len(view.boxes) - 1


def test_max_nodes_is_adjustable() -> None:
    dag = fanout(298)
    assert graph_view(dag).reduced
    assert not graph_view(dag, max_nodes=300).reduced


def test_png_is_written(tmp_path: Path) -> None:
    dag, state = failing_run()
    small = write_png(graph_view(dag, state), tmp_path / "small.png")
    big = write_png(graph_view(fanout(998)), tmp_path / "big.png")
    for target in (small, big):
        data = target.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5_000


# -- command line -------------------------------------------------------------------------


def write(tmp_path: Path, source: str = FAILING) -> Path:
    path = tmp_path / "pipeline.py"
    path.write_text(textwrap.dedent(source))
    return path


def one_error_line(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("flowdag: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_cli_prints_mermaid_by_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path)
    assert main(["graph", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "flowchart TD" in out and err == ""


def test_cli_colours_by_a_stored_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path)
    url = f"lmdb://{tmp_path / 's'}"
    assert main(["run", str(path), "--run-id", "r1", "--store", url]) == 1
    capsys.readouterr()
    assert main(["graph", f"{path}:wf", "--run-id", "r1", "--store", url, "--format", "dot"]) == 0
    out, _ = capsys.readouterr()
    assert "digraph flowdag" in out
    assert 'fillcolor="#f4a6a6"' in out and 'fillcolor="#ffe08a"' in out


def test_cli_writes_files_and_infers_the_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path)
    assert main(["graph", str(path), "--out", "g.png"]) == 0
    assert (tmp_path / "g.png").read_bytes()[:8] == PNG_MAGIC
    assert main(["graph", str(path), "--out", "g.dot"]) == 0
    assert (tmp_path / "g.dot").read_text().startswith("digraph")
    assert main(["graph", str(path), "--out", "g.txt", "--format", "mermaid"]) == 0
    assert "flowchart TD" in (tmp_path / "g.txt").read_text()
    _, err = capsys.readouterr()
    assert "wrote g.png" in err


def test_cli_says_when_a_big_dag_is_grouped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        """
        import flowdag
        wf = flowdag.Workflow("big")
        wf.add_node("root", lambda: 1)
        for i in range(500):
            wf.add_node(f"n{i}", lambda root: root, deps=["root"])
        """,
    )
    assert main(["graph", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "501 nodes" in err and "--max-nodes" in err
    assert "%% flowdag: 501 nodes" in out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["graph", "missing.py"], "workflow file not found"),
        (["graph", "pipeline.py", "--format", "png"], "--out"),
        (["graph", "pipeline.py", "--store", "memory://"], "--run-id"),
        (["graph", "pipeline.py", "--run-id", "../x"], "invalid run id"),
        (["graph", "pipeline.py", "--run-id", "nope", "--store", "memory://"], "nope"),
        (["graph", "pipeline.py", "--run-id", "r", "--store", "bogus://x"], "unknown store URL"),
        (["graph", "pipeline.py:other"], "no workflow named 'other'"),
    ],
)
def test_cli_bad_input_is_one_error_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    write(tmp_path)
    assert main(argv) == 2
    one_error_line(capsys.readouterr().err, fragment)


def test_cli_png_without_matplotlib_says_how_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert main(["graph", str(path), "--out", "g.png"]) == 2
    one_error_line(capsys.readouterr().err, "matplotlib", "pip install 'flowdag[plot]'")
    assert not (tmp_path / "g.png").exists()


def test_cli_unknown_format_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path)
    assert main(["graph", "pipeline.py", "--format", "svg"]) == 2
    assert "invalid choice" in capsys.readouterr().err
