"""Helpers every bench script shares, kept in one copy so that their outputs stay comparable.

The scripts run as `python bench/<script>.py`, so Python puts bench/ first on sys.path and they
import this module as `common`. It imports nothing of the ledger at module level: hot_product.py
starts its Stripe stand-in from its own script, and that process has no use for the ledger
(`seed_log` imports the application service when called).
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psycopg import sql

if TYPE_CHECKING:
    from ledger.storage import Database

REPO_DIR = Path(__file__).resolve().parents[1]


def progress(message: str) -> None:
    """A timestamped line on stderr: stdout carries the JSON result alone."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentiles(samples: list[float]) -> dict[str, float | None]:
    """Nearest-rank percentiles of seconds, in milliseconds (2 decimals); None when empty.

    One format for every bench (p50, p90, p95, p99, max, mean), so results can be compared
    across scripts and runs without translating key names or precision.
    """
    if not samples:
        return dict.fromkeys(("p50", "p90", "p95", "p99", "max", "mean"))
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {
        "p50": at(0.50),
        "p90": at(0.90),
        "p95": at(0.95),
        "p99": at(0.99),
        "max": round(ordered[-1] * 1000, 2),
        "mean": round(statistics.fmean(ordered) * 1000, 2),
    }


def source_version() -> dict[str, Any]:
    """The commit the ledger runs from and whether src/ differs from it (read-only git).

    A result is only worth comparing with another when both ran the same code.
    """

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", "--no-optional-locks", *args],
                cwd=REPO_DIR,
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout

    changed = git("status", "--porcelain", "--", "src")
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip() or None,
        "src_changed": [line[3:] for line in changed.splitlines()],
    }


def create_database(admin: Database, prefix: str) -> Database:
    """A new, empty database on `admin`'s server, named `prefix` and a random suffix.

    Every run measures from an empty store, and runs side by side never share one.
    """
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    with admin.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return replace(admin, params={**admin.params, "dbname": name})


def drop_database(admin: Database, name: str) -> None:
    """Drops `name` with FORCE: a run cut short may leave connections to it open."""
    with admin.connect(autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextmanager
def scratch_database(admin: Database, prefix: str) -> Iterator[Database]:
    """A database of `create_database` for the block, dropped afterwards whatever happens."""
    database = create_database(admin, prefix)
    try:
        yield database
    finally:
        drop_database(admin, database.params["dbname"])


# ---- a log of real domain events, seeded in bulk --------------------------------------------

SEED_SKU = "bench"
SEED_NAME = "Bench mug"
SEED_UNIT_AMOUNT = 1250
SEED_CART_CHUNK = 500  # carts saved in one commit
SEED_ORDER_CHUNK = 200  # orders decided in one commit (`place_orders`)
# A cart's CartCreated, CartLineSet and CheckoutStarted, then its order's commit: OrderPlaced,
# PaymentConfirmed, StockReserved, CartConverted.
SEED_EVENTS_PER_ORDER = 7


def count_events(database: Database) -> int:
    """How many events the log holds (exact, unlike the head: positions may have gaps)."""
    with database.connect() as conn:
        row = conn.execute("SELECT count(*) FROM ledger_events").fetchone()
    return 0 if row is None else int(row[0])


def log_head(database: Database) -> int:
    """The log's last position (0 when empty): what a read model must reach to be caught up."""
    with database.connect() as conn:
        row = conn.execute("SELECT coalesce(max(notification_id), 0) FROM ledger_events")
        found = row.fetchone()
    return 0 if found is None else int(found[0])


def seed_log(
    database: Database, events: int, order_chunk: int = SEED_ORDER_CHUNK
) -> dict[str, Any]:
    """Grows the log on `database` to exactly `events` events, through the application service
    (`Ledger`, no HTTP, no workers), and returns what it wrote: `events`, `seconds` and
    `events_per_s` (untimed elsewhere; carts' saving included).

    One product (`SEED_SKU`), given stock for every order to come; carts with one unit and a
    started checkout saved `SEED_CART_CHUNK` to a commit, their orders placed with
    `place_orders` `order_chunk` to a commit (7 events an order, see
    `SEED_EVENTS_PER_ORDER`); the last few events (fewer than 7) are one cart's line changes.
    Called again on the same database, it goes on from where the log stands.
    """
    from ledger.application import Ledger
    from ledger.domain import Cart, PaidSession

    def carts_with_checkout(count: int) -> tuple[list[Cart], list[PaidSession]]:
        carts: list[Cart] = []
        paid: list[PaidSession] = []
        for _ in range(count):
            cart = Cart(user_id=None, cause="bench")
            cart.set_line(SEED_SKU, 1, "bench")
            session_id = f"cs_bench_{uuid.uuid4().hex}"
            cart.start_checkout(
                session_id,
                lines=[
                    {
                        "sku": SEED_SKU,
                        "name": SEED_NAME,
                        "quantity": 1,
                        "unit_amount": SEED_UNIT_AMOUNT,
                    }
                ],
                amount_total=SEED_UNIT_AMOUNT,
                currency="usd",
                cause="bench",
            )
            carts.append(cart)
            paid.append(PaidSession(session_id, cart.id, SEED_UNIT_AMOUNT, "usd", "pi_bench"))
        return carts, paid

    started = time.perf_counter()
    ledger = Ledger(env=database.eventsourcing_env())  # creates the log's table when missing
    try:
        before = count_events(database)
        if before > events:
            raise ValueError(f"the log already holds {before} events, more than {events}")
        ledger.put_product(SEED_SKU, SEED_NAME, SEED_UNIT_AMOUNT, "usd", "bench")
        orders_to_come = (events - before) // SEED_EVENTS_PER_ORDER + 1
        ledger.adjust_stock(SEED_SKU, orders_to_come, "bench", "bench")
        count = count_events(database)
        last_report = time.monotonic()
        while (orders := min(SEED_CART_CHUNK, (events - count) // SEED_EVENTS_PER_ORDER)) > 0:
            carts, paid = carts_with_checkout(orders)
            ledger.save(*carts)
            for start in range(0, orders, order_chunk):
                ledger.place_orders(paid[start : start + order_chunk], cause="bench")
            count = count_events(database)
            if time.monotonic() - last_report >= 2:
                last_report = time.monotonic()
                progress(f"  seeded {count:,}/{events:,} events")
        if count < events:  # one cart, then its line changed back and forth
            cart = Cart(user_id=None, cause="bench")
            for i in range(events - count - 1):
                cart.set_line(SEED_SKU, 1 + i % 2, "bench")
            ledger.save(cart)
    finally:
        ledger.close()
    seconds = time.perf_counter() - started
    count = count_events(database)
    if count != events:
        raise RuntimeError(f"seeded the log to {count} events, wanted {events}")
    written = events - before
    return {
        "events": written,
        "seconds": round(seconds, 2),
        "events_per_s": round(written / seconds, 1) if seconds else None,
    }


# ---- orders of several users, with a mix of outcomes ----------------------------------------

# Of every `len(SEED_ORDER_MIX)` orders, in turn, what becomes of each (see `seed_orders`).
SEED_ORDER_MIX = (
    *(("confirmed",) * 16),
    "confirmed_manual",  # authorized only: confirmed, its capture requested (captured 0)
    "refund_pending",  # paid, not fulfillable (amount mismatch): its refund owed
    "refunded",  # the same, then Stripe's refund succeeded (a row in its `refunds`)
    "released",  # authorized only, not fulfillable: the authorization released
)
SEED_GUEST_EVERY = 10  # one order in 10 (at random) is a guest's: its cart has no user_id


def seed_orders(
    database: Database,
    orders: int,
    users: int,
    order_chunk: int = SEED_ORDER_CHUNK,
) -> dict[str, Any]:
    """Adds `orders` decided orders to the log on `database`, through the application service
    (`Ledger`, no HTTP, no workers): real domain events, saved in batches. Returns `orders`,
    `events` (written), `seconds`, `orders_per_s`, `events_per_s`, and `statuses` (how many
    orders end in each status) and `users`.

    One product (`SEED_SKU`), given stock for every order. Each order's cart belongs to one of
    `bench-user-0` .. `bench-user-{users - 1}`, drawn at random (seeded: the same users every
    run), or to a guest (no user_id, one in `SEED_GUEST_EVERY`); it holds 1 to 3 units
    and a started checkout; carts are saved `SEED_CART_CHUNK` to a commit, their orders decided
    with `place_orders` `order_chunk` to a commit. Outcomes follow `SEED_ORDER_MIX` in turn:
    confirmed (automatic or manual capture); paid a cent more than priced, so rejected with its
    refund owed (`refund_pending`) or, authorized only, its authorization released
    (`released`); and `refunded`: rejected, then Stripe's refund followed to success on the
    order (`Order.follow_refund`), those orders saved together in one more commit.
    """
    from ledger.application import Ledger
    from ledger.domain import Cart, Order, PaidSession

    draw = random.Random(17)

    def outcome(i: int) -> str:
        return SEED_ORDER_MIX[i % len(SEED_ORDER_MIX)]

    def carts_with_checkout(first: int, count: int) -> tuple[list[Cart], list[PaidSession]]:
        carts: list[Cart] = []
        paid: list[PaidSession] = []
        for i in range(first, first + count):
            guest = draw.randrange(SEED_GUEST_EVERY) == 0
            user = draw.randrange(users)
            cart = Cart(user_id=None if guest else f"bench-user-{user}", cause="bench")
            quantity = 1 + i % 3
            cart.set_line(SEED_SKU, quantity, "bench")
            session_id = f"cs_bench_{uuid.uuid4().hex}"
            amount = quantity * SEED_UNIT_AMOUNT
            lines = [
                {
                    "sku": SEED_SKU,
                    "name": SEED_NAME,
                    "quantity": quantity,
                    "unit_amount": SEED_UNIT_AMOUNT,
                }
            ]
            cart.start_checkout(
                session_id, lines=lines, amount_total=amount, currency="usd", cause="bench"
            )
            carts.append(cart)
            kind = outcome(i)
            paid.append(
                PaidSession(
                    session_id,
                    cart.id,
                    amount + 1 if kind in ("refund_pending", "refunded", "released") else amount,
                    "usd",
                    f"pi_bench_{i}",
                    authorized_only=kind in ("confirmed_manual", "released"),
                )
            )
        return carts, paid

    started = time.perf_counter()
    statuses: dict[str, int] = {}
    ledger = Ledger(env=database.eventsourcing_env())  # creates the log's table when missing
    before = count_events(database)
    try:
        ledger.put_product(SEED_SKU, SEED_NAME, SEED_UNIT_AMOUNT, "usd", "bench")
        ledger.adjust_stock(SEED_SKU, 3 * orders, "bench", "bench")
        last_report = time.monotonic()
        for first in range(0, orders, SEED_CART_CHUNK):
            carts, paid = carts_with_checkout(first, min(SEED_CART_CHUNK, orders - first))
            ledger.save(*carts)
            refunded: list[Order] = []
            for start in range(0, len(paid), order_chunk):
                placed = ledger.place_orders(paid[start : start + order_chunk], cause="bench")
                for offset, order in enumerate(placed):
                    if outcome(first + start + offset) == "refunded":
                        amount, _ = order.charged
                        order.follow_refund(
                            f"re_bench_{order.id.hex}", "succeeded", amount, None, "bench"
                        )
                        refunded.append(order)
                    statuses[str(order.status)] = statuses.get(str(order.status), 0) + 1
            ledger.save(*refunded)
            if time.monotonic() - last_report >= 2:
                last_report = time.monotonic()
                progress(f"  seeded {first + len(carts):,}/{orders:,} orders")
    finally:
        ledger.close()
    seconds = time.perf_counter() - started
    written = count_events(database) - before
    return {
        "orders": orders,
        "events": written,
        "users": users,
        "statuses": dict(sorted(statuses.items())),
        "seconds": round(seconds, 2),
        "orders_per_s": round(orders / seconds, 1) if seconds else None,
        "events_per_s": round(written / seconds, 1) if seconds else None,
    }


def run_until_caught_up(
    database: Database, projections: list[Any], timeout: float
) -> tuple[int, dict[str, float], float]:
    """Runs `projections` in `workers.Workers` until each has applied the log up to its head
    (and its tracking row says so), then stops them: (the head, seconds until each reached it,
    seconds in all)."""
    from workers import Workers

    target = log_head(database)
    names = [p.name for p in projections]
    workers = Workers(database, projections, poll_interval=0.5, lock_interval=0.5)
    reached: dict[str, float] = {}
    started = time.perf_counter()
    workers.start()
    try:
        deadline = time.monotonic() + timeout
        while len(reached) < len(names):
            status = workers.status()
            for name in names:
                if name not in reached and status[name]["position"] >= target:
                    reached[name] = time.perf_counter() - started
            if time.monotonic() > deadline:
                raise RuntimeError(f"the projections did not catch up: {status}")
            time.sleep(0.02)
        for name in names:  # the tracking table agrees (committed, not only known here)
            if not workers.wait_until_processed(name, target, timeout=60):
                raise RuntimeError(f"{name} did not reach position {target}")
        return target, reached, time.perf_counter() - started
    finally:
        workers.stop()
