"""A slow Stripe slows only what needs it (the contract's "Operations"): while Stripe's API hangs,
the storefront's status polls answer from the read model at once, catalog reads answer as they
do without the hang, webhooks answer 5xx within their budget, and once Stripe answers again the
sessions settle. Through real parts: the ledger and the stand-in in real HTTP servers, the real
SDK, a real PostgreSQL.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import httpx

from ledger.checkout import Outcome
from ledger.payments import PaymentProviderUnavailable
from ledger.storage import Database
from tests.shop import Shop, deliver, eventually, running_shop
from tests.waiting import wait_until
from web.order_status_poll import PollFulfillment
from web.routes.stripe_webhooks import WEBHOOK_BUDGET_SECONDS

SESSIONS = 60
HUNG_WEBHOOKS = 8
CATALOG_READS = 20
# Longer than the SDK gives one call (two attempts of 1.5 s and a pause between them): every
# call made while it lasts gives up.
HANG_SECONDS = 5.0
# Not a performance claim: a catalog read answers in milliseconds, and took 2-3 s when polls
# waited on Stripe in the pool every request shares. Only a read stuck behind Stripe fails it.
SANITY_SECONDS = 1.0
# Time for the answer to travel and for a loaded 2-core machine, on top of the server's budget.
WEBHOOK_MARGIN_SECONDS = 1.5


def timed(call: Callable[[], int]) -> tuple[int, float, float]:
    """`call`'s answer, how long it took, and when it ended (monotonic)."""
    started = time.monotonic()
    status = call()
    ended = time.monotonic()
    return status, ended - started, ended


def catalog_reads(client: httpx.Client, sku: str, n: int) -> list[float]:
    """The seconds each of `n` reads of the product took; every one must answer 200."""
    took = []
    for _ in range(n):
        started = time.monotonic()
        r = client.get(f"/api/products/{sku}")
        took.append(time.monotonic() - started)
        assert r.status_code == 200, r.text
    return took


def poll(client: httpx.Client, session_id: str) -> tuple[int, str | None]:
    r = client.get(f"/api/checkout-sessions/{session_id}/order")
    return r.status_code, r.json().get("status") if r.status_code == 200 else r.text


def paid_in_flight(shop: Shop, n: int) -> list[str]:
    """`n` sessions paid at Stripe whose webhook never came: in flight for the ledger."""
    shop.stripe.webhook_url = None
    sessions = []
    for _ in range(n):
        session_id = shop.checkout(shop.cart(mug=1))
        shop.stripe.complete(session_id, "pay")
        sessions.append(session_id)
    return sessions


def test_while_stripe_hangs_polls_and_catalog_reads_answer_and_webhooks_fail_within_budget(
    database: Database,
) -> None:
    with running_shop(database) as shop:
        shop.product("mug", stock=SESSIONS + 5)
        sessions = paid_in_flight(shop, SESSIONS)
        spare_cart = shop.cart(mug=1)
        limits = httpx.Limits(max_connections=SESSIONS + HUNG_WEBHOOKS + 8)
        with (
            httpx.Client(base_url=shop.url, timeout=30, limits=limits) as client,
            ThreadPoolExecutor(SESSIONS + HUNG_WEBHOOKS + 1) as pool,
        ):
            without_hang = catalog_reads(client, "mug", CATALOG_READS)

            shop.stripe.delay_seconds = HANG_SECONDS
            hung = [
                pool.submit(timed, partial(deliver, client, shop.stripe, shop.url, sid))
                for sid in sessions[:HUNG_WEBHOOKS]
            ]
            checkout = pool.submit(
                timed, lambda: client.post(f"/api/carts/{spare_cart}/checkout").status_code
            )
            polls = [pool.submit(poll, client, sid) for sid in sessions]
            answers = [p.result() for p in polls]
            during_hang = catalog_reads(client, "mug", CATALOG_READS)
            reads_done = time.monotonic()
            webhooks = [h.result() for h in hung]
            checkout_status, checkout_took, _ = checkout.result()

        # Every poll answered what the read model knows (Stripe is asked in the background).
        assert answers == [(200, "processing")] * SESSIONS
        # The reads answered while the hang lasted, before any hung webhook gave up on Stripe.
        assert reads_done < min(ended for _, _, ended in webhooks)
        assert max(during_hang) < SANITY_SECONDS, (without_hang, during_hang)
        print(
            "catalog read median without/with the hang:",
            f"{statistics.median(without_hang) * 1000:.1f} ms /",
            f"{statistics.median(during_hang) * 1000:.1f} ms",
        )
        # The webhooks asked Stripe, which did not answer: 5xx, so Stripe retries, in time.
        for status, took, _ in webhooks:
            assert status == 503
            assert took < WEBHOOK_BUDGET_SECONDS + WEBHOOK_MARGIN_SECONDS, took
        assert checkout_status == 503
        assert checkout_took < WEBHOOK_BUDGET_SECONDS + WEBHOOK_MARGIN_SECONDS, checkout_took

        # Stripe answers again: polling on settles every session, with no webhook at all.
        shop.stripe.delay_seconds = 0
        latest: dict[str, Any] = {}

        def all_confirmed() -> bool:
            latest.update({sid: poll(shop.api, sid) for sid in sessions})
            return all(answer == (200, "confirmed") for answer in latest.values())

        wait_until(all_confirmed, 45, lambda: Counter(latest.values()), interval=0.5)
        assert shop.available("mug") == 5


# ---- the background refresh's own rules, with a checkout that waits until told ------------


class GatedCheckout:
    """Stands in for `Checkout.fulfill_checkout`: each call waits until the gate opens."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.calls: Counter[str] = Counter()
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def fulfill_checkout(self, session_id: str, cause: str) -> Outcome:
        with self._lock:
            self.calls[session_id] += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            self.gate.wait(10)
            if session_id == "cs_unavailable":
                raise PaymentProviderUnavailable("Stripe is not answering")
            return Outcome(session_id, "processing")
        finally:
            with self._lock:
                self.running -= 1


def test_background_refreshes_are_deduplicated_rate_limited_and_bounded() -> None:
    checkout = GatedCheckout()
    refreshes = PollFulfillment(checkout, min_interval=0.2, concurrency=2)  # type: ignore[arg-type]
    try:
        assert refreshes.request_refresh("cs_a", "test")
        # One in flight per session: a second poll meanwhile asks nothing more.
        assert not refreshes.request_refresh("cs_a", "test")
        for sid in ("cs_b", "cs_c", "cs_d", "cs_unavailable"):
            assert refreshes.request_refresh(sid, "test")
        wait_until(lambda: checkout.running == 2)
        checkout.gate.set()
        wait_until(lambda: refreshes.in_flight == 0)
        assert checkout.most_at_once == 2
        assert checkout.calls == Counter(
            {"cs_a": 1, "cs_b": 1, "cs_c": 1, "cs_d": 1, "cs_unavailable": 1}
        )
        # Asked a moment ago: not again yet; a few moments later, again (Stripe's failure
        # included: it only made that look come to nothing).
        assert not refreshes.request_refresh("cs_a", "test")
        time.sleep(0.25)
        assert refreshes.request_refresh("cs_a", "test")
        assert refreshes.request_refresh("cs_unavailable", "test")
        eventually(lambda: refreshes.in_flight == 0)
        assert checkout.calls["cs_a"] == 2
    finally:
        refreshes.close()
    # Once closed, nothing more is started.
    assert not refreshes.request_refresh("cs_e", "test")
