"""Webhooks acknowledged per second when Stripe takes a realistic 250 ms a call: the ledger
(`ledger serve`, its workers in-process) against the plain-SQL baseline (`bench/baseline_app.py`),
in one run, through `bench/hot_product.py`'s machinery (real processes, real PostgreSQL, the
Stripe stand-in in a process of its own, the bench's own keep-alive HTTP client).

Set-up at full speed; then the stand-in answers every /v1 call only after `--stripe-delay`
seconds, and the signed `checkout.session.completed` of `--sessions` paid sessions are delivered
with `--concurrency` deliveries in flight (closed loop: a non-200 goes to the back of the queue
and is delivered again). Scenario `spread` (default): one product per session, stock 1 each, so
every session is confirmed and nothing contends but Stripe's latency; `hot`: one product for all,
stock for 5/6 of them (the rest refunded). The two systems alternate over `--repeat` runs.

    .venv/bin/python bench/slow_stripe_throughput.py
        [--url postgresql://postgres@127.0.0.1:5432/postgres] [--sessions 600]
        [--concurrency 128] [--stripe-delay 0.25] [--scenario spread] [--repeat 1]
        [--workers 1]

Progress on stderr; one JSON document on stdout: per run, each system's acknowledged/s
(sessions / wall time until every one was answered 200), non-200 answers, webhook latency,
outcomes, CPU seconds (`server_cpu_ms_per_session`: the server's process tree, user + system
from /proc, over the timed phase); `summary`: the medians, `ratio` = ledger / baseline for
acknowledged/s (the goal: ≥ 2, with 0 non-200) and `cpu_ratio` for CPU per session.
`--stripe-delay 0 --scenario hot --concurrency 32` is hot_product.py's `hot_c32` alone.
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


def figures(result: dict[str, Any]) -> dict[str, Any]:
    outcomes = result["outcomes"]
    cpu = result["cpu_s"]
    return {
        "acknowledged_per_s": result["settled_per_s"],
        "non_200": result["non_200"],
        "non_200_by_status": result["non_200_by_status"],
        "unsettled": result["unsettled"],
        "wall_s": result["wall_s"],
        "webhook_ms": result["webhook_ms"],
        "outcomes_ok": (outcomes["confirmed"], outcomes["refund"])
        == (outcomes["expected"]["confirmed"], outcomes["expected"]["refund"]),
        "cpu_s": cpu,
        "server_cpu_ms_per_session": round(cpu["servers"] / result["sessions"] * 1000, 2),
        "server_cpu_per_wall": round(cpu["servers"] / cpu["wall"], 2) if cpu["wall"] else None,
    }


async def compare(run: hp.Run, plan: hp.Plan, repeat: int) -> list[dict[str, Any]]:
    rows = []
    for attempt in range(repeat):
        stand_in = hp.start_stand_in(run.procs, run.secret)  # fresh: it keeps every session
        try:
            row: dict[str, Any] = {}
            for kind in ("ledger", "baseline") if attempt % 2 == 0 else ("baseline", "ledger"):
                if kind == "ledger":
                    result = await run.ledger(plan, stand_in)
                    result["log"] = run.last_ledger_log
                else:
                    result = await run.baseline(plan, stand_in)
                    result["log"] = run.last_baseline_log
                row[kind] = figures(result)
                row[kind]["log"] = result["log"]
                progress(
                    f"run {attempt + 1} {kind}: {row[kind]['acknowledged_per_s']}/s, "
                    f"non-200 {row[kind]['non_200']}, p50 {row[kind]['webhook_ms']['p50']} ms, "
                    f"outcomes ok {row[kind]['outcomes_ok']}"
                )
            row["ratio"] = hp.ratio(
                row["ledger"]["acknowledged_per_s"], row["baseline"]["acknowledged_per_s"]
            )
            row["cpu_ratio"] = hp.ratio(
                row["ledger"]["server_cpu_ms_per_session"],
                row["baseline"]["server_cpu_ms_per_session"],
            )
            rows.append(row)
        finally:
            run.procs.stop([stand_in])
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def med(kind: str) -> float:
        return float(median(r[kind]["acknowledged_per_s"] for r in rows))

    return {
        "acknowledged_per_s": {"ledger": med("ledger"), "baseline": med("baseline")},
        "ratio_median": median(r["ratio"] for r in rows if r["ratio"] is not None),
        "ratios": [r["ratio"] for r in rows],
        "server_cpu_ms_per_session": {
            k: float(median(r[k]["server_cpu_ms_per_session"] for r in rows))
            for k in ("ledger", "baseline")
        },
        "cpu_ratio_median": median(r["cpu_ratio"] for r in rows if r["cpu_ratio"] is not None),
        "cpu_ratios": [r["cpu_ratio"] for r in rows],
        "non_200": {k: sum(r[k]["non_200"] for r in rows) for k in ("ledger", "baseline")},
        "all_outcomes_ok": all(r[k]["outcomes_ok"] for r in rows for k in ("ledger", "baseline")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--sessions", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--stripe-delay", type=float, default=0.25)
    parser.add_argument("--scenario", choices=("spread", "hot"), default="spread")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="the ledger as `ledger serve --workers N` (the baseline stays one process)",
    )
    own = parser.parse_args()
    args = hp.parse_args(
        [
            "--url",
            own.url,
            "--sessions",
            str(own.sessions),
            "--scenarios",
            own.scenario,
            "--stripe-delay",
            str(own.stripe_delay),
            "--workers",
            str(own.workers),
        ]
    )
    # hot_product's plan for the scenario (its products, stock and expected outcomes), at this
    # bench's concurrency.
    plan = next(p for p in hp.plans([own.scenario], own.sessions, args.rate))
    plan.name = f"{own.scenario}_c{own.concurrency}_stripe{own.stripe_delay:g}s"
    plan.concurrency = own.concurrency
    machine = {"cores": os.cpu_count(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="bench_slow_stripe_") as tmp:
        run = hp.Run(args, hp.Processes(Path(tmp)), hp.Scratch(args.url), hp.RssSampler())
        run.rss.start()
        with hp.cleanup(run):
            rows = asyncio.run(compare(run, plan, own.repeat))
    out = {
        "bench": "slow_stripe_throughput",
        "machine": machine,
        "source": source_version(),
        "config": {
            "sessions": own.sessions,
            "concurrency": own.concurrency,
            "stripe_delay_s": own.stripe_delay,
            "scenario": own.scenario,
            "repeat": own.repeat,
            "ledger_workers": own.workers,
        },
        "runs": rows,
        "summary": summary(rows),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
