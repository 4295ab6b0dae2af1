"""A purchase order that waits for a person's approval: it suspends, exits, and goes on later.

The graph::

    draft ─┬─ approval (input: waits for a person) ─┬─ send
           └─ reserve_budget ───────────────────────┘

- ``draft`` makes the order (lines, total); ``reserve_budget`` books its total
  against a cost centre and runs while the approval waits.
- ``approval`` is an *input node*: the run records a durable wait with a
  one-time key and a 48 hour deadline, and with nothing else to do it returns
  ``SUSPENDED``. The process exits; nothing waits in memory.
- Whoever holds the store and the key gives the answer, from any process; the
  value is checked against the approval's JSON Schema, stored with the wait.
- Run again, ``send`` writes the approved order to the outbox (or drops a
  rejected one). Unanswered by the deadline, the order is rejected by default.

Run it (the store defaults to LMDB in ``.flowdag``, the outbox to ``./po-outbox``)::

    python examples/purchase_order.py po-17       # drafts, suspends, prints the key
    flowdag provide KEY --json '{"approved": true, "by": "ana"}' --store lmdb://.flowdag
    python examples/purchase_order.py po-17       # continues: sends the order

The example prints the second command with its key, and the same in Python
(``flowdag.provide_input``). The schema is a JSON Schema dict, so nothing
beyond flowdag itself is needed; a pydantic model or a dataclass works the
same with ``pip install 'flowdag[schemas]'``.

Environment: ``PO_STORE`` (store URL), ``PO_OUTBOX`` (outbox directory).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import flowdag
from flowdag import RunStatus, Workflow

APPROVAL = {
    "type": "object",
    "properties": {
        "approved": {"type": "boolean"},
        "by": {"type": "string", "minLength": 1},
        "note": {"type": "string"},
    },
    "required": ["approved", "by"],
    "additionalProperties": False,
}
EXAMPLE_ANSWER = {"approved": True, "by": "ana"}

wf = Workflow("purchase_order")


@wf.node()
def draft() -> dict[str, Any]:
    """The order: what to buy from whom; its total in cents."""
    lines = [
        {"item": "laptop stand", "qty": 4, "cents": 3_950},
        {"item": "USB-C dock", "qty": 4, "cents": 18_900},
        {"item": "monitor 27in", "qty": 2, "cents": 27_450},
    ]
    total = sum(line["qty"] * line["cents"] for line in lines)
    return {"id": "PO-17", "supplier": "ACME Office", "lines": lines, "total_cents": total}


@wf.node(deps=["draft"])
def reserve_budget(draft: dict[str, Any]) -> dict[str, Any]:
    """Book the order's total against its cost centre (runs while the approval waits)."""
    return {"cost_centre": "CC-42", "reserved_cents": draft["total_cents"]}


@wf.input(
    deps=["draft"],
    schema=APPROVAL,
    timeout="48h",
    default={"approved": False, "by": "nobody: no answer by the deadline"},
)
def approval(draft: dict[str, Any]) -> dict[str, Any]:
    """What the approver sees (stored with the wait)."""
    total = draft["total_cents"] / 100
    return {
        "question": f"Send {draft['id']} to {draft['supplier']} for {total:,.2f} EUR?",
        "lines": [f"{line['qty']} x {line['item']}" for line in draft["lines"]],
    }


@wf.node(deps=["draft", "approval", "reserve_budget"])
def send(
    draft: dict[str, Any], approval: dict[str, Any], reserve_budget: dict[str, Any]
) -> dict[str, Any]:
    """Put the approved order in the outbox (rewritten whole: a second send changes nothing)."""
    if not approval["approved"]:
        return {"sent": False, "why": f"rejected by {approval['by']}"}
    outbox = Path(os.environ.get("PO_OUTBOX", "po-outbox"))
    outbox.mkdir(parents=True, exist_ok=True)
    path = outbox / f"{draft['id']}.json"
    order = {**draft, "approved_by": approval["by"], "cost_centre": reserve_budget["cost_centre"]}
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(order, indent=2))
    temporary.replace(path)
    return {"sent": True, "path": str(path)}


def main(argv: list[str]) -> int:
    run_id = argv[1] if len(argv) > 1 else "po-17"
    store = os.environ.get("PO_STORE", "lmdb://.flowdag")
    result = flowdag.run(wf, run_id=run_id, store=store)
    if result.status is RunStatus.SUSPENDED:
        wait = result.waits["approval"]
        due = "never" if wait.expires_at is None else f"{wait.expires_at:%Y-%m-%d %H:%M} UTC"
        print(f"{run_id}: waiting for approval: {wait.prompt['question']} (deadline {due})")
        if wait.key is None:  # shown once, by the run that started the wait
            print(
                f"the key was shown when the wait started; lost it? flowdag waits --reissue "
                f"{run_id} approval --store {store}"
            )
            return 0
        answer = json.dumps(EXAMPLE_ANSWER)
        print("give the answer with:")
        print(f"  flowdag provide {wait.key} --json '{answer}' --store {store}")
        print("or in Python:")
        print(f"  flowdag.provide_input({store!r}, {wait.key!r}, {EXAMPLE_ANSWER!r})")
        print(f"then run this again: python {argv[0]} {run_id}")
        return 0
    if not result.ok:
        for node, error in result.errors.items():
            print(f"{run_id}: {node} failed: {error}", file=sys.stderr)
        return 1
    sent = result.outputs["send"]
    if sent["sent"]:
        print(f"{run_id}: order sent: {sent['path']}")
    else:
        print(f"{run_id}: order not sent: {sent['why']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
