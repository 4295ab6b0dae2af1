"""Map nodes (``Workflow.map``): one node per item of a list known only at run time.

Item calls are counted in a file (one line per successful call: it works
across processes and resumes), so "a completed item never runs again" is
checked on what the functions actually did.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowdag
from flowdag import Context, NodeStatus, Workflow
from flowdag.errors import DAGError, DuplicateNodeError, MissingDependencyError, SignatureError
from flowdag.refs import Ref
from flowdag.stores import open_store
from flowdag.stores.base import Store

C, F, S = NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.SKIPPED
KINDS = ["memory", "lmdb", "json", "flatbuffers"]


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = "memory://" if request.param == "memory" else f"{request.param}://{tmp_path / 's'}"
    with open_store(url) as opened:
        yield opened


def calls(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def logged(log: Path, line: str) -> None:
    with log.open("a") as f:
        f.write(line + "\n")


def etl(log: Path, items: list[Any], **options: Any) -> Workflow:
    """extract -> map 'double' (with a constant dep 'k') -> map 'inc' -> total."""

    def double(item: int, k: int, ctx: Context) -> int:
        logged(log, ctx.node)
        return item * k

    wf = Workflow("etl")
    wf.add_node("extract", lambda: list(items))
    wf.add_node("k", lambda: 2)
    wf.map("double", double, over="extract", deps=["k"], **options)
    wf.map("inc", lambda item: item + 1, over="double")
    wf.add_node("total", lambda inc: list(inc), deps=["inc"])
    return wf


def test_a_map_runs_one_node_per_item_and_downstream_gets_the_list(
    store: Store, tmp_path: Path
) -> None:
    log = tmp_path / "calls"
    result = flowdag.run(etl(log, [3, 1, 2]), run_id="r", store=store)
    assert result.status == "completed"
    assert result.outputs["total"] == [7, 3, 5]  # item order, maps of maps
    assert result.outputs["double"] == [6, 2, 4]
    assert result.outputs["double[1]"] == 2
    assert sorted(calls(log)) == ["double[0]", "double[1]", "double[2]"]
    loaded = store.load("r")
    assert loaded.status == "completed"
    assert loaded.nodes["double[2]"].output == 4
    assert loaded.nodes["double"].output == [6, 2, 4]
    assert loaded.nodes["inc[0]"].deps == ("double",)
    # A resume of the completed run calls nothing and reports no change of the DAG.
    again = flowdag.run(etl(log, [3, 1, 2]), run_id="r", store=store)
    assert again.outputs["total"] == [7, 3, 5]
    assert len(calls(log)) == 3


def test_an_empty_list_gives_an_empty_list(store: Store, tmp_path: Path) -> None:
    result = flowdag.run(etl(tmp_path / "calls", []), run_id="r", store=store)
    assert result.status == "completed"
    assert result.outputs["double"] == [] and result.outputs["total"] == []
    assert store.load("r").nodes["inc"].output == []


@pytest.mark.parametrize(("value", "named"), [(5, "int"), (None, "NoneType"), ("abc", "str")])
def test_an_output_that_is_no_list_fails_the_map_naming_its_type(
    value: Any, named: str, tmp_path: Path
) -> None:
    wf = Workflow("w")
    wf.add_node("extract", lambda: value)
    wf.map("double", lambda item: item * 2, over="extract")
    wf.add_node("total", lambda double: double, deps=["double"])
    result = flowdag.run(wf)
    assert result.node_status == {"extract": C, "double": F, "total": S}
    error = result.errors["double"]
    assert named in error.message and "'extract'" in error.message
    assert "list" in error.message


def test_a_map_over_a_list_kept_by_reference(store: Store, tmp_path: Path) -> None:
    wf = Workflow("w")
    wf.add_node("extract", lambda: list(range(300)), inline_limit=64)
    wf.map("square", lambda item: item * item, over="extract", inline_limit=None)
    wf.add_node("total", lambda square: sum(square), deps=["square"])
    result = flowdag.run(wf, run_id="r", store=store)
    assert result.status == "completed"
    assert result.outputs["total"] == sum(i * i for i in range(300))
    assert type(store.load("r").nodes["extract"].output) is Ref


class Flaky:
    """Fails the items whose value is in a file of bad values; logs every success."""

    def __init__(self, root: Path) -> None:
        self.bad, self.log = root / "bad", root / "calls"

    def __call__(self, item: int, ctx: Context) -> int:
        bad = set(self.bad.read_text().split()) if self.bad.exists() else set()
        if str(item) in bad:
            raise ValueError(f"bad item {item}")
        logged(self.log, ctx.node)
        return item * 10


def flaky_workflow(flaky: Flaky, items: list[int], **options: Any) -> Workflow:
    wf = Workflow("flaky")
    wf.add_node("extract", lambda: list(items))
    wf.map("work", flaky, over="extract", **options)
    wf.add_node("total", lambda work: list(work), deps=["work"])
    return wf


def test_an_item_failure_fails_the_map_and_a_resume_runs_only_the_failed_items(
    store: Store, tmp_path: Path
) -> None:
    flaky = Flaky(tmp_path)
    flaky.bad.write_text("2 4")
    wf = flaky_workflow(flaky, [0, 1, 2, 3, 4])
    result = flowdag.run(wf, run_id="r", store=store)
    assert result.node_status["work"] is F and result.node_status["total"] is S
    assert result.node_status["work[2]"] is F and result.node_status["work[3]"] is C
    message = result.errors["work"].message
    assert "2 of 5 items failed" in message and "work[2]" in message
    assert sorted(calls(flaky.log)) == ["work[0]", "work[1]", "work[3]"]
    assert store.load("r").nodes["work[4]"].status is F
    flaky.bad.write_text("")
    result = flowdag.run(wf, run_id="r", store=store)
    assert result.status == "completed"
    assert result.outputs["total"] == [0, 10, 20, 30, 40]
    assert sorted(calls(flaky.log)) == ["work[0]", "work[1]", "work[2]", "work[3]", "work[4]"]


def test_items_retry_on_their_own(tmp_path: Path) -> None:
    tries = tmp_path / "tries"

    def once_bad(item: int, ctx: Context) -> int:
        logged(tries, f"{ctx.node}:{ctx.attempt}")
        if item == 1 and ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return item

    wf = Workflow("w")
    wf.add_node("extract", lambda: [0, 1, 2])
    wf.map("m", once_bad, over="extract", retries=1)
    result = flowdag.run(wf)
    assert result.outputs["m"] == [0, 1, 2]
    assert sorted(calls(tries)) == ["m[0]:1", "m[1]:1", "m[1]:2", "m[2]:1"]
    assert result.nodes["m[1]"].attempts == 2


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # lets an abandoned attempt's thread end


def test_an_item_that_overruns_its_timeout_fails_alone(release: threading.Event) -> None:
    def slow_one(item: int) -> int:
        if item == 1:
            release.wait(5)
        return item

    wf = Workflow("w")
    wf.add_node("extract", lambda: [0, 1, 2])
    wf.map("m", slow_one, over="extract", timeout=0.2)
    result = flowdag.run(wf)
    assert result.node_status["m"] is F
    assert result.errors["m[1]"].type == "NodeTimeoutError"
    assert result.node_status["m[0]"] is C and result.node_status["m[2]"] is C


def _triple(item: int, k: int, ctx: Context) -> list[Any]:
    return [item * 3 + k, ctx.node]


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_items_run_on_every_executor(executor: str, tmp_path: Path) -> None:
    wf = Workflow("w")
    wf.add_node("extract", lambda: [1, 2, 3, 4])
    wf.add_node("k", lambda: 1)
    wf.map("m", _triple, over="extract", deps=["k"], pool="p")
    wf.add_node("total", lambda m: m, deps=["m"])
    store = f"lmdb://{tmp_path / 's'}"
    result = flowdag.run(wf, store=store, executor=executor, max_workers=2, pools={"p": 1})
    assert result.outputs["total"] == [[4, "m[0]"], [7, "m[1]"], [10, "m[2]"], [13, "m[3]"]]


def _clean(item: int, scale: int, rules: dict[str, int], shift: int) -> int:
    return item * rules["factor"] * scale + shift


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_a_map_binds_its_deps_and_constants_as_a_node_does(executor: str, store: Store) -> None:
    # As in the contract: deps={parameter: node}, and constants after the item.
    wf = Workflow("w")
    wf.add_node("extract", lambda: [1, 2, 3])
    wf.add_node("load_rules", lambda: {"factor": 10})
    wf.map(
        "transform",
        _clean,
        over="extract",
        deps={"rules": "load_rules"},
        args=(2,),
        kwargs={"shift": 1},
    )
    wf.add_node("merge", lambda transform: sum(transform), deps=["transform"])
    result = flowdag.run(wf, run_id="r", store=store, executor=executor, max_workers=2)
    assert result.outputs["transform"] == [21, 41, 61] and result.outputs["merge"] == 123
    assert flowdag.run(wf, run_id="r", store=store).explain()["transform"].code == "reused"
    wf = Workflow("w")
    with pytest.raises(DAGError, match="'extract' is over="):
        wf.map("t", _clean, over="extract", deps={"rules": "extract"})


def test_a_changed_list_reruns_only_the_items_that_changed(store: Store, tmp_path: Path) -> None:
    flaky = Flaky(tmp_path)
    items = tmp_path / "items"
    items.write_text("1 2 3 4")

    def workflow(version: int) -> Workflow:
        wf = Workflow("w")
        wf.add_node("extract", lambda: [int(x) for x in items.read_text().split()], version=version)
        wf.map("work", flaky, over="extract")
        return wf

    assert flowdag.run(workflow(1), run_id="r", store=store).outputs["work"] == [10, 20, 30, 40]
    items.write_text("1 9 3")  # item 1 changed, item 3 gone
    result = flowdag.run(workflow(2), run_id="r", store=store)
    assert result.outputs["work"] == [10, 90, 30]
    assert sorted(calls(flaky.log)) == sorted(
        ["work[0]", "work[1]", "work[2]", "work[3]", "work[1]"]
    )
    assert "work[3]" not in result.nodes
    assert result.status == "completed"


def test_rerun_from_a_map_runs_its_items_again_and_rerun_failed_only_the_failed(
    tmp_path: Path,
) -> None:
    flaky = Flaky(tmp_path)
    flaky.bad.write_text("1")
    wf = flaky_workflow(flaky, [0, 1, 2])
    with open_store("memory://") as store:
        assert flowdag.run(wf, run_id="r", store=store).node_status["work"] is F
        flaky.bad.write_text("")
        assert flowdag.run(wf, run_id="r", store=store, rerun="failed").status == "completed"
        assert sorted(calls(flaky.log)) == ["work[0]", "work[1]", "work[2]"]
        flowdag.run(wf, run_id="r", store=store, rerun_from=["work"])
        assert len(calls(flaky.log)) == 6


def test_bad_map_declarations_are_build_errors() -> None:
    wf = Workflow("w")
    wf.map("m", lambda item: item, over="nowhere")
    with pytest.raises(MissingDependencyError, match="nowhere"):
        wf.build()
    with pytest.raises(SignatureError, match="first positional"):
        Workflow("w").map("m", lambda *, item: item, over="a")
    with pytest.raises(SignatureError, match="'other'"):
        Workflow("w").map("m", lambda item, other: item, over="a")
    clash = Workflow("w")
    clash.add_node("a", lambda: [1])
    clash.map("m", lambda item: item, over="a")
    clash.add_node("m[0]", lambda: 1)
    with pytest.raises(DuplicateNodeError, match=r"item 0 of map node 'm'"):
        clash.build()
    with pytest.raises(DAGError, match="drop it from deps"):
        Workflow("w").map("m", lambda item, a: item, over="a", deps=["a"])


@pytest.mark.parametrize(
    ("name", "item"),
    [
        ("m[0]", ("m", 0)),
        ("m[12]", ("m", 12)),
        ("m[01]", None),
        ("m[x]", None),
        ("m", None),
        ("n[0]", None),
        ("m[0][1]", None),
        ("m[-1]", None),
    ],
)
def test_item_names(name: str, item: tuple[str, int] | None) -> None:
    from flowdag._maps import map_of

    assert map_of(name, {"m"}) == item


def test_a_map_reached_with_its_item_named_like_its_upstream() -> None:
    # The usual way to write the function: its parameter named after `over`.
    wf = Workflow("w")
    wf.add_node("pages", lambda: ["a", "b"])
    wf.map("upper", lambda pages: pages.upper(), over="pages")
    assert flowdag.run(wf).outputs["upper"] == ["A", "B"]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    size=st.integers(0, 7),
    rounds=st.lists(st.sets(st.integers(0, 6)), min_size=0, max_size=3),
)
def test_resumes_until_done_give_the_list_and_never_rerun_a_completed_item(
    tmp_path_factory: pytest.TempPathFactory, size: int, rounds: list[set[int]]
) -> None:
    root = tmp_path_factory.mktemp("prop")
    flaky = Flaky(root)
    wf = flaky_workflow(flaky, list(range(size)), retries=0)
    with open_store("memory://") as store:
        for bad in [*rounds, set()]:  # the last round fails nothing: the run completes
            flaky.bad.write_text(" ".join(map(str, bad)))
            before = {int(name[5:-1]) for name in calls(flaky.log)}
            result = flowdag.run(wf, run_id="r", store=store)
            failing = (bad & set(range(size))) - before  # completed ones are not called
            assert (result.status == "completed") == (not failing)
            done = calls(flaky.log)
            assert len(done) == len(set(done)), "a completed item ran again"
        assert result.outputs["total"] == [i * 10 for i in range(size)]
        assert sorted(calls(flaky.log)) == sorted(f"work[{i}]" for i in range(size))


def _big(item: int) -> list[int]:
    return [item] * 100


def test_item_outputs_kept_by_reference_stay_refs_in_the_list(tmp_path: Path) -> None:
    wf = Workflow("w")
    wf.add_node("extract", lambda: [1, 2])
    wf.map("big", _big, over="extract", inline_limit=64)
    wf.add_node("total", lambda big: sum(sum(ref.load()) for ref in big), deps=["big"])
    url = f"lmdb://{tmp_path / 's'}"
    result = flowdag.run(wf, run_id="r", store=url)
    assert result.outputs["total"] == 300
    with open_store(url) as store:
        flowdag.gc(store, grace="0s")  # the map's blob lists its items' blobs too
        kept = store.load("r").nodes["big"].output
        assert type(kept) is Ref  # the list itself is above the inline limit too
        assert [ref.load() for ref in kept.load()] == [[1] * 100, [2] * 100]


def test_a_long_list_of_results_is_kept_by_reference(store: Store) -> None:
    wf = Workflow("w")
    wf.add_node("extract", lambda: list(range(50)))
    wf.map("m", lambda item: item * 1000, over="extract")
    wf.add_node("total", lambda m: sum(m), deps=["m"])
    result = flowdag.run(wf, run_id="r", store=store, inline_limit=100)
    assert result.outputs["total"] == 1000 * sum(range(50))
    assert type(store.load("r").nodes["m"].output) is Ref
    again = flowdag.run(wf, run_id="r", store=store, inline_limit=100)  # reused, loaded
    assert again.outputs["total"] == 1000 * sum(range(50))


def test_status_counts_a_maps_items(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flowdag.cli import main

    flaky = Flaky(tmp_path)
    flaky.bad.write_text("2")
    url = f"lmdb://{tmp_path / 's'}"
    flowdag.run(flaky_workflow(flaky, [0, 1, 2, 3]), run_id="r", store=url)
    capsys.readouterr()
    assert main(["status", "r", "--store", url]) == 0
    out = capsys.readouterr().out
    assert "3/4 items completed, 1 failed" in out
    assert "work[1]" not in out.replace("work[2]", "")  # items are listed with -v only
    assert main(["status", "r", "--store", url, "-v"]) == 0
    assert "work[1]" in capsys.readouterr().out
    assert main(["show", "r", "work[2]", "--store", url]) == 0
    assert "bad item 2" in capsys.readouterr().out
    graph = tmp_path / "flow.py"
    graph.write_text(
        "import flowdag\n"
        "wf = flowdag.Workflow('flaky')\n"
        "wf.add_node('extract', lambda: [0, 1, 2, 3])\n"
        "wf.map('work', lambda item: item, over='extract')\n"
        "wf.add_node('total', lambda work: work, deps=['work'])\n"
    )
    assert main(["graph", str(graph), "--run-id", "r", "--store", url]) == 0
    assert "3/4 items completed, 1 failed" in capsys.readouterr().out


def test_stores_load_the_records_of_items_the_header_does_not_list(store: Store) -> None:
    from flowdag.state import NodeRecord, NodeState, RunState

    store.save(RunState("r", "w", nodes={"src": NodeState(), "m": NodeState(deps=("src",))}))
    encode = store.codec.encode
    store.commit(
        "r",
        [
            NodeRecord("m[1]", C, 1, output=encode("one")),
            NodeRecord("m[0]", F, 2),
            NodeRecord("other", C, 1, output=encode(0)),  # no item: not loaded, as before
            NodeRecord("m[01]", C, 1, output=encode(0)),
        ],
    )
    for state in (store.load("r"), store.load_statuses("r")):
        assert list(state.nodes) == ["src", "m", "m[0]", "m[1]"]
        assert state.nodes["m[1]"].deps == ("src",)
        assert state.nodes["m[0]"].status is F and state.nodes["m[0]"].attempts == 2
    assert store.load("r").nodes["m[1]"].output == "one"
