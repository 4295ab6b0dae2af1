"""Codec speed for the values that existed before the standard-library and user types.

Encode and decode, msgpack `Codec` and `JSONCodec`, of None, a small plain dict,
50 plain rows and a mixed value (datetime, set, tuple, Decimal, UUID, bytes,
big int, nested tuples). Adding types must not slow these down.

Reproduce (before/after, interleaved in one sitting; each figure is the best
of 5 repeats, best over the rounds):

    git archive <old-commit> flowdag | tar -x -C /tmp/before
    python benchmarks/codec_speed.py compare /tmp/before . --rounds 3

One tree alone (JSON, ns per call): ``PYTHONPATH=<tree> python benchmarks/codec_speed.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import timeit
from typing import Any


def measure() -> dict[str, float]:
    from datetime import UTC, datetime
    from decimal import Decimal
    from uuid import UUID

    from flowdag.codec import Codec
    from flowdag.json_codec import JSONCodec

    cases: dict[str, Any] = {
        "none": None,
        "small_plain": {"rows": 3, "ok": True, "name": "extract"},
        "plain_rows": [{"id": i, "name": f"n{i}", "amount": i * 1.5} for i in range(50)],
        "mixed": {
            "when": datetime(2026, 11, 22, 3, 4, 5, 123456, tzinfo=UTC),
            "ids": {7, 8},
            "pair": (1, 2),
            "d": Decimal("3.10"),
            "u": UUID(int=5),
            "b": b"\x00\xff",
            "big": 2**80,
            "rows": [[i, str(i), (i, i * 0.5)] for i in range(20)],
        },
    }
    out: dict[str, float] = {}
    for codec_name, codec in (("msgpack", Codec()), ("json", JSONCodec())):
        for name, value in cases.items():
            blob = codec.encode(value)
            calls = {
                "encode": lambda c=codec, v=value: c.encode(v),
                "decode": lambda c=codec, b=blob: c.decode(b),
            }
            for op, call in calls.items():
                timer = timeit.Timer(call)
                number, _ = timer.autorange()
                out[f"{codec_name}/{op}/{name}"] = min(timer.repeat(5, number)) / number * 1e9
    return out


def compare(before: str, after: str, rounds: int) -> None:
    best: dict[str, dict[str, float]] = {"before": {}, "after": {}}
    for _ in range(rounds):
        for label, tree in (("before", before), ("after", after)):
            env = {**os.environ, "PYTHONPATH": os.path.abspath(tree)}
            done = subprocess.run(
                [sys.executable, __file__], env=env, capture_output=True, text=True, check=True
            )
            for case, ns in json.loads(done.stdout).items():
                best[label][case] = min(ns, best[label].get(case, ns))
    print(f"{'case':28} {'before ns':>10} {'after ns':>10} {'after/before':>12}")
    for case, old in best["before"].items():
        new = best["after"][case]
        print(f"{case:28} {old:10.0f} {new:10.0f} {new / old:12.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    both = sub.add_parser("compare", help="two trees, interleaved")
    both.add_argument("before")
    both.add_argument("after")
    both.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.command == "compare":
        compare(args.before, args.after, args.rounds)
    else:
        print(json.dumps(measure()))


if __name__ == "__main__":
    main()
