"""Change-aware resume, end to end: edit a project's files between runs, resume, ask why.

Each test writes a small workflow project to a temporary directory
(`tests.change_projects.Project`), runs it to completion in a fresh process,
edits the files as a user fixing code between a crash and a resume does, and
resumes the same run id in another fresh process. It then checks which nodes
ran (their attempts started) and the reason `RunResult.explain` gives for
each: ``code_changed`` naming the function, helper (and its file), global or
closure; ``input_changed`` naming the dep; ``reused``; ``new``.

Not tested here: a change of bytecode alone with the same normalised source
(what a new Python version does, reused with a note). One interpreter cannot
produce it from a file edit: any edit of the file that changes the bytecode
changes the normalised source too (or nothing at all).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.change_projects import Outcome, Project

DIAMOND = """
import flowdag

wf = flowdag.Workflow("diamond")


@wf.node
def source():
    return 10


@wf.node(deps=["source"])
def left(source):
    return source + 1


@wf.node(deps=["source"])
def right(source):
    return source * 2


@wf.node(deps=["left", "right"])
def joined(left, right):
    return [left, right]
"""

CHAIN = """
import flowdag

wf = flowdag.Workflow("chain")


@wf.node
def extract():
    return [1, 2, 3]


@wf.node(deps=["extract"])
def transform(extract):
    return [r * 2 for r in extract]


@wf.node(deps=["transform"])
def load(transform):
    return sum(transform)


wf.add_node("report", lambda load: f"total={load}", deps=["load"])
"""

ALL_CHAIN = ["extract", "transform", "load", "report"]
ALL_DIAMOND = ["source", "left", "right", "joined"]


def first_run(project: Project, nodes: list[str], **options: Any) -> Outcome:
    """Run the project's first version to completion: every node is new."""
    done = project.run(**options)
    assert done.status == "completed", done
    assert sorted(done.ran) == sorted(nodes), done
    assert {n: code for n, (code, _) in done.reasons.items()} == dict.fromkeys(nodes, "new"), done
    return done


def assert_reused(done: Outcome, *nodes: str) -> None:
    for node in nodes:
        assert node not in done.ran, done
        assert done.code(node) == "reused", done


def test_a_changed_body_runs_again_and_names_the_function(tmp_path: Path) -> None:
    project = Project(tmp_path, {"flow.py": CHAIN})
    first_run(project, ALL_CHAIN)
    project.edit("flow.py", "[r * 2 for r in extract]", "[r * 3 for r in extract]")
    project.edit("flow.py", 'f"total={load}"', 'f"sum={load}"')

    done = project.run()

    assert done.status == "completed"
    assert sorted(done.ran) == ["load", "report", "transform"], done
    assert done.code("transform") == "code_changed", done
    assert "transform" in done.detail("transform"), done
    assert done.code("report") == "code_changed", done  # a lambda's line changed
    assert done.code("load") == "input_changed", done
    assert "transform" in done.detail("load"), done
    assert_reused(done, "extract")
    assert done.outputs["report"] == "sum=18"


COSMETIC = '''
import flowdag

wf = flowdag.Workflow("cosmetic")


@wf.node
def extract():
    # the rows of the day
    return [1, 2, 3]


@wf.node(deps=["extract"])
def reworded(extract):
    """Sum the rows."""
    return sum(extract)


@wf.node(deps=["extract"])
def undocumented(extract):
    """Count the rows."""
    return len(extract)


@wf.node(deps=["extract"])
def documented(extract):
    return min(extract)


@wf.node(deps=["extract"])
def spaced(extract):
    return [r * 2 for r in extract if r > 1]


@wf.node(name="named", deps=["extract"])
def first_name(extract):
    return max(extract)


@wf.node(deps=["extract"])
def shifted(extract):
    return extract[::-1]
'''

#: node -> an edit of its code that changes nothing it computes.
COSMETIC_EDITS = {
    "extract": ("    # the rows of the day\n", "    # the rows of the day,\n    # reworded\n\n"),
    "reworded": ('    """Sum the rows."""', '    """Sum the rows\n\n    of the day."""'),
    "undocumented": ('    """Count the rows."""\n', ""),
    "documented": ("    return min(", '    """The smallest row."""\n    return min('),
    "spaced": (
        "    return [r * 2 for r in extract if r > 1]",
        "    return [\n        r*2\n        for r in extract\n        if r>1  # big\n    ]",
    ),
    "named": ("def first_name(extract):", "def second_name(extract):"),
    "shifted": ("import flowdag\n", "# a header comment\n\n\nimport flowdag\n"),
}


def test_edits_that_change_nothing_computed_run_nothing(tmp_path: Path) -> None:
    """A comment, a docstring reworded, removed or added, formatting, a rename, lines shifted."""
    project = Project(tmp_path, {"flow.py": COSMETIC})
    first_run(project, list(COSMETIC_EDITS))
    for old, new in COSMETIC_EDITS.values():
        project.edit("flow.py", old, new)

    done = project.run()

    assert done.status == "completed"
    wrong = {
        node: done.reasons[node]
        for node in COSMETIC_EDITS
        if node in done.ran
        or done.code(node) != "reused"
        or "bytecode" in done.detail(node)  # not a new Python either: nothing changed
    }
    assert not wrong, f"{wrong}\n{done}"


HELPERS = """
RATE = 3


def scrub(rows):
    return [r * RATE for r in rows if r is not None]


def label(rows):
    return f"{len(rows)} rows"


class Scaler:
    def __init__(self, k):
        self.k = k

    def apply(self, rows):
        return [r * self.k for r in rows if r]
"""

USES_HELPERS = """
import flowdag
import helpers
from helpers import scrub

wf = flowdag.Workflow("helpers")


@wf.node
def extract():
    return [1, None, 2]


@wf.node(deps=["extract"])
def cleaned(extract):
    return scrub(extract)


@wf.node(deps=["extract"])
def via_module(extract):
    return helpers.scrub(extract)[:1]


@wf.node(deps=["extract"])
def labelled(extract):
    return helpers.label(extract)


@wf.node(deps=["extract"])
def scaled(extract):
    return helpers.Scaler(2).apply(extract)


@wf.node(deps=["cleaned", "labelled"])
def report(cleaned, labelled):
    return f"{labelled}: {sum(cleaned)}"
"""


def test_a_changed_helper_in_another_module_runs_its_users_only(tmp_path: Path) -> None:
    project = Project(tmp_path, {"flow.py": USES_HELPERS, "helpers.py": HELPERS})
    first_run(project, ["extract", "cleaned", "via_module", "labelled", "scaled", "report"])
    project.edit("helpers.py", "[r * RATE for r", "[r * RATE + 1 for r")

    done = project.run()

    assert sorted(done.ran) == ["cleaned", "report", "via_module"], done
    for user in ("cleaned", "via_module"):  # imported by name, and read as helpers.scrub
        assert done.code(user) == "code_changed", done
        assert "scrub" in done.detail(user), done
        assert "helpers.py" in done.detail(user), done
        assert "label" not in done.detail(user), done
    assert done.code("report") == "input_changed", done
    assert "cleaned" in done.detail("report"), done
    assert_reused(done, "extract", "labelled", "scaled")
    assert done.outputs["report"] == "3 rows: 11"

    # A constant the helper reads is part of the helper's users too.
    project.edit("helpers.py", "RATE = 3", "RATE = 4")
    done = project.run()

    assert sorted(done.ran) == ["cleaned", "report", "via_module"], done
    for user in ("cleaned", "via_module"):
        assert done.code(user) == "code_changed", done
        assert "RATE" in done.detail(user), done
    assert_reused(done, "extract", "labelled", "scaled")

    # A method of a helper class.
    project.edit("helpers.py", "[r * self.k for r", "[r * self.k - 1 for r")
    done = project.run()

    assert done.ran == ["scaled"], done
    assert done.code("scaled") == "code_changed", done
    assert "Scaler" in done.detail("scaled") and "helpers.py" in done.detail("scaled"), done
    assert_reused(done, "extract", "cleaned", "via_module", "labelled", "report")
    assert done.outputs["scaled"] == [1, 3]


ATTRIBUTES = """
import flowdag
import etl.rules
import helpers

wf = flowdag.Workflow("attributes")


@wf.node
def extract():
    return [1, 2]


@wf.node(deps=["extract"])
def ruled(extract):
    return etl.rules.apply(extract)


@wf.node(deps=["extract"])
def rated(extract):
    return [r * helpers.RATE for r in extract]


@wf.node(deps=["extract"])
def plain(extract):
    return len(extract)
"""

RULES = """
def apply(rows):
    return [r + 1 for r in rows]
"""


def test_helpers_and_constants_read_as_module_attributes_count(tmp_path: Path) -> None:
    """``etl.rules.apply(...)`` (a module of a package) and ``helpers.RATE`` (a constant)."""
    files = {"flow.py": ATTRIBUTES, "etl/__init__.py": "", "etl/rules.py": RULES}
    project = Project(tmp_path, {**files, "helpers.py": HELPERS})
    first_run(project, ["extract", "ruled", "rated", "plain"])
    project.edit("etl/rules.py", "r + 1", "r + 2")
    project.edit("helpers.py", "RATE = 3", "RATE = 4")

    done = project.run()

    assert sorted(done.ran) == ["rated", "ruled"], done
    assert done.code("ruled") == "code_changed", done
    assert "apply" in done.detail("ruled") and "rules.py" in done.detail("ruled"), done
    assert done.code("rated") == "code_changed", done
    assert "RATE" in done.detail("rated"), done
    assert_reused(done, "extract", "plain")
    assert done.outputs["ruled"] == [3, 4] and done.outputs["rated"] == [4, 8]


VALUES = """
import flowdag

wf = flowdag.Workflow("values")
LIMIT = 2
SETTINGS = {"unit": "kg"}  # mutable: counts by its type only, with a warning


def make(k):
    def scaled(extract):
        return [r * k for r in extract]

    return scaled


@wf.node
def extract():
    return [5, 6, 7]


@wf.node(deps=["extract"])
def top(extract):
    return sorted(extract)[-LIMIT:]


@wf.node(deps=["extract"])
def count(extract):
    return len(extract)


@wf.node(deps=["extract"])
def labelled(extract):
    return f"{len(extract)} {SETTINGS['unit']}"


wf.add_node("scaled", make(2), deps=["extract"])
wf.add_node("fixed", make(10), deps=["extract"])
"""


def test_closure_values_and_module_constants_count_by_value(tmp_path: Path) -> None:
    project = Project(tmp_path, {"flow.py": VALUES})
    first = first_run(project, ["extract", "top", "count", "labelled", "scaled", "fixed"])
    said = [w for w in first.warnings if "SETTINGS" in w]
    assert len(said) == 1 and "dict" in said[0], first  # never a silent "unhashable"

    project.edit("flow.py", "make(2)", "make(3)")
    done = project.run()

    assert done.ran == ["scaled"], done
    assert done.code("scaled") == "code_changed", done
    assert "closure" in done.detail("scaled") or " k" in done.detail("scaled"), done
    assert_reused(done, "extract", "top", "count", "labelled", "fixed")
    assert done.outputs["scaled"] == [15, 18, 21]

    project.edit("flow.py", "LIMIT = 2", "LIMIT = 1")
    done = project.run()

    assert done.ran == ["top"], done
    assert done.code("top") == "code_changed", done
    assert "LIMIT" in done.detail("top"), done
    assert_reused(done, "extract", "count", "labelled", "scaled", "fixed")
    assert done.outputs["top"] == [7]


DEFAULTS = """
import flowdag

wf = flowdag.Workflow("defaults")
FACTORS = [("double", 2), ("triple", 3)]


@wf.node
def extract():
    return [1, 2]


for name, k in FACTORS:  # k=k: each lambda keeps its own k, as a default value
    wf.add_node(name, lambda extract, k=k: [r * k for r in extract], deps=["extract"])
"""


def test_default_argument_values_count_by_value(tmp_path: Path) -> None:
    """The idiom that binds a loop variable: only the default value differs."""
    project = Project(tmp_path, {"flow.py": DEFAULTS})
    first_run(project, ["extract", "double", "triple"])
    project.edit("flow.py", '("double", 2)', '("double", 5)')

    done = project.run()

    assert done.ran == ["double"], done
    assert done.code("double") == "code_changed", done
    assert_reused(done, "extract", "triple")
    assert done.outputs["double"] == [5, 10]


@pytest.mark.parametrize("store", ["lmdb", "json", "flatbuffers"])
def test_early_cutoff_on_a_diamond(tmp_path: Path, store: str) -> None:
    project = Project(tmp_path, {"flow.py": DIAMOND}, store=store)
    first_run(project, ALL_DIAMOND)

    # Same output, other code: left runs, joined keeps its output (early cutoff).
    project.edit("flow.py", "return source + 1", "return 1 + source")
    done = project.run()

    assert done.status == "completed"
    assert done.ran == ["left"], done
    assert done.code("left") == "code_changed", done
    assert "left" in done.detail("left"), done
    assert_reused(done, "source", "right", "joined")
    assert done.outputs["joined"] == [11, 20]

    # Another output: joined runs, for the dep that changed.
    project.edit("flow.py", "return 1 + source", "return source + 2")
    done = project.run()

    assert sorted(done.ran) == ["joined", "left"], done
    assert done.code("joined") == "input_changed", done
    assert "left" in done.detail("joined"), done
    assert "right" not in done.detail("joined"), done
    assert_reused(done, "source", "right")
    assert done.outputs["joined"] == [12, 20]

    if store == "lmdb":  # nothing edited since: everything holds (one store is enough)
        done = project.run()
        assert done.ran == [], done
        assert_reused(done, *ALL_DIAMOND)


def test_on_code_change_ignore_runs_nothing_and_rerun_still_sees_the_change(
    tmp_path: Path,
) -> None:
    project = Project(tmp_path, {"flow.py": DIAMOND})
    first_run(project, ALL_DIAMOND)
    project.edit("flow.py", "return source + 1", "return source + 5")

    done = project.run(on_code_change="ignore")

    assert done.ran == [], done
    assert_reused(done, *ALL_DIAMOND)
    assert done.outputs["joined"] == [11, 20]
    assert not [w for w in done.warnings if "left" in w], done

    done = project.run()  # the default, "rerun": the change is still there to see

    assert sorted(done.ran) == ["joined", "left"], done
    assert done.code("left") == "code_changed", done
    assert done.outputs["joined"] == [15, 20]


def test_on_code_change_warn_runs_nothing_and_warns_naming_the_node(tmp_path: Path) -> None:
    project = Project(tmp_path, {"flow.py": DIAMOND})
    first_run(project, ALL_DIAMOND)
    project.edit("flow.py", "return source + 1", "return source + 5")

    done = project.run(on_code_change="warn")

    assert done.ran == [], done
    assert_reused(done, *ALL_DIAMOND)
    assert done.outputs["joined"] == [11, 20]
    said = done.warnings + done.stderr.splitlines()
    assert [w for w in said if "left" in w], done
    assert not [w for w in said if "right" in w or "joined" in w], done


VERSIONED = """
import flowdag

wf = flowdag.Workflow("versioned")


@wf.node
def extract():
    return [1, 2]


@wf.node(deps=["extract"], version=1)
def transform(extract):
    return [r + 1 for r in extract]


@wf.node(deps=["transform"])
def load(transform):
    return len(transform)
"""


def test_a_version_bump_runs_the_node_again(tmp_path: Path) -> None:
    project = Project(tmp_path, {"flow.py": VERSIONED})
    first_run(project, ["extract", "transform", "load"])
    project.edit("flow.py", "version=1", 'version="2"')

    done = project.run()

    assert done.ran == ["transform"], done  # same output: load keeps its own
    assert done.code("transform") == "code_changed", done
    assert "version" in done.detail("transform"), done
    assert_reused(done, "extract", "load")


GENERATED = """
import flowdag

wf = flowdag.Workflow("generated")
BODY = "def made(extract):\\n    return sum(extract) + 1\\n"
space = {}
exec(compile(BODY, "<generated>", "exec"), space)


@wf.node
def extract():
    return [1, 2]


wf.add_node("made", space["made"], deps=["extract"])
"""


def test_a_function_without_source_is_known_by_its_bytecode(tmp_path: Path) -> None:
    project = Project(tmp_path, {"flow.py": GENERATED})
    first_run(project, ["extract", "made"])
    project.edit("flow.py", "sum(extract) + 1", "sum(extract) + 2")

    done = project.run()

    assert done.ran == ["made"], done
    assert done.code("made") == "code_changed", done
    assert done.outputs["made"] == 5


def test_a_fixed_failure_runs_as_new_with_its_skipped_dependents(tmp_path: Path) -> None:
    broken = CHAIN.replace("return [r * 2 for r in extract]", "raise RuntimeError('bad rows')")
    project = Project(tmp_path, {"flow.py": broken})
    done = project.run()
    assert done.status == "failed"
    assert done.statuses == {
        "extract": "completed",
        "transform": "failed",
        "load": "skipped",
        "report": "skipped",
    }, done
    project.write("flow.py", CHAIN)

    done = project.run()

    assert done.status == "completed"
    assert sorted(done.ran) == ["load", "report", "transform"], done
    assert done.code("transform") == "new", done
    assert "fail" in done.detail("transform"), done
    assert done.code("load") == "new", done
    assert "skip" in done.detail("load"), done
    assert_reused(done, "extract")


def test_on_code_change_of_a_node_overrides_the_run(tmp_path: Path) -> None:
    flow = DIAMOND.replace(
        '@wf.node(deps=["source"])\ndef left',
        '@wf.node(deps=["source"], on_code_change="ignore")\ndef left',
    )
    project = Project(tmp_path, {"flow.py": flow})
    first_run(project, ALL_DIAMOND)
    project.edit("flow.py", "return source + 1", "return source + 5")
    project.edit("flow.py", "return source * 2", "return source * 3")

    done = project.run()  # on_code_change="rerun", but not for left

    assert sorted(done.ran) == ["joined", "right"], done
    assert done.code("right") == "code_changed", done
    assert done.code("joined") == "input_changed", done
    assert "right" in done.detail("joined"), done
    assert_reused(done, "source", "left")
    assert done.outputs["joined"] == [11, 30]


def test_rerun_from_runs_the_node_and_its_descendants_whatever_their_outputs(
    tmp_path: Path,
) -> None:
    project = Project(tmp_path, {"flow.py": DIAMOND})
    first_run(project, ALL_DIAMOND)

    done = project.run(rerun_from=["left"])  # nothing edited

    assert sorted(done.ran) == ["joined", "left"], done  # no early cutoff for what was asked
    assert done.code("left") == "forced" and done.code("joined") == "forced", done
    assert "left" in done.detail("left") and "left" in done.detail("joined"), done
    assert_reused(done, "source", "right")


def test_rerun_failed_runs_failed_and_skipped_nodes_and_keeps_edited_completed_ones(
    tmp_path: Path,
) -> None:
    broken = CHAIN.replace("return [r * 2 for r in extract]", "raise RuntimeError('bad rows')")
    project = Project(tmp_path, {"flow.py": broken})
    assert project.run().status == "failed"
    project.write("flow.py", CHAIN.replace("return [1, 2, 3]", "return [1, 2, 3, 4]"))

    done = project.run(rerun="failed")

    assert done.status == "completed"
    assert sorted(done.ran) == ["load", "report", "transform"], done
    for node in ("transform", "load", "report"):
        assert done.code(node) == "forced", done
    assert_reused(done, "extract")  # its code changed, but rerun="failed" keeps it
    assert done.outputs["load"] == 12


def test_the_command_line_plans_runs_and_explains_an_early_cutoff(tmp_path: Path) -> None:
    """``flowdag explain --plan``, ``flowdag run``, ``flowdag explain``, on the stored run;
    then ``flowdag run --rerun-from``."""
    project = Project(tmp_path, {"flow.py": DIAMOND})

    def explained(*args: str) -> dict[str, dict[str, Any]]:
        return {row["node"]: row for row in project.cli_json("explain", *args)["nodes"]}

    project.cli("run", "flow.py", "--run-id", "r1")
    before = explained("r1")
    assert {n: row["code"] for n, row in before.items()} == dict.fromkeys(ALL_DIAMOND, "new")
    project.edit("flow.py", "return source + 1", "return 1 + source")

    plan = explained("--plan", "flow.py", "--run-id", "r1")
    assert {n: (row["action"], row["code"]) for n, row in plan.items()} == {
        "source": ("reuse", "reused"),
        "left": ("run", "code_changed"),
        "right": ("reuse", "reused"),
        "joined": ("provisional", "reused"),
    }, plan
    assert "left" in plan["left"]["detail"], plan
    project.cli("run", "flow.py", "--run-id", "r1")
    after = explained("r1")

    assert after["left"]["code"] == "code_changed", after
    assert "left" in after["left"]["detail"], after
    assert after["left"]["finished_at"] != before["left"]["finished_at"], after
    for node in ("source", "right", "joined"):  # cut off: not run, its record untouched
        assert after[node] == before[node], after

    project.cli("run", "flow.py", "--run-id", "r1", "--rerun-from", "left")
    forced = explained("r1")

    assert {n: forced[n]["code"] for n in ("left", "joined")} == dict.fromkeys(
        ("left", "joined"), "forced"
    ), forced
    assert forced["source"] == after["source"] and forced["right"] == after["right"], forced


BIG_LEFT = DIAMOND.replace("return source + 1", "return [source + 1] * 500")


@pytest.mark.parametrize(
    ("executor", "inline_limit"),
    [("threads", 64), ("processes", "256KiB")],
    ids=["outputs by reference", "processes"],
)
def test_early_cutoff_with_outputs_by_reference_and_in_processes(
    tmp_path: Path, executor: str, inline_limit: object
) -> None:
    """Output digests compare the same when outputs are refs, or made in worker processes."""
    options = {"executor": executor, "inline_limit": inline_limit}
    project = Project(tmp_path, {"flow.py": BIG_LEFT})
    first = first_run(project, ALL_DIAMOND, **options)
    assert first.refs == (["joined", "left"] if inline_limit == 64 else []), first
    project.edit("flow.py", "return [source + 1] * 500", "return [1 + source] * 500")

    done = project.run(**options)

    assert done.ran == ["left"], done
    assert done.code("left") == "code_changed", done
    assert_reused(done, "source", "right", "joined")
    assert done.outputs["joined"] == [[11] * 500, 20]

    project.edit("flow.py", "return [1 + source] * 500", "return [2 + source] * 500")
    done = project.run(**options)

    assert sorted(done.ran) == ["joined", "left"], done
    assert done.code("joined") == "input_changed", done
    assert done.outputs["joined"] == [[12] * 500, 20]


@pytest.mark.parametrize("limits", [(None, 64), (64, None)], ids=["to a ref", "back inline"])
def test_early_cutoff_holds_when_an_output_moves_between_inline_and_a_ref(
    tmp_path: Path, limits: tuple[int | None, int | None]
) -> None:
    """The same output is the same input, whether the store keeps it inline or as a blob."""
    before, after = limits
    project = Project(tmp_path, {"flow.py": BIG_LEFT})
    first_run(project, ALL_DIAMOND, inline_limit=before)
    project.edit("flow.py", "return [source + 1] * 500", "return [1 + source] * 500")

    done = project.run(inline_limit=after)

    assert ("left" in done.refs) == (after is not None), done
    assert done.ran == ["left"], done
    assert_reused(done, "source", "right", "joined")


@pytest.mark.parametrize("kind", ["flatbuffers", "json"])
def test_a_converted_run_resumes_with_early_cutoff_within_its_codec(
    tmp_path: Path, kind: str
) -> None:
    """`flowdag store convert` keeps a run resumable. Digests are taken from the
    store's encoding: to a store of the same codec (LMDB -> FlatBuffers, both
    msgpack) equal outputs still compare equal; to another (JSON) the copy keeps
    the digests it had, so a node that runs again compares as changed and the
    nodes below it run too: more work, never a stale output (README, "Code changes")."""
    project = Project(tmp_path, {"flow.py": DIAMOND})  # LMDB first
    first_run(project, ALL_DIAMOND)
    converted = f"{kind}://{tmp_path / 'converted'}"
    project.cli("store", "convert", "--run-id", "r1", project.store_url, converted, store=False)
    project.store_url = converted
    project.edit("flow.py", "return source + 1", "return 1 + source")

    done = project.run()

    if kind == "flatbuffers":
        assert done.ran == ["left"], done
        assert_reused(done, "source", "right", "joined")
    else:
        assert done.ran == ["left", "joined"], done
        assert done.code("joined") == "input_changed", done
        assert_reused(done, "source", "right")


KILLED_LEFT = """
    if os.path.exists("kill"):  # holds the store's URL
        if open("kill").read():  # wait for the start record that makes left "running"
            with open_store(open("kill").read(), create=False) as store:
                for _ in range(2000):
                    if store.load_statuses("r1").nodes["left"].status == "running":
                        break
                    time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGKILL)
    return 1 + source
"""


@pytest.mark.parametrize("started", [False, True], ids=["at once", "once stored as running"])
def test_a_kill_while_a_node_reruns_keeps_its_dependents_for_the_cutoff(
    tmp_path: Path, started: bool
) -> None:
    project = Project(tmp_path, {"flow.py": DIAMOND}, store="json")  # read while it runs
    first_run(project, ALL_DIAMOND)
    project.edit(
        "flow.py",
        "import flowdag\n",
        "import os\nimport signal\nimport time\n\nimport flowdag\n"
        "from flowdag.stores import open_store\n",
    )
    project.edit("flow.py", "    return source + 1\n", KILLED_LEFT[1:])
    (project.folder / "kill").write_text(project.store_url if started else "")
    project.crash()  # left is killed while it runs again; joined waits on its output
    (project.folder / "kill").unlink()

    done = project.run()

    assert done.ran == ["left"], done
    if started:
        assert done.code("left") == "interrupted", done
    else:  # its completed record may still be the stored one: then its code changed
        assert done.code("left") in ("interrupted", "code_changed"), done
    assert_reused(done, "source", "right", "joined")
    assert done.outputs["joined"] == [11, 20]


def test_allow_changes_runs_a_new_node_alone_and_a_rewired_one(tmp_path: Path) -> None:
    project = Project(tmp_path, {"flow.py": DIAMOND})
    first_run(project, ALL_DIAMOND)
    project.write(
        "flow.py",
        DIAMOND + '\n\n@wf.node(deps=["joined"])\ndef extra(joined):\n    return len(joined)\n',
    )

    done = project.run(allow_changes=True)

    assert done.ran == ["extra"], done
    assert done.code("extra") == "new", done
    assert_reused(done, *ALL_DIAMOND)
    assert done.outputs["extra"] == 2

    # joined loses a dep: it runs, for its dependencies. extra below it reads an equal
    # output: today's allow_changes rules run it again (naming joined), a cutoff may keep it.
    project.edit(
        "flow.py",
        '@wf.node(deps=["left", "right"])\ndef joined(left, right):',
        '@wf.node(deps=["left"])\ndef joined(left, right=0):',
    )
    done = project.run(allow_changes=True)

    assert done.ran in (["joined"], ["joined", "extra"]), done
    assert "depend" in done.detail("joined"), done
    if "extra" in done.ran:
        assert done.code("extra") == "input_changed" and "joined" in done.detail("extra"), done
    assert_reused(done, "source", "left", "right")
    assert done.outputs["joined"] == [11, 0]
