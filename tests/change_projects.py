"""Small workflow projects written to a temporary directory, edited between runs.

A `Project` is a folder of Python files (a workflow module ``flow.py`` defining
``wf`` and the helper modules it imports) and a disk store beside it. Each
`Project.run` is one new ``python`` process (forked from the fork server,
tests/forkserver.py, which imported flowdag but never a project's files), so every
run imports the edited files anew, as a user's resume after an edit does: no module,
function or fingerprint survives from one run to the next. The process prints one line of
JSON: the run's status, the nodes whose attempts started, each node's reason
(`RunResult.explain`), its outputs, the warnings it raised or logged, and the
plan made before the run (as ``flowdag explain --plan`` makes it), which
`check_plan` holds to what the run then did.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.forkserver import python_c, python_m, shared

ROOT = Path(__file__).resolve().parents[1]
MARK = "@@outcome "

# Runs in the new process: argv = project dir, store URL, run id, run() options as JSON.
# It first plans the run as `flowdag explain --plan` does (reading the store only), then runs it.
_RUNNER = f"""
import json, logging, sys, warnings

project, url, run_id, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
sys.path.insert(0, project)
import flowdag
import flow
from flowdag._fingerprint import node_fingerprints
from flowdag.resume import plan_call
from flowdag.stores import open_store

said = []


class Keep(logging.Handler):
    def emit(self, record):
        said.append(record.getMessage())


logging.getLogger().addHandler(Keep())
logging.getLogger().setLevel(logging.WARNING)
started = []


def on_event(event):
    if event.kind == "node_started":
        started.append(event.node)


with open_store(url) as store, warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    dag = flow.wf.build()
    stored = store.load(run_id) if run_id in store.list_runs() else None
    plan = plan_call(
        dag,
        stored,
        run_id,
        allow_changes=options.get("allow_changes", False),
        on_code_change=options.get("on_code_change", "rerun"),
        rerun=options.get("rerun"),
        rerun_from=options.get("rerun_from", ()),
        fingerprints=node_fingerprints(dag),
    )
    verdicts = {{
        n: [v.action, v.reason.code, v.reason.detail] for n, v in plan.verdicts.items()
    }}
    result = flowdag.run(dag, run_id=run_id, store=store, on_event=on_event, **options)
    reasons = {{n: [r.code, r.detail] for n, r in result.explain().items()}}
    outputs = dict(result.outputs)  # read while the store is open
    refs = sorted(result.refs)
said += [str(w.message) for w in caught]
print({MARK!r} + json.dumps({{
    "status": str(result.status),
    "ran": started,
    "reasons": reasons,
    "plan": verdicts,
    "statuses": {{n: str(s) for n, s in result.node_status.items()}},
    "outputs": outputs,
    "refs": refs,
    "warnings": said,
}}, default=repr))
"""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one run of a project did, as its process reported it."""

    status: str
    ran: list[str]  # nodes whose attempt started, in order
    reasons: dict[str, tuple[str, str]]  # node -> (reason code, detail)
    plan: dict[str, tuple[str, str, str]]  # node -> (action, reason code, detail) planned
    statuses: dict[str, str]
    outputs: dict[str, Any]
    refs: list[str]  # nodes whose outputs are kept by reference
    warnings: list[str]  # warnings raised and log records of level WARNING and up
    stderr: str

    def code(self, node: str) -> str:
        return self.reasons[node][0]

    def detail(self, node: str) -> str:
        return self.reasons[node][1]


class Project:
    """A workflow project in ``root/project`` with its store in ``root/store``.

    Args:
        root: an empty directory of the test's own.
        files: file name -> source (dedented), e.g. ``{"flow.py": ..., "helpers.py": ...}``.
        store: the store's kind: ``"lmdb"``, ``"json"`` or ``"flatbuffers"``.
    """

    def __init__(self, root: Path, files: dict[str, str], store: str = "lmdb") -> None:
        self.folder = root / "project"
        self.folder.mkdir(parents=True)
        self.store_url = f"{store}://{root / 'store'}"
        for name, text in files.items():
            self.write(name, text)

    def write(self, name: str, text: str) -> None:
        """Write file ``name`` (a path under the project, such as ``etl/rules.py``)."""
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))

    def read(self, name: str) -> str:
        return (self.folder / name).read_text()

    def edit(self, name: str, old: str, new: str) -> None:
        """Replace the one occurrence of ``old`` in file ``name`` by ``new``."""
        text = self.read(name)
        assert text.count(old) == 1, f"{old!r} is not in {name} exactly once:\n{text}"
        (self.folder / name).write_text(text.replace(old, new))

    def cli(self, *args: str, store: bool = True) -> str:
        """Run ``flowdag ARGS [--store URL]`` in a new process, which must succeed; its stdout."""
        where = ["--store", self.store_url] if store else []
        folder = str(self.folder)
        done = shared().run(python_m, "flowdag", folder, _environment(), *args, *where, timeout=120)
        assert done.returncode == 0, f"flowdag {' '.join(args)}: exit {done.returncode}\n{done}"
        return done.stdout

    def cli_json(self, *args: str) -> dict[str, Any]:
        """``flowdag ARGS --store URL --json``: the document it prints."""
        found: dict[str, Any] = json.loads(self.cli(*args, "--json"))
        return found

    def run(self, run_id: str = "r1", **options: Any) -> Outcome:
        """Run (or resume) ``run_id`` in a new process; ``options`` go to `flowdag.run`."""
        done = self._process(run_id, options)
        lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
        assert done.returncode == 0 and lines, (
            f"run {run_id} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
        found = json.loads(lines[-1][len(MARK) :])
        reasons = {n: (code, detail) for n, (code, detail) in found.pop("reasons").items()}
        plan = {n: (act, code, why) for n, (act, code, why) in found.pop("plan").items()}
        outcome = Outcome(reasons=reasons, plan=plan, stderr=done.stderr, **found)
        check_plan(outcome)
        return outcome

    def crash(self, run_id: str = "r1", **options: Any) -> None:
        """Run ``run_id`` in a new process that a node kills (SIGKILL) before it ends."""
        done = self._process(run_id, options)
        assert done.returncode == -signal.SIGKILL, (
            f"run {run_id} was not killed: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        )

    def _process(self, run_id: str, options: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        folder = str(self.folder)
        argv = (folder, self.store_url, run_id, json.dumps(options))
        return shared().run(python_c, _RUNNER, folder, _environment(), *argv, timeout=120)


def _environment() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        # An edit within the same second and of the same size would reuse a stale .pyc.
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def check_plan(outcome: Outcome) -> None:
    """The plan made before the run agrees with what the run did, node by node.

    ``run``: the node ran (unless an upstream failure skipped it), for the reason
    planned (code and detail); ``reuse``: it did not run, for the reason planned;
    ``provisional``: it ran iff one of its inputs came back changed (``input_changed``),
    and was not skipped for a failed dep.
    """
    assert outcome.plan.keys() == outcome.reasons.keys(), outcome
    for name, (action, code, detail) in outcome.plan.items():
        ran, (now, why) = name in outcome.ran, outcome.reasons[name]
        said = f"{name}: planned {action} ({code}), then {now}; ran: {ran}\n{outcome}"
        skipped = outcome.statuses[name] == "skipped"
        if action == "run":
            assert ran or skipped, said
            assert skipped or (now, why) == (code, detail), said
        elif action == "reuse":
            assert not ran and (now, why) == (code, detail), said
        else:
            assert action == "provisional", said
            assert ran == (not skipped and now == "input_changed"), said
