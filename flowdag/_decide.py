"""Why each node runs or is reused on a resume: verdicts from the stored run. Pure.

Design
------
`decide` gives every node of a DAG a `Verdict` before anything runs, from
what the store holds (each completed node's `Provenance`: the fingerprint of
the code it ran, the digest of its output, the digest of each input it read)
and the fingerprints of the code about to run:

- a node without a completed output runs (``new``, ``interrupted``, or
  ``forced`` when the caller asked for it);
- a node completed by ``mark_done`` is pinned (``manual``);
- a completed node whose code changed runs (``code_changed``, naming the
  parts), unless its ``on_code_change`` is ``"warn"`` or ``"ignore"``, or only
  its bytecode changed with the same normalised source (a new Python);
- a completed node whose dep now holds another output than the one it read
  runs (``input_changed``, naming the dep);
- a completed node with a dep that runs is *provisional*: whether it runs
  depends on that dep's new output, known only at run time. `resolve` decides
  it once its deps have completed: if every input digest equals the one it
  read, its stored output still holds and it is reused (*early cutoff*);
- anything else is reused.

Verdicts are computed in topological order, so "a dep that runs" includes
provisional deps: a chain of provisional nodes is resolved one by one as the
run reaches them. A record without provenance (stored by an earlier release)
has nothing to compare: its code and inputs count as unchanged, unless a dep
runs again, when it runs too (nothing tells its old input from the new).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from flowdag._fingerprint import Fingerprint
from flowdag.dag import DAG
from flowdag.state import NodeState, NodeStatus, Reason, RunState

__all__ = ["ON_CODE_CHANGE", "UNCHANGED", "Verdict", "decide", "resolve"]

#: What ``on_code_change`` may say: run the node again, keep it with a warning, keep it.
ON_CODE_CHANGE = ("rerun", "warn", "ignore")

Action = Literal["run", "reuse", "provisional"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What happens to one node: it runs, is reused, or waits for its deps' new outputs.

    ``reason`` says why; for a provisional node, why it would be reused.
    ``warning`` is what to log (a code change kept by ``on_code_change="warn"``).
    """

    action: Action
    reason: Reason
    warning: str | None = None


#: The verdict of an unchanged completed node: one object, told by identity (`flowdag._seal`).
UNCHANGED = Verdict("reuse", Reason("reused", "its code and inputs are unchanged"))


def decide(
    dag: DAG,
    state: RunState,
    fingerprints: Mapping[str, Fingerprint],
    *,
    on_code_change: Mapping[str, str] | None = None,
    rerun: str | None = None,
    rerun_from: Collection[str] = (),
    structural: Mapping[str, Reason] | None = None,
    names: Iterable[str] | None = None,
) -> dict[str, Verdict]:
    """The verdict of every node of ``dag`` resumed from ``state`` (see the module docstring).

    Args:
        dag: the DAG about to run; ``state`` holds a node for each of its nodes.
        state: the stored run, its structural changes already applied.
        fingerprints: node -> the fingerprint of the code about to run.
        on_code_change: node -> ``"rerun"``, ``"warn"`` or ``"ignore"`` (missing: ``"rerun"``).
        rerun: ``"failed"``: failed and skipped nodes run as asked (``forced``),
            completed nodes keep their output whatever their code.
        rerun_from: these nodes and their descendants run (``forced``).
        structural: node -> why it runs because the DAG's shape changed.
        names: the nodes to decide, in topological order, each with its deps
            (default: all of ``dag``'s).
    """
    modes = on_code_change or {}
    shaped = structural or {}
    forced = _with_descendants(dag, rerun_from)
    verdicts: dict[str, Verdict] = {}
    nodes = state.nodes
    completed = NodeStatus.COMPLETED
    for name in dag.nodes if names is None else names:
        node = nodes[name]
        if shaped and name in shaped:
            verdict = Verdict("run", shaped[name])
        elif forced and name in forced:
            verdict = Verdict("run", _forced_from(name, rerun_from))
        elif node.status is not completed:
            verdict = Verdict("run", _unfinished(node, rerun))
        elif (
            # The usual node of a resume, decided here: same code, inputs as read.
            rerun is None
            and (provenance := node.provenance) is not None
            and (fingerprint := fingerprints.get(name)) is not None
            and provenance.fingerprint == fingerprint.digest
            and not provenance.manual
            and _same_inputs(node.deps, provenance.inputs, verdicts, nodes)
        ):
            verdict = UNCHANGED
        else:
            verdict = _completed(
                dag,
                name,
                node,
                state,
                fingerprints.get(name),
                modes.get(name, "rerun"),
                rerun,
                verdicts,
            )
        verdicts[name] = verdict
    return verdicts


def _same_inputs(
    deps: tuple[str, ...],
    recorded: Mapping[str, str],
    verdicts: Mapping[str, Verdict],
    nodes: Mapping[str, NodeState],
) -> bool:
    """Whether every dep is reused and holds the output the node read (as `_completed`)."""
    for dep in deps:
        verdict = verdicts[dep]
        if verdict is not UNCHANGED and verdict.action != "reuse":
            return False
        read = recorded.get(dep)
        if read is not None:
            now = nodes[dep].output_digest
            if now is not None and now != read:
                return False
    return True


def resolve(name: str, node: NodeState, digests: Mapping[str, str | None]) -> Verdict:
    """Run or reuse provisional ``name``, now that its deps have completed.

    ``node`` is its stored state; ``digests`` maps each dep to the digest of
    its output now (None: unknown). Reused only if every input is the one it read.
    """
    recorded = node.provenance.inputs if node.provenance is not None else {}
    for dep in node.deps:
        now, before = digests.get(dep), recorded.get(dep)
        if before is None or now is None:
            return Verdict(
                "run",
                Reason(
                    "input_changed",
                    f"'{dep}' ran again, and no digest of the output '{name}' read from it "
                    "is recorded to compare with",
                ),
            )
        if now != before:
            return Verdict(
                "run", Reason("input_changed", f"'{dep}' ran again and its output changed")
            )
    return Verdict(
        "reuse",
        Reason("reused", "its inputs ran again and came back unchanged (early cutoff)"),
    )


# -- one completed node --------------------------------------------------------------


def _completed(
    dag: DAG,
    name: str,
    node: NodeState,
    state: RunState,
    fingerprint: Fingerprint | None,
    mode: str,
    rerun: str | None,
    verdicts: Mapping[str, Verdict],
) -> Verdict:
    provenance = node.provenance
    if provenance is not None and provenance.manual:
        detail = provenance.reason.detail if provenance.reason is not None else "marked done"
        return Verdict("reuse", Reason("manual", detail))
    note = ""
    warning = None
    before = provenance.fingerprint if provenance is not None else None
    if rerun != "failed" and fingerprint is not None and before not in (None, fingerprint.digest):
        assert provenance is not None
        if fingerprint.source_digest == provenance.source:
            note = (
                "; its bytecode differs but its normalised source does not (a docstring "
                "edit, or a new Python version), so it was kept"
            )
        else:
            what = _changed_parts(dag, name, fingerprint, provenance.parts)
            if mode == "rerun":
                return Verdict("run", Reason("code_changed", f"code changed: {what}"))
            note = f"; its code changed ({what}) but on_code_change={mode!r} keeps its output"
            if mode == "warn":
                warning = (
                    f"node '{name}': code changed ({what}); its stored output is kept "
                    "(on_code_change='warn'); run with on_code_change='rerun' to recompute it"
                )
    elif rerun == "failed":
        note = "; rerun='failed' keeps completed nodes"
    rerunning = []
    recorded = provenance.inputs if provenance is not None else {}
    for dep in node.deps:
        if verdicts[dep].action != "reuse":
            rerunning.append(dep)
            continue
        now = state.nodes[dep].output_digest
        read = recorded.get(dep)
        if now is not None and read is not None and now != read:
            return Verdict(
                "run",
                Reason(
                    "input_changed",
                    f"'{dep}' holds another output than the one it read"
                    f"{_why_changed(state.nodes[dep])}",
                ),
            )
    if rerunning:
        shown = ", ".join(f"'{dep}'" for dep in rerunning[:3])
        return Verdict(
            "provisional",
            Reason("reused", f"{shown} run again; kept if their outputs come back unchanged{note}"),
            warning,
        )
    if not note and warning is None:
        return UNCHANGED  # the usual verdict on a resume: one object for every node
    return Verdict("reuse", Reason("reused", f"its code and inputs are unchanged{note}"), warning)


def _unfinished(node: NodeState, rerun: str | None) -> Reason:
    status = node.status
    provenance = node.provenance
    if status is NodeStatus.RUNNING:
        return Reason(
            "interrupted",
            f"attempt {node.attempts} was in flight when the run stopped (a crash or a kill)",
        )
    if status in (NodeStatus.FAILED, NodeStatus.SKIPPED):
        last = f"it failed ({node.error})" if status is NodeStatus.FAILED else "it was skipped"
        if rerun == "failed":
            return Reason("forced", f"rerun='failed': {last} in an earlier call")
        return Reason("new", f"{last} in an earlier call; a resume runs it again")
    reason = provenance.reason if provenance is not None else None
    if reason is not None and reason.code == "forced":  # invalidated by an operator
        return reason
    if node.attempts == 0:
        return Reason("new", "it never ran")
    return Reason("new", "it has no completed output")


def _forced_from(name: str, rerun_from: Collection[str]) -> Reason:
    if name in rerun_from:
        return Reason("forced", f"rerun_from names '{name}'")
    starts = ", ".join(f"'{n}'" for n in sorted(rerun_from)[:3])
    return Reason("forced", f"it is downstream of {starts} (rerun_from)")


def _with_descendants(dag: DAG, names: Collection[str]) -> set[str]:
    found = set(names)
    stack = list(found)
    while stack:  # a walk down the dependents: no networkx graph to make
        for dependent in dag.dependents(stack.pop()):
            if dependent not in found:
                found.add(dependent)
                stack.append(dependent)
    return found


def _why_changed(dep: NodeState) -> str:
    provenance = dep.provenance
    if provenance is not None and provenance.manual:
        return " (marked done by an operator)"
    return ""


# -- naming a change --------------------------------------------------------------------


def _changed_parts(dag: DAG, name: str, now: Fingerprint, before: Mapping[str, str]) -> str:
    """The changed parts of a node's code, as a phrase: "helper clean (etl/helpers.py), ..."."""
    changed = now.changed_parts(Fingerprint("", "", dict(before)))
    if not changed:
        return "its fingerprint differs"
    phrases = [_phrase(dag.specs[name].fn, part, now.parts, before) for part in changed]
    more = f" and {len(phrases) - 3} more" if len(phrases) > 3 else ""
    return ", ".join(phrases[:3]) + more


def _phrase(fn: Any, part: str, now: Mapping[str, str], before: Mapping[str, str]) -> str:
    if part == "function":
        text = f"function {getattr(fn, '__qualname__', None) or type(fn).__name__}"
    elif part == "version":
        text = "version="
    elif part.startswith("function: closure "):
        text = f"closure variable {part.removeprefix('function: closure ')}"
    elif part.startswith("global "):
        text = f"module global {part.removeprefix('global ')}"
    else:
        text = part
    if part not in before:
        return f"{text} (new)"
    if part not in now:
        return f"{text} (no longer used)"
    return text
