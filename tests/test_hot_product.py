"""A flash sale: one product, many paid sessions at once, two `ledger serve` processes.

Stripe delivers each event at least once, to whichever process its load balancer picks, many at
a time. Every delivery must be answered 200 (contention is never an outage), and every paid
session must end in exactly one outcome: stock for the first 250, a refund for the rest.
"""

from __future__ import annotations

import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from ledger.domain import inventory_item_id
from ledger.storage import Database
from stripe_standin import StripeStandIn
from tests.processes import serving
from tests.shop import ADMIN, STRIPE_KEY, WEBHOOK_SECRET, deliver, paid_session
from web.serving import run_in_thread

SESSIONS = 300
UNITS = 250
CONCURRENT_DELIVERIES = 32


def test_300_paid_sessions_for_250_units_over_two_processes(
    tmp_path: Path, database: Database
) -> None:
    stand_in = StripeStandIn(
        api_key=STRIPE_KEY,
        webhook_url=None,
        webhook_secret=WEBHOOK_SECRET,
        public_base_url="http://127.0.0.1",
    )
    with run_in_thread(stand_in.app) as stripe_server:
        env = {
            "LEDGER_DATABASE_URL": database.conninfo_url(),
            "LEDGER_ADMIN_TOKEN": ADMIN,
            "STRIPE_API_KEY": STRIPE_KEY,
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_API_BASE": stripe_server.url,
        }
        with (
            serving(tmp_path, **env) as first,
            serving(tmp_path, **env) as second,
            httpx.Client(base_url=first, timeout=30) as api,
        ):
            admin = {"Authorization": f"Bearer {ADMIN}"}
            product = {"name": "Limited print", "unit_amount": 4000, "currency": "usd"}
            assert api.put("/api/products/print", json=product, headers=admin).status_code == 201
            r = api.post("/api/products/print/stock", json={"quantity": UNITS}, headers=admin)
            assert r.status_code == 200, r.text

            sessions = [paid_session(api, stand_in, "print") for _ in range(SESSIONS)]
            # Each event twice, once to each process, in random order, 32 in flight.
            deliveries = [(url, sid) for sid in sessions for url in (first, second)]
            random.Random(7).shuffle(deliveries)
            limits = httpx.Limits(max_connections=CONCURRENT_DELIVERIES)
            with (
                httpx.Client(timeout=30, limits=limits) as stripe,
                ThreadPoolExecutor(CONCURRENT_DELIVERIES) as pool,
            ):
                answers = list(pool.map(lambda d: deliver(stripe, stand_in, *d), deliveries))

            assert Counter(answers) == {200: 2 * SESSIONS}
            outcomes = Counter(
                api.get(f"/api/checkout-sessions/{sid}/order").json()["status"] for sid in sessions
            )
            refunds = outcomes["refund_pending"] + outcomes["refunded"]
            assert outcomes["confirmed"] == UNITS and refunds == SESSIONS - UNITS, outcomes
            assert api.get("/api/products/print").json()["available"] == 0

    with database.connect() as conn:
        rows = conn.execute(
            "SELECT"
            " count(*) FILTER (WHERE topic LIKE '%%.StockReserved'),"
            " count(*) FILTER (WHERE topic LIKE '%%Order.OrderPlaced'),"
            " count(*) FILTER (WHERE topic LIKE '%%.RefundRequested')"
            " FROM ledger_events WHERE originator_id = %s OR topic LIKE '%%Order.%%'",
            (inventory_item_id("print"),),
        ).fetchone()
    # One outcome per session: 300 orders, 250 reservations, 50 refunds requested.
    assert rows == (UNITS, SESSIONS, SESSIONS - UNITS)
