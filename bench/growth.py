"""Per-order cost as a hot product's history grows: 0, 10,000 and 20,000 earlier orders.

Measured through the application service (`ledger.application.Ledger`, no HTTP), on a scratch
database on a PostgreSQL server: one product with enough stock for every order; at each level,
200 fresh carts (each with one unit and a started checkout, saved beforehand, untimed) get
their order placed one `place_order` call at a time, each call timed. Between levels the
history is seeded in bulk (carts saved 500 at a time, orders placed with `place_orders` 200 at
a time) so that exactly N orders of the product precede each timed batch. Last, a cold load: a
NEW `Ledger` instance (empty aggregate cache) places its first order at 20,000 (+ the timed
ones) earlier orders, then a second one.

    .venv/bin/python bench/growth.py [--url postgresql://postgres@127.0.0.1:5432/postgres]
                                     [--levels 0,10000,20000] [--timed 200]

Progress on stderr; JSON on stdout:
- `levels[]`: `earlier_orders` (orders of the product before the batch), `place_order_ms`
  (p50, p90, p95, p99, max, mean of the timed calls), `ratio_p50_vs_first` (p50 at this level /
  p50 at the first level), `statuses` (what the timed orders became: all `confirmed` expected);
- `seeding`: orders placed in bulk and their rate (orders/s, carts' saving included);
- `cold_load`: `first_place_order_ms` on a new Ledger at the last level (it reads the product's
  history from the store), `second_place_order_ms` on the same instance;
- `source`: the commit the ledger ran from and the files under src/ that differed from it;
- `version_conflicts`: decisions taken again after a version conflict (if the Ledger counts
  them; should be 0 here, there is one writer).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections import Counter
from typing import Any

from common import percentiles, progress, scratch_database, source_version

from ledger.application import Ledger
from ledger.domain import Cart, PaidSession
from ledger.storage import Database
from web.logs import configure_logging

SKU = "hot"
NAME = "Hot product"
UNIT_AMOUNT = 1250
CART_CHUNK = 500
ORDER_CHUNK = 200


def new_carts(ledger: Ledger, count: int) -> list[PaidSession]:
    """`count` carts with one unit and a started checkout, saved; their paid checkouts."""
    paid: list[PaidSession] = []
    for start in range(0, count, CART_CHUNK):
        carts = []
        for _ in range(min(CART_CHUNK, count - start)):
            cart = Cart(user_id=None, cause="bench")
            cart.set_line(SKU, 1, "bench")
            session_id = f"cs_bench_{uuid.uuid4().hex}"
            cart.start_checkout(
                session_id,
                lines=[{"sku": SKU, "name": NAME, "quantity": 1, "unit_amount": UNIT_AMOUNT}],
                amount_total=UNIT_AMOUNT,
                currency="usd",
                cause="bench",
            )
            carts.append(cart)
            paid.append(
                PaidSession(
                    session_id=session_id,
                    cart_id=cart.id,
                    amount_total=UNIT_AMOUNT,
                    currency="usd",
                    payment_intent="pi_x",
                )
            )
        ledger.save(*carts)
    return paid


def seed(ledger: Ledger, count: int) -> float:
    """Places `count` orders in bulk; returns the seconds it took (carts included)."""
    started = time.perf_counter()
    done = 0
    while done < count:
        batch = min(CART_CHUNK, count - done)
        paid = new_carts(ledger, batch)
        for start in range(0, batch, ORDER_CHUNK):
            ledger.place_orders(paid[start : start + ORDER_CHUNK], cause="bench")
        done += batch
        if done % 2000 < CART_CHUNK or done == count:
            progress(f"  seeded {done}/{count}")
    return time.perf_counter() - started


def timed_batch(ledger: Ledger, count: int) -> tuple[list[float], Counter[str]]:
    paid = new_carts(ledger, count)
    samples: list[float] = []
    statuses: Counter[str] = Counter()
    for one in paid:
        started = time.perf_counter()
        order = ledger.place_order(one, "bench")
        samples.append(time.perf_counter() - started)
        statuses[str(order.status)] += 1
    return samples, statuses


def run(database: Database, levels: list[int], timed: int) -> dict[str, Any]:
    env = database.eventsourcing_env()
    ledger = Ledger(env=env)
    results: list[dict[str, Any]] = []
    seeded = 0
    seed_seconds = 0.0
    try:
        ledger.put_product(SKU, NAME, UNIT_AMOUNT, "usd", "bench")
        ledger.adjust_stock(SKU, levels[-1] + timed * (len(levels) + 2) + 10, "bench", "bench")
        placed = 0
        for level in levels:
            if level > placed:
                progress(f"seeding {level - placed} orders (to {level})")
                seed_seconds += seed(ledger, level - placed)
                seeded += level - placed
                placed = level
            progress(f"timing {timed} place_order calls at {placed} earlier orders")
            samples, statuses = timed_batch(ledger, timed)
            results.append(
                {
                    "earlier_orders": placed,
                    "place_order_ms": percentiles(samples),
                    "statuses": dict(statuses),
                }
            )
            placed += timed
        first_p50 = results[0]["place_order_ms"]["p50"]
        for r in results:
            r["ratio_p50_vs_first"] = round(r["place_order_ms"]["p50"] / first_p50, 3)
        conflicts = getattr(ledger, "version_conflicts", None)
        # A cold instance: nothing cached; the product's history comes from the store.
        paid = new_carts(ledger, 2)
    finally:
        ledger.close()
    progress(f"cold load: a new Ledger's first place_order at {placed} earlier orders")
    cold = Ledger(env=env)
    try:
        started = time.perf_counter()
        first = cold.place_order(paid[0], "bench")
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        second = cold.place_order(paid[1], "bench")
        second_s = time.perf_counter() - started
    finally:
        cold.close()
    return {
        "bench": "growth",
        "timed_per_level": timed,
        "levels": results,
        "seeding": {
            "orders": seeded,
            "seconds": round(seed_seconds, 2),
            "orders_per_s": round(seeded / seed_seconds, 1) if seed_seconds else None,
        },
        "cold_load": {
            "earlier_orders": placed,
            "first_place_order_ms": round(first_s * 1000, 3),
            "second_place_order_ms": round(second_s * 1000, 3),
            "statuses": [str(first.status), str(second.status)],
        },
        "version_conflicts": conflicts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--levels", default="0,10000,20000")
    parser.add_argument("--timed", type=int, default=200)
    args = parser.parse_args()
    levels = sorted(int(x) for x in args.levels.split(","))
    configure_logging("WARNING")  # stdout carries the JSON result alone
    source = source_version()
    with scratch_database(Database.from_url(args.url), "ledger_bench_growth_") as database:
        result = {**run(database, levels, args.timed), "source": source}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
