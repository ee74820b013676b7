"""`ledger serve --workers 2` against `--workers 1`, in one run, on the spread scenario of
`bench/hot_product.py` (N sessions over N products, 32 deliveries in flight, real processes,
real PostgreSQL, the Stripe stand-in in a process of its own).

Per run and worker count: settled/s, non-200 answers, whether the outcomes are right, the server
CPU seconds during the timed phase (the parent and all its children, from /proc), CPU per settled
session, server CPU ÷ wall (above 1: more than one core at work), and each child's share of the
requests it answered (set-up included; from the line each child logs as it stops) and of the
timed deliveries alone (from each webhook's line). The two
counts alternate within each repeat, so a neighbour's load on a shared machine falls on both;
`summary` holds the medians over the repeats, and the ratios to quote.

    .venv/bin/python bench/serve_workers.py [--url postgresql://postgres@127.0.0.1:5432/postgres]
        [--sessions 600] [--repeat 3]

Progress on stderr; one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from pathlib import Path
from statistics import median
from typing import Any

import hot_product as hp  # the bench next to this script (its directory is on sys.path)
from common import progress, source_version

WORKER_COUNTS = (1, 2)


def figures(workers: int, result: dict[str, Any], log: dict[str, Any]) -> dict[str, Any]:
    cpu = result["cpu_s"]
    served = log.get("requests_by_process", {})
    total = sum(served.values())
    delivered = log.get("webhooks_by_process", {})
    deliveries = sum(delivered.values())
    outcomes = result["outcomes"]
    return {
        "workers": workers,
        "settled_per_s": result["settled_per_s"],
        "non_200": result["non_200"],
        "outcomes_ok": (outcomes["confirmed"], outcomes["refund"])
        == (outcomes["expected"]["confirmed"], outcomes["expected"]["refund"]),
        "server_cpu_s": cpu["servers"],
        "wall_s": cpu["wall"],
        "server_cpu_ms_per_session": round(cpu["servers"] / result["sessions"] * 1000, 2),
        "server_cpu_per_wall": round(cpu["servers"] / cpu["wall"], 2),
        "load_generator_cpu_s": cpu["load_generator"],
        "postgres_cpu_s": cpu["postgres_all"],
        "request_share": sorted(round(n / total, 3) for n in served.values()) if total else [],
        # The timed phase alone: the set-up's few kept-alive connections land where they may.
        "delivery_share": sorted(round(n / deliveries, 3) for n in delivered.values())
        if len(delivered) > 1
        else [],
    }


async def compare(run: hp.Run, plan: hp.Plan, repeat: int) -> list[dict[str, Any]]:
    rows = []
    for attempt in range(repeat):
        # A fresh stand-in per repeat: it keeps every session it made in memory.
        stand_in = hp.start_stand_in(run.procs, run.secret)
        try:
            for workers in WORKER_COUNTS if attempt % 2 == 0 else WORKER_COUNTS[::-1]:
                run.args.workers = workers
                result = await run.ledger(plan, stand_in)
                row = figures(workers, result, run.last_ledger_log)
                progress(f"run {attempt + 1} --workers {workers}: {json.dumps(row)}")
                rows.append(row)
        finally:
            run.procs.stop([stand_in])
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def med(workers: int, key: str) -> float:
        return float(median(r[key] for r in rows if r["workers"] == workers))

    one, two = (med(1, "server_cpu_ms_per_session"), med(2, "server_cpu_ms_per_session"))
    return {
        "server_cpu_ms_per_session": {"workers_1": one, "workers_2": two},
        "cpu_per_session_ratio_2_to_1": round(two / one, 3),
        "settled_per_s": {
            "workers_1": med(1, "settled_per_s"),
            "workers_2": med(2, "settled_per_s"),
        },
        "server_cpu_per_wall": {
            "workers_1": med(1, "server_cpu_per_wall"),
            "workers_2": med(2, "server_cpu_per_wall"),
        },
        "request_share_workers_2": [r["request_share"] for r in rows if r["workers"] == 2],
        "delivery_share_workers_2": [r["delivery_share"] for r in rows if r["workers"] == 2],
        "all_outcomes_ok": all(r["outcomes_ok"] for r in rows),
        "non_200": sum(r["non_200"] for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--sessions", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=3)
    own = parser.parse_args()
    # The hot-product bench's own settings, as its command line would give them.
    args = hp.parse_args(
        ["--url", own.url, "--sessions", str(own.sessions), "--scenarios", "spread"]
    )
    (plan,) = hp.plans(["spread"], own.sessions, args.rate)
    machine = {"cores": os.cpu_count(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="bench_workers_") as tmp:
        run = hp.Run(args, hp.Processes(Path(tmp)), hp.Scratch(args.url), hp.RssSampler())
        run.rss.start()
        with hp.cleanup(run):
            rows = asyncio.run(compare(run, plan, own.repeat))
    out = {
        "bench": "serve_workers",
        "machine": machine,
        "source": source_version(),
        "config": {"sessions": own.sessions, "repeat": own.repeat, "scenario": plan.name},
        "runs": rows,
        "summary": summary(rows),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
