"""STAND-IN for the lead's flowdag/_decide.py (deleted when main has it)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import networkx as nx

from flowdag._fingerprint import Fingerprint
from flowdag.dag import DAG
from flowdag.state import NodeState, NodeStatus, Reason, RunState

__all__ = ["Verdict", "decide", "resolve"]


@dataclass(frozen=True, slots=True)
class Verdict:
    action: str
    reason: Reason
    warning: str | None = None


def decide(
    dag: DAG,
    state: RunState,
    fingerprints: Mapping[str, Fingerprint],
    *,
    on_code_change: str,
    rerun: str | None = None,
    rerun_from: Iterable[str] = (),
    structural: Mapping[str, Reason] = {},  # noqa: B006
) -> dict[str, Verdict]:
    forced: set[str] = set()
    for name in rerun_from:
        forced.add(name)
        forced.update(nx.descendants(dag.graph, name))
    out: dict[str, Verdict] = {}
    for name in dag.nodes:
        node = state.nodes[name]
        prov = node.provenance
        if name in structural:
            out[name] = Verdict("run", structural[name])
            continue
        if name in forced:
            out[name] = Verdict("run", Reason("forced", "rerun_from"))
            continue
        if node.status is not NodeStatus.COMPLETED:
            if rerun == "failed" and node.status in (NodeStatus.FAILED, NodeStatus.SKIPPED):
                out[name] = Verdict("run", Reason("forced", 'rerun="failed"'))
            elif node.status is NodeStatus.RUNNING:
                out[name] = Verdict("run", Reason("interrupted", "in flight"))
            elif prov is not None and prov.reason is not None and prov.reason.code == "forced":
                out[name] = Verdict("run", prov.reason)
            else:
                out[name] = Verdict("run", Reason("new", f"it was {node.status}"))
            continue
        if prov is not None and prov.manual:
            out[name] = Verdict("reuse", Reason("manual", prov.reason.detail if prov.reason else ""))
            continue
        if rerun == "failed":
            out[name] = Verdict("reuse", Reason("reused", 'rerun="failed" kept it'))
            continue
        fp = fingerprints.get(name)
        policy = dag.specs[name].on_code_change or on_code_change
        warning = None
        if prov is not None and prov.fingerprint and fp is not None and fp.digest != prov.fingerprint:
            if fp.source_digest != prov.source:
                changed = fp.changed_parts(
                    Fingerprint(prov.fingerprint, prov.source or "", dict(prov.parts))
                )
                if policy == "rerun":
                    out[name] = Verdict("run", Reason("code_changed", ", ".join(changed)))
                    continue
                if policy == "warn":
                    warning = f"node '{name}': code changed ({', '.join(changed)}), reused"
        bad = None
        if prov is not None:
            for dep, digest in prov.inputs.items():
                dep_state = state.nodes.get(dep)
                now = None
                if dep_state is not None and dep_state.provenance is not None:
                    now = dep_state.provenance.output
                if now is not None and now != digest:
                    bad = dep
                    break
        if bad is not None:
            out[name] = Verdict("run", Reason("input_changed", f"'{bad}' changed"))
            continue
        if any(out[d].action != "reuse" for d in dag.deps(name)):
            out[name] = Verdict("provisional", Reason("reused", "upstream runs"), warning)
            continue
        out[name] = Verdict("reuse", Reason("reused", "still holds"), warning)
    return out


def resolve(name: str, node: NodeState, digests: Mapping[str, str]) -> Verdict:
    prov = node.provenance
    for dep in node.deps:
        recorded = None if prov is None else prov.inputs.get(dep)
        if recorded is None or digests.get(dep) != recorded:
            return Verdict("run", Reason("input_changed", f"'{dep}' output changed"))
    return Verdict("reuse", Reason("reused", "early cutoff: inputs unchanged"))
