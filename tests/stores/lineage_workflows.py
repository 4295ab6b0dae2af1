"""Two workflows sharing the run id ``daily``, run in a subprocess by ``test_lineage.py``.

Usage: ``python lineage_workflows.py URL KEY WORKFLOW [MARKER]``: run workflow
``A`` or ``B`` as run ``daily`` in the store at URL (KEY "-" for none). With
MARKER, B's first node writes that file and sleeps: the test kills it there.
Prints the run's final output (of ``report``) or the error's type and message.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import flowdag


def workflow_a() -> flowdag.Workflow:
    wf = flowdag.Workflow("old")

    @wf.node()
    def fetch() -> str:
        return "OLD-DATA-from-old.py"

    @wf.node(deps=["fetch"])
    def report(fetch: str) -> str:
        raise RuntimeError("A stops partway")

    return wf


def workflow_b(marker: str | None) -> flowdag.Workflow:
    wf = flowdag.Workflow("new")

    @wf.node()
    def fetch() -> str:
        if marker is not None:
            Path(marker).write_text("in fetch")
            time.sleep(60)  # killed here
        return "NEW-DATA-from-new.py"

    @wf.node(deps=["fetch"])
    def report(fetch: str) -> str:
        return fetch

    return wf


def main(url: str, key: str, which: str, marker: str | None = None) -> None:
    wf = workflow_a() if which == "A" else workflow_b(marker)
    options = {} if key == "-" else {"key": key}
    try:
        with flowdag.open_store(url, **options) as store:
            result = flowdag.run(wf, run_id="daily", store=store)
    except flowdag.FlowdagError as exc:
        print(f"{type(exc).__name__}: {exc}")
        return
    print(f"OUTPUT: {result.outputs.get('report')!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
