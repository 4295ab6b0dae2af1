"""A batch ETL job as a flowdag workflow: CSV partitions -> clean -> aggregate -> SQLite.

The graph (8 partitions, run side by side)::

    generate ─┬─ extract_0 ── aggregate_0 ─┐
              ├─ extract_1 ── aggregate_1 ─┤
              ├─ ...                        ├─ merge ── load ── report
              └─ extract_7 ── aggregate_7 ─┘

- ``generate`` writes a synthetic sales dataset (fixed seed, about 300,000 rows,
  some of them dirty) as 8 CSV partitions; it skips the work if they exist.
- ``extract_N`` reads partition N, drops the rows it cannot repair and writes
  the clean rows next to it; ``aggregate_N`` sums quantity and revenue per
  region, product and month. Outputs stay small: paths, counts, aggregates.
- ``merge`` combines the partitions' aggregates and totals the counters it
  finds in ``ctx.data`` (rows read, rows dropped).
- ``load`` replaces the summary table in SQLite in one transaction, so a re-run
  after a crash never duplicates rows; ``report`` writes ``report.md`` and
  prints where the results are.

Run it (the work directory defaults to ``./etl-work``)::

    flowdag run examples/etl_pipeline.py --run-id demo
    flowdag status demo

Kill it mid-way and resume: slow the partitions down, press Ctrl-C (or
``kill -9`` the process from another terminal), then run the same command
again. Completed nodes are not called again; their outputs come from the store::

    ETL_SLOW=2 flowdag run examples/etl_pipeline.py --run-id demo2   # Ctrl-C / kill -9
    flowdag run examples/etl_pipeline.py --run-id demo2              # resumes

``python examples/etl_pipeline.py [RUN_ID]`` does the same through the Python
API with an LMDB store in ``.flowdag``.

Environment: ``ETL_WORK_DIR`` (work directory), ``ETL_ROWS`` (rows to generate,
default 300000), ``ETL_SLOW`` (seconds each partition node sleeps, default 0).
"""

from __future__ import annotations

import csv
import os
import random
import sqlite3
import sys
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import flowdag

WORK_DIR = Path(os.environ.get("ETL_WORK_DIR", "etl-work")).resolve()
ROWS = int(os.environ.get("ETL_ROWS", "300000"))
SLOW = float(os.environ.get("ETL_SLOW", "0"))
PARTITIONS = 8
SEED = 20261122

REGIONS = ["north", "south", "east", "west", "central", "online"]
PRODUCTS = {  # product -> list price in cents
    "widget": 1250,
    "gadget": 4999,
    "gizmo": 799,
    "doohickey": 2500,
    "sprocket": 350,
    "flange": 1820,
    "bracket": 640,
    "valve": 9100,
    "gasket": 120,
    "coupler": 2275,
}
HEADER = ["order_id", "region", "product", "date", "quantity", "unit_price"]

wf = flowdag.Workflow("etl")


# -- generate -----------------------------------------------------------------


@wf.node
def generate() -> dict[str, Any]:
    """Write the raw CSV partitions, unless a previous attempt already did."""
    raw = WORK_DIR / "raw"
    manifest = raw / "MANIFEST"
    expected = f"rows={ROWS} partitions={PARTITIONS} seed={SEED}\n"
    files = [raw / f"part-{part:02d}.csv" for part in range(PARTITIONS)]
    if not (manifest.exists() and manifest.read_text() == expected):
        raw.mkdir(parents=True, exist_ok=True)
        rng = random.Random(SEED)
        for part, path in enumerate(files):
            count = ROWS // PARTITIONS + (1 if part < ROWS % PARTITIONS else 0)
            _write_atomically(path, _raw_rows(rng, part, count))
        # Written last: a crash during generation leaves no manifest, so the next
        # attempt starts over instead of trusting half-written data.
        manifest.write_text(expected)
    return {"dir": str(raw), "files": [str(path) for path in files], "rows": ROWS}


def _raw_rows(rng: random.Random, part: int, count: int) -> list[list[str]]:
    start = date(2025, 1, 1)
    products = list(PRODUCTS)
    rows = []
    for n in range(count):
        product = rng.choice(products)
        cents = PRODUCTS[product] + rng.randint(-50, 50)
        row = [
            f"{part}-{n}",
            rng.choice(REGIONS),
            product,
            (start + timedelta(days=rng.randrange(365))).isoformat(),
            str(rng.randint(1, 20)),
            f"{cents // 100}.{cents % 100:02d}",
        ]
        if rng.random() < 0.04:  # about 4% dirty rows, some repairable
            _dirty(rng, row)
        rows.append(row)
    return rows


def _dirty(rng: random.Random, row: list[str]) -> None:
    match rng.randrange(6):
        case 0:
            row[1] = f"  {row[1].upper()} "  # repairable: case and spaces
        case 1:
            row[5] = "$" + row[5]  # repairable: currency sign
        case 2:
            row[4] = ""  # dropped: missing quantity
        case 3:
            row[4] = str(-int(row[4]))  # dropped: negative quantity
        case 4:
            row[3] = "2025-13-45"  # dropped: impossible date
        case _:
            row[5] = "n/a"  # dropped: no price


def _write_atomically(path: Path, rows: list[list[str]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(HEADER)
        writer.writerows(rows)
    tmp.replace(path)


# -- extract and aggregate, one pair of nodes per partition --------------------


def _extract(part: int) -> Any:
    def extract(generate: dict[str, Any], ctx: flowdag.Context) -> dict[str, Any]:
        """Read one raw partition, repair or drop dirty rows, write the clean rows."""
        if SLOW:
            time.sleep(SLOW)
        source = Path(generate["files"][part])
        clean = WORK_DIR / "clean" / source.name
        clean.parent.mkdir(parents=True, exist_ok=True)
        read = 0
        dropped: Counter[str] = Counter()
        kept: list[list[str]] = []
        with source.open(newline="") as file:
            reader = csv.reader(file)
            next(reader)  # header
            for row in reader:
                read += 1
                reason, cleaned = _clean(row)
                if reason:
                    dropped[reason] += 1
                else:
                    kept.append(cleaned)
        _write_atomically(clean, kept)
        # One key per partition: parallel nodes never write the same ctx.data key.
        ctx.data[f"rows_read.part-{part:02d}"] = read
        ctx.data[f"rows_dropped.part-{part:02d}"] = sum(dropped.values())
        return {"path": str(clean), "rows": len(kept), "dropped": dict(dropped)}

    return extract


def _clean(row: list[str]) -> tuple[str, list[str]]:
    """``("", clean_row)`` or ``(reason, [])`` for a row that cannot be repaired."""
    if len(row) != len(HEADER):
        return "malformed", []
    order_id, region, product, day, quantity, price = (field.strip() for field in row)
    region = region.lower()
    if region not in REGIONS or product not in PRODUCTS:
        return "unknown_key", []
    try:
        date.fromisoformat(day)
    except ValueError:
        return "bad_date", []
    if not quantity.isdigit() or int(quantity) == 0:
        return "bad_quantity", []
    units, _, cents = price.removeprefix("$").partition(".")
    if not units.isdigit() or not (cents.isdigit() and len(cents) == 2):
        return "bad_price", []
    return "", [order_id, region, product, day[:7], quantity, units + cents]


def _aggregate(part: int) -> Any:
    def aggregate(ctx: flowdag.Context) -> list[list[Any]]:
        """Sum one clean partition per region, product and month."""
        if SLOW:
            time.sleep(SLOW)
        totals: dict[tuple[str, str, str], list[int]] = {}
        with open(ctx.inputs[f"extract_{part}"]["path"], newline="") as file:
            reader = csv.reader(file)
            next(reader)
            for _, region, product, month, quantity, cents in reader:
                entry = totals.setdefault((region, product, month), [0, 0, 0])
                entry[0] += int(quantity)
                entry[1] += int(quantity) * int(cents)
                entry[2] += 1
        return [[*key, *values] for key, values in sorted(totals.items())]

    return aggregate


for _part in range(PARTITIONS):
    wf.add_node(f"extract_{_part}", _extract(_part), deps=["generate"])
    wf.add_node(f"aggregate_{_part}", _aggregate(_part), deps=[f"extract_{_part}"])


# -- merge, load, report ---------------------------------------------------------


@wf.node(deps=[f"aggregate_{part}" for part in range(PARTITIONS)])
def merge(ctx: flowdag.Context) -> dict[str, Any]:
    """Combine the partitions' aggregates; total the per-partition counters."""
    totals: dict[tuple[str, str, str], list[int]] = {}
    for rows in ctx.inputs.values():
        for region, product, month, quantity, cents, orders in rows:
            entry = totals.setdefault((region, product, month), [0, 0, 0])
            entry[0] += quantity
            entry[1] += cents
            entry[2] += orders
    ctx.data["rows_read"] = sum(
        value for key, value in ctx.data.items() if key.startswith("rows_read.")
    )
    ctx.data["rows_dropped"] = sum(
        value for key, value in ctx.data.items() if key.startswith("rows_dropped.")
    )
    return {
        "rows": [[*key, *values] for key, values in sorted(totals.items())],
        "orders": sum(entry[2] for entry in totals.values()),
        "revenue_cents": sum(entry[1] for entry in totals.values()),
    }


@wf.node(deps=["merge"], retries=2, retry_delay=0.5)
def load(merge: dict[str, Any], ctx: flowdag.Context) -> dict[str, Any]:
    """Replace the summary table in SQLite in one transaction (safe to repeat)."""
    db_path = WORK_DIR / "sales.db"
    db = sqlite3.connect(db_path)
    try:
        with db:  # one transaction: all of it or none of it
            db.execute(
                "CREATE TABLE IF NOT EXISTS sales_summary (region TEXT, product TEXT,"
                " month TEXT, quantity INTEGER, revenue_cents INTEGER, orders INTEGER,"
                " PRIMARY KEY (region, product, month))"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS loads (load_key TEXT PRIMARY KEY, run_id TEXT,"
                " rows INTEGER, loaded_at TEXT)"
            )
            # Delete-then-insert: a re-run after a crash replaces, never duplicates.
            db.execute("DELETE FROM sales_summary")
            db.executemany("INSERT INTO sales_summary VALUES (?, ?, ?, ?, ?, ?)", merge["rows"])
            db.execute(
                "INSERT OR REPLACE INTO loads VALUES (?, ?, ?, datetime('now'))",
                (ctx.idempotency_key, ctx.run_id, len(merge["rows"])),
            )
    finally:
        db.close()
    return {"db": str(db_path), "table": "sales_summary", "rows": len(merge["rows"])}


@wf.node(deps=["merge", "load"])
def report(merge: dict[str, Any], load: dict[str, Any], ctx: flowdag.Context) -> str:
    """Write a short markdown report and return its path."""
    by_region: Counter[str] = Counter()
    by_product: Counter[str] = Counter()
    for region, product, _month, _quantity, cents, _orders in merge["rows"]:
        by_region[region] += cents
        by_product[product] += cents
    lines = [
        f"# Sales report ({ctx.run_id})",
        "",
        f"- rows read: {ctx.data.get('rows_read', 0):,}",
        f"- rows dropped: {ctx.data.get('rows_dropped', 0):,}",
        f"- orders: {merge['orders']:,}",
        f"- revenue: {_money(merge['revenue_cents'])}",
        f"- loaded: {load['rows']} rows into `{load['table']}` in {load['db']}",
        "",
        "| region | revenue |",
        "|---|---:|",
        *(f"| {region} | {_money(cents)} |" for region, cents in by_region.most_common()),
        "",
        "| top product | revenue |",
        "|---|---:|",
        *(f"| {product} | {_money(cents)} |" for product, cents in by_product.most_common(5)),
    ]
    path = WORK_DIR / "report.md"
    path.write_text("\n".join(lines) + "\n")
    # Said by the last node, so `flowdag run` shows where the results are.
    print(f"etl: results in {WORK_DIR}: report.md, and sales.db (table {load['table']})")
    return str(path)


def _money(cents: int) -> str:
    return f"{cents // 100:,}.{cents % 100:02d}"


def main(argv: list[str]) -> int:
    """Run (or resume, given the same run id) the job on an LMDB store in .flowdag."""
    run_id = argv[1] if len(argv) > 1 else None
    with flowdag.LMDBStore(".flowdag") as store:
        result = flowdag.run(wf, run_id=run_id, store=store)
    print(f"run {result.run_id}: {result.status}")
    for name, error in result.errors.items():
        print(f"  {name} failed: {error}")
    if result.ok:
        print(f"rows read {result.data['rows_read']:,}, dropped {result.data['rows_dropped']:,}")
        print(f"report: {result.outputs['report']}")
    else:
        print(f"resume with: python {argv[0]} {result.run_id}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
