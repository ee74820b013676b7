"""Lag from a save to the order-status row being visible, at light load.

Creates a scratch database on a PostgreSQL server, saves checkouts (a cart's CheckoutStarted)
at a steady rate, and after each save waits (`wait_for_position`) for the order-status read
model to reach the save's position, then reads the row through the query a status poll uses.
Two set-ups: the workers in this process (as in `ledger serve`: woken by the commit) and in a
separate process (as with `ledger work`: the wait polls the tracking table). Prints JSON.

    python bench/projection_lag.py [--url postgresql://postgres@127.0.0.1:5432/postgres]
                                   [--rate 50] [--seconds 10] [--mode both|in_process|process]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from common import percentiles, scratch_database

from ledger.application import Ledger
from ledger.domain import Cart
from ledger.storage import Database
from projections import OrderStatuses, ReadStore, default_projections
from workers import Workers

LINES = [{"sku": "mug", "name": "Mug", "quantity": 1, "unit_amount": 1250}]


@contextmanager
def workers_in_process(database: Database) -> Iterator[None]:
    workers = Workers(database, default_projections())
    workers.start()
    try:
        yield
    finally:
        workers.stop()


@contextmanager
def workers_in_another_process(database: Database) -> Iterator[None]:
    script = textwrap.dedent(
        f"""
        from ledger.storage import Database
        from projections import default_projections
        from workers import Workers
        Workers(Database({database.params!r}), default_projections()).run_forever()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def run(database: Database, mode: str, rate: float, seconds: float) -> dict[str, Any]:
    ledger = Ledger(env=database.eventsourcing_env())
    reads = ReadStore(database)
    statuses = OrderStatuses(reads)
    runner = workers_in_process if mode == "in_process" else workers_in_another_process
    save_s: list[float] = []
    visible_s: list[float] = []
    total_s: list[float] = []
    timeouts = 0
    try:
        with runner(database):
            # Warm up: the runner owns its processors and has caught up.
            assert reads.wait_for_head(["order_status"], timeout=10), "the runner did not start"
            count = int(rate * seconds)
            started = time.perf_counter()
            for n in range(count):
                due = started + n / rate
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                session_id = f"cs_bench_{mode}_{n}"
                cart = Cart(user_id=None, cause="bench")
                cart.start_checkout(session_id, LINES, 1250, "usd", "bench")
                t0 = time.perf_counter()
                position = ledger.save(cart)[-1].notification.id
                t1 = time.perf_counter()
                ok = reads.wait_for_position("order_status", position, timeout=5.0)
                body = statuses.get(session_id)
                t2 = time.perf_counter()
                if not ok or body is None:
                    timeouts += 1
                    continue
                save_s.append(t1 - t0)
                visible_s.append(t2 - t1)
                total_s.append(t2 - t0)
            elapsed = time.perf_counter() - started
    finally:
        reads.close()
        ledger.close()
    return {
        "saves": len(total_s) + timeouts,
        "achieved_rate_per_s": round((len(total_s) + timeouts) / elapsed, 1),
        "not_visible_within_5s": timeouts,
        "save_ms": percentiles(save_s),
        "commit_to_visible_ms": percentiles(visible_s),
        "save_to_visible_ms": percentiles(total_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rate", type=float, default=50.0, help="saves per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--mode", choices=["both", "in_process", "process"], default="both")
    args = parser.parse_args()
    admin = Database.from_url(args.url)
    modes = ["in_process", "process"] if args.mode == "both" else [args.mode]
    results: dict[str, Any] = {"rate_per_s": args.rate, "seconds": args.seconds}
    with admin.connect() as conn:
        row = conn.execute("SHOW server_version").fetchone()
        results["postgres"] = row[0] if row else None
    for mode in modes:
        with scratch_database(admin, "ledger_bench_") as database:
            results[mode] = run(database, mode, args.rate, args.seconds)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
