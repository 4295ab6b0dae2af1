"""``flowdag show``, ``status``, ``store verify`` and ``convert`` on runs whose values are
user types, from processes that never import the workflow file or the user's module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.forkserver import ForkServer, python_m

ROOT = Path(__file__).resolve().parents[1]

MODELS = """
import dataclasses, enum, os, pathlib
import attrs, pydantic

# Importing this module leaves a marker: the commands under test must not.
pathlib.Path(os.environ["MODELS_MARKER"]).write_text("imported")


@dataclasses.dataclass
class Point:
    x: int
    y: float


class Color(enum.Enum):
    RED = 1


@attrs.define
class Box:
    label: str
    items: list


class Item(pydantic.BaseModel):
    name: str
    price: float = 0.0
"""

WORKFLOW = """
import flowdag
from shopmodels import Box, Color, Item, Point

flowdag.register_types("shopmodels")
wf = flowdag.Workflow("shop")


@wf.node()
def point(ctx):
    ctx.data["color"] = Color.RED
    ctx.data["seen"] = {Color.RED}
    return Point(1, 2.5)


@wf.node(deps=["point"])
def box(point):
    return Box("b", [point, Item(name="pen"), (1, 2)])


@wf.node()
def big():
    return Box("big", [Point(i, 0.5) for i in range(100)])
"""


@pytest.mark.parametrize("kind", ["json", "lmdb", "flatbuffers"])
def test_commands_show_user_types_without_importing_them(
    kind: str, tmp_path: Path, fork_server: ForkServer
) -> None:
    def cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        # A real ``python -m flowdag`` process, forked from the fork server (which never
        # imports the user's module): its import would leave the marker all the same.
        return fork_server.run(python_m, "flowdag", str(cwd), env, *args, timeout=120)

    project = tmp_path / "project"
    project.mkdir()
    (project / "shopmodels.py").write_text(MODELS)
    (project / "wf.py").write_text(WORKFLOW)
    marker = tmp_path / "imported"
    # The module stays importable (its folder is on the path): only not importing it
    # keeps the marker away.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(project)]),
        "MODELS_MARKER": str(marker),
        "COLUMNS": "200",
    }
    store = f"{kind}://{tmp_path / 'store'}"
    done = cli("run", "wf.py", "--run-id", "r1", "--store", store, cwd=project, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert marker.exists()
    marker.unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    done = cli("show", "r1", "--store", store, cwd=elsewhere, env=env)
    assert done.returncode == 0, done.stderr
    assert "Point(x=1, y=2.5)" in done.stdout
    assert "'color': Color.RED" in done.stdout

    done = cli("show", "r1", "box", "--store", store, cwd=elsewhere, env=env)
    assert done.returncode == 0, done.stderr
    assert (
        "Box(label='b', items=[Point(x=1, y=2.5), Item(name='pen', price=0.0, "
        "_fields_set=['name']), (1, 2)])"
    ) in done.stdout

    # A large value is laid out one item per line and cut, with a note.
    done = cli("show", "r1", "big", "--store", store, cwd=elsewhere, env=env)
    assert done.returncode == 0, done.stderr
    assert "  Box(label='big',\n      items=[Point(x=0, y=0.5),\n" in done.stdout
    assert "... cut: 61 more of 101 lines; --json shows all" in done.stdout

    done = cli("status", "r1", "--store", store, "--json", "--outputs", cwd=elsewhere, env=env)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["nodes"]["point"]["output"] == {
        "$user": ["shopmodels:Point", {"x": 1, "y": 2.5}]
    }
    assert document["nodes"]["box"]["output"] == {
        "$user": [
            "shopmodels:Box",
            {
                "label": "b",
                "items": [
                    {"$user": ["shopmodels:Point", {"x": 1, "y": 2.5}]},
                    {
                        "$user": [
                            "shopmodels:Item",
                            {"name": "pen", "price": 0.0, "_fields_set": ["name"]},
                        ]
                    },
                    {"$tuple": [1, 2]},
                ],
            },
        ]
    }
    assert document["data"]["color"] == {"$user": ["shopmodels:Color", "RED"]}
    assert document["data"]["seen"] == {"$set": [{"$user": ["shopmodels:Color", "RED"]}]}

    done = cli("show", "r1", "box", "--store", store, "--json", cwd=elsewhere, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output"] == document["nodes"]["box"]["output"]

    # Checking and copying the store: as stored, not "damaged".
    done = cli("store", "verify", store, cwd=elsewhere, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "r1: ok" in done.stdout
    copy = f"json://{tmp_path / 'copy'}"
    done = cli("store", "convert", store, copy, cwd=elsewhere, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    done = cli("status", "r1", "--store", copy, "--json", "--outputs", cwd=elsewhere, env=env)
    assert json.loads(done.stdout)["nodes"] == document["nodes"]
    assert not marker.exists()

    # The copy is the same run: the workflow's own process reads the real types back.
    check = (
        "import flowdag, shopmodels; flowdag.register_types('shopmodels'); "
        f"s = flowdag.stores.open_store({copy!r}); o = s.load('r1').nodes['box'].output; "
        "assert type(o) is shopmodels.Box and type(o.items[1]) is shopmodels.Item, o; print('ok')"
    )
    done = subprocess.run(
        [sys.executable, "-c", check],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.strip() == "ok", done.stderr


def test_user_values_are_laid_out_like_dataclasses() -> None:
    from flowdag._usertypes import UserValue
    from flowdag.cli.pretty import pformat

    pair = UserValue("m:Pair", [list(range(4)), None])
    value = {"box": UserValue("m:Box", {"label": "b", "pair": pair, "c": UserValue("m:C", "RED")})}
    assert pformat(value, 80) == "{'box': Box(label='b', pair=Pair([0, 1, 2, 3], None), c=C.RED)}"
    assert pformat(value, 24) == (
        "{'box': Box(label='b',\n"
        "            pair=Pair([0,\n"
        "                       1,\n"
        "                       2,\n"
        "                       3],\n"
        "                      None),\n"
        "            c=C.RED)}"
    )
