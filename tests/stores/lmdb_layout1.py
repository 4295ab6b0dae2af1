"""Writing a run as the release of LMDB layout 1 did: keys ``run_id 0x00 blake2b16(name)``.

What the previous release left on disk, made by this one, for tests and the
torture (``tests/torture/harness.py``): the next write must move the run to
layout 2 without losing anything, whenever it is killed.
"""

from __future__ import annotations

from typing import Any

from flowdag.stores import LMDBStore
from flowdag.stores._lmdb_env import Env
from flowdag.stores._lmdb_keys import delete_range, name_digest, pack_entry, run_prefix
from flowdag.stores._stored import StoredRun


def write_layout1(store: LMDBStore, run_id: str, run: StoredRun) -> None:
    """Replace run ``run_id`` by ``run`` written in layout 1 (no marker, hashed keys)."""
    prefix = run_prefix(run_id)

    def write(txn: Any, env: Env) -> None:
        for db in (env.nodes, env.outputs, env.data):
            delete_range(txn, db, prefix)
        seal = store._seal_entry
        txn.put(run_id.encode(), seal(b"run", run_id.encode(), run.header), db=env.runs)
        for name, node in run.nodes.items():
            key = prefix + name_digest(name)
            txn.put(key, seal(b"node", key, pack_entry(name, node.meta)), db=env.nodes)
            if node.output is not None:
                txn.put(key, seal(b"output", key, pack_entry(name, node.output)), db=env.outputs)
        for name, value in run.data.items():
            key = prefix + name_digest(name)
            txn.put(key, seal(b"data", key, pack_entry(name, value)), db=env.data)

    store._transact(run_id, write, write=True)


def to_layout1(store: LMDBStore, run_id: str) -> None:
    """Rewrite a stored run in layout 1, as the previous release would have left it."""
    write_layout1(store, run_id, store._load(run_id))
