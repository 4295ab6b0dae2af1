"""Stores: save, load, statuses-only read, resume planning and per-node commits, by size.

Reproduce (all figures of one run are comparable; read the ratios printed at the end):

    pytest benchmarks/bench_stores.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=min,median,max,rounds

Without the 100,000-node runs (the slow part, minutes): add ``-m "not slow"``.

The matrix: every store (``memory``, ``lmdb``, ``json``, ``flatbuffers``) x runs of
1k / 10k / 100k nodes (a fan-out: root -> N-2 nodes -> sink, every node completed)
x outputs of 100 B / 10 KiB / 1 MiB per node (text-like bytes that zstd shrinks
2.1x at 10 KiB and 4.6x at 1 MiB) x ``zstd`` (the default `Codec`, compressing blobs above 1 KiB) or
``raw`` (``Codec(compress_threshold=None)``). Skipped, and why:

- runs whose outputs total more than 1 GiB (1 MiB x 10k, 1 MiB x 100k): they would
  write 10-100 GiB per round;
- ``raw`` with 100 B outputs: below the compression threshold, identical to ``zstd``;
- ``raw`` on ``json``: the JSON store writes JSON text, never zstd.

Operations (groups are ``OP-NODES-PAYLOAD``; the baseline is ``memory-zstd``):

- ``save``: `Store.save` of the whole completed run into a fresh store;
- ``read``: ``load`` (`Store.load`, everything), ``statuses`` (`Store.load_statuses`,
  no outputs: what ``flowdag status`` reads) and ``plan`` (``load`` then
  `flowdag.resume.plan_run`: what resuming a run costs before any node runs);
  ``statuses`` and ``plan`` are also compared with their store's own ``load``;
- ``commit``: every node of a saved, pending run committed as its node finishes:
  ``grouped`` (one ``store.commit(run_id, records)`` per 100 records, as the
  runner's group commit does) or ``single`` (one record per call, one sync
  each). ``series`` compares the per-node cost at 100k with 1k.

``extra_info`` carries ``disk_bytes`` (allocated, as ``du`` counts) and
``file_bytes`` (apparent size) of the store after the operation.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from typing import Any

import pytest
from _shapes import STORES, DirMaker, disk_usage, fanout, label, make_store

import flowdag
from flowdag.codec import Codec
from flowdag.resume import plan_run
from flowdag.state import NodeRecord, NodeState, NodeStatus, RunState

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
MAX_BYTES = GiB  # the most output bytes one case may write
NODES = [1_000, 10_000, 100_000]
PAYLOADS = [100, 10 * KiB, MiB]
BATCH = 100  # records per commit when grouped
RUN_ID = "bench"


def _size_label(payload: int) -> str:
    if payload >= MiB:
        return f"{payload // MiB}MiB"
    return f"{payload // KiB}KiB" if payload >= KiB else f"{payload}B"


def _cases(stores: list[str]) -> list[Any]:
    cases = []
    for store in stores:
        for nodes in NODES:
            for payload in PAYLOADS:
                for zstd in ("zstd", "raw"):
                    marks = []
                    if nodes * payload > MAX_BYTES:
                        marks.append(pytest.mark.skip(reason="outputs > 1 GiB per round"))
                    elif zstd == "raw" and payload <= 1024:
                        marks.append(pytest.mark.skip(reason="below the zstd threshold: = zstd"))
                    elif zstd == "raw" and store == "json":
                        marks.append(pytest.mark.skip(reason="the JSON store has no zstd"))
                    if nodes > 10_000:
                        marks.append(pytest.mark.slow)
                    case_id = f"{store}-{label(nodes)}-{_size_label(payload)}-{zstd}"
                    cases.append(pytest.param(store, nodes, payload, zstd, id=case_id, marks=marks))
    return cases


CASES = _cases(STORES)


def _rounds(nodes: int, payload: int) -> dict[str, int]:
    volume = nodes * payload
    if nodes > 10_000 or volume > 256 * MiB:
        return {"rounds": 1, "warmup_rounds": 0}  # once: a round takes seconds to minutes
    if volume > 16 * MiB or nodes > 1_000:
        return {"rounds": 3, "warmup_rounds": 1}
    return {"rounds": 5, "warmup_rounds": 1}


@functools.cache
def _payload(size: int) -> bytes:
    """Text-like bytes that zstd shrinks (2.1x at 10 KiB, 4.6x at 1 MiB), as logs would."""
    rng = random.Random(size)
    words = [rng.randbytes(rng.randint(2, 9)).hex() for _ in range(2000)]
    text = " ".join(rng.choice(words) for _ in range(size // 4 + 1)).encode()
    return text[:size]


@functools.cache
def _dag(nodes: int) -> flowdag.DAG:
    return fanout(nodes - 2)  # root + (nodes - 2) + sink


def _completed_state(nodes: int, payload: int) -> RunState:
    dag = _dag(nodes)
    value = _payload(payload)  # one object shared by every node: RAM stays small
    return RunState(
        RUN_ID,
        dag.name,
        nodes={
            name: NodeState(NodeStatus.COMPLETED, 1, output=value, deps=dag.deps(name))
            for name in dag.nodes
        },
    )


def _pending_state(nodes: int) -> RunState:
    dag = _dag(nodes)
    return RunState(
        RUN_ID, dag.name, nodes={name: NodeState(deps=dag.deps(name)) for name in dag.nodes}
    )


def _codec(zstd: str) -> Codec | None:
    return None if zstd == "zstd" else Codec(compress_threshold=None)


def _describe(benchmark: Any, what: str, nodes: int, baseline: bool, **extra: Any) -> None:
    benchmark.extra_info.update(label=what, nodes=nodes, **extra)
    if baseline:
        benchmark.extra_info["baseline"] = True
    benchmark.extra_info["per_node_us"] = benchmark.stats.stats.median / nodes * 1e6


class _Stores:
    """Fresh stores for one benchmark, all closed at the end."""

    def __init__(self, fresh_dir: DirMaker, kind: str, zstd: str) -> None:
        self.fresh_dir = fresh_dir
        self.kind = kind
        self.zstd = zstd
        self.opened: list[tuple[flowdag.Store, Any]] = []

    def new(self) -> flowdag.Store:
        where = self.fresh_dir()
        store = make_store(self.kind, where, _codec(self.zstd))
        self.opened.append((store, where))
        return store

    def usage(self) -> dict[str, int]:
        """Disk use of the last store opened."""
        if self.kind == "memory" or not self.opened:
            return {"disk_bytes": 0, "file_bytes": 0}
        allocated, apparent = disk_usage(self.opened[-1][1])
        return {"disk_bytes": allocated, "file_bytes": apparent}

    def close(self) -> None:
        for store, _ in self.opened:
            store.close()


@pytest.fixture
def stores(fresh_dir: DirMaker, request: pytest.FixtureRequest) -> Any:
    params = request.node.callspec.params
    opened = _Stores(fresh_dir, params["store"], params["zstd"])
    yield opened
    opened.close()


# -- save -----------------------------------------------------------------------


@pytest.mark.parametrize(("store", "nodes", "payload", "zstd"), CASES)
def test_save(
    benchmark: Any, stores: _Stores, store: str, nodes: int, payload: int, zstd: str
) -> None:
    state = _completed_state(nodes, payload)
    benchmark.group = f"save-{label(nodes)}-{_size_label(payload)}"
    benchmark.pedantic(
        lambda s: s.save(state), setup=lambda: ((stores.new(),), {}), **_rounds(nodes, payload)
    )
    baseline = store == "memory" and zstd == "zstd"
    _describe(benchmark, f"{store}-{zstd}", nodes, baseline, **stores.usage())


# -- read: load, statuses only, load + plan ------------------------------------------


READS: dict[str, Callable[[flowdag.Store], Any]] = {
    "load": lambda s: s.load(RUN_ID),
    "statuses": lambda s: s.load_statuses(RUN_ID),
}


@pytest.mark.parametrize("op", ["load", "statuses", "plan"])
@pytest.mark.parametrize(("store", "nodes", "payload", "zstd"), CASES)
def test_read(
    benchmark: Any,
    stores: _Stores,
    store: str,
    nodes: int,
    payload: int,
    zstd: str,
    op: str,
) -> None:
    dag = _dag(nodes)
    target = stores.new()
    target.save(_completed_state(nodes, payload))
    read = READS.get(op) or (lambda s: plan_run(dag, RUN_ID, s.load(RUN_ID), allow_changes=False))
    benchmark.group = f"read-{label(nodes)}-{_size_label(payload)}"
    result = benchmark.pedantic(read, args=(target,), **_rounds(nodes, payload))
    if op == "plan":
        assert len(result.completed) == nodes  # nothing would run
    else:
        assert len(result.nodes) == nodes
    baseline = store == "memory" and zstd == "zstd" and op == "load"
    extra = {} if op == "load" else {"vs": f"{store}-{zstd}-load"}
    _describe(benchmark, f"{store}-{zstd}-{op}", nodes, baseline, **extra, **stores.usage())


# -- per-node commits ------------------------------------------------------------------


def _records(store: flowdag.Store, nodes: int, payload: int) -> list[NodeRecord]:
    output = store.codec.encode(_payload(payload))  # encoded once: the runner's workers do it
    return [NodeRecord(name, NodeStatus.COMPLETED, 1, output=output) for name in _dag(nodes).nodes]


@pytest.mark.parametrize("grouped", [True, False], ids=["grouped", "single"])
@pytest.mark.parametrize(("store", "nodes", "payload", "zstd"), CASES)
def test_commit(
    benchmark: Any,
    stores: _Stores,
    store: str,
    nodes: int,
    payload: int,
    zstd: str,
    grouped: bool,
) -> None:
    pending = _pending_state(nodes)
    step = BATCH if grouped else 1
    records: list[NodeRecord] = []

    def setup() -> tuple[tuple[flowdag.Store], dict[str, Any]]:
        s = stores.new()
        s.save(pending)
        if not records:
            records.extend(_records(s, nodes, payload))
        return (s,), {}

    def commit_all(s: flowdag.Store) -> None:
        for i in range(0, len(records), step):
            s.commit(RUN_ID, records[i : i + step])

    benchmark.group = f"commit-{label(nodes)}-{_size_label(payload)}"
    benchmark.pedantic(commit_all, setup=setup, **_rounds(nodes, payload))
    mode = "grouped" if grouped else "single"
    baseline = store == "memory" and zstd == "zstd" and grouped
    _describe(
        benchmark,
        f"{store}-{zstd}-{mode}",
        nodes,
        baseline,
        series=f"commit-{mode}/{store}-{zstd}-{_size_label(payload)}",
        **stores.usage(),
    )
