"""Paid but not fulfillable: the race for the last units, and the refunds that follow."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from ledger.storage import Database
from tests.shop import Shop, eventually, running_shop, stripe_calls
from tests.waiting import wait_at_rest


@pytest.fixture
def shop(database: Database) -> Iterator[Shop]:
    with running_shop(database) as s:
        yield s


def scalar(database: Database, query: str) -> int:
    with database.connect(autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def seconds_to_refund(shop: Shop, session_id: str) -> float:
    """Delivers the session's (paid, not fulfillable) checkout.session.completed: seconds
    from its answer (the refund owed) to the order refunded."""
    assert shop.deliver("checkout.session.completed", session_id).status_code == 200
    owed = time.monotonic()
    eventually(lambda: statuses(shop, [session_id]) == ["refunded"], timeout=30)
    return time.monotonic() - owed


def statuses(shop: Shop, session_ids: list[str]) -> list[str]:
    return [
        shop.api.get(f"/api/checkout-sessions/{sid}/order").json()["status"] for sid in session_ids
    ]


def test_thirty_paid_sessions_racing_for_ten_units(shop: Shop) -> None:
    shop.product("limited", unit_amount=2000, stock=10)
    sessions = [shop.checkout(shop.cart(limited=1)) for _ in range(30)]
    shop.stripe.webhook_url = None
    for sid in sessions:
        shop.stripe.complete(sid, "pay")
    deliveries = [shop.stripe.build_event("checkout.session.completed", sid) for sid in sessions]
    start = threading.Barrier(len(deliveries))
    answers: list[int] = []

    def deliver(payload: bytes, signature: str) -> None:
        start.wait()
        answers.append(shop.post_webhook(payload, signature).status_code)

    threads = [threading.Thread(target=deliver, args=d) for d in deliveries]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert answers == [200] * 30
    eventually(lambda: statuses(shop, sessions).count("refunded") == 20, timeout=30)
    final = statuses(shop, sessions)
    assert final.count("confirmed") == 10
    assert final.count("refunded") == 20
    assert shop.available("limited") == 0
    refunds = shop.stripe.refunds()
    assert len(refunds) == 20
    assert all(r["idempotency_key"] for r in refunds)
    assert len({r["payment_intent"] for r in refunds}) == 20
    assert len({r["idempotency_key"] for r in refunds}) == 20
    for r in refunds:
        assert r["amount"] == 2000
        assert r["metadata"]["order_id"]

    # Stripe delivers everything again: nothing changes, no refund is issued twice.
    for payload, signature in deliveries:
        assert shop.post_webhook(payload, signature).status_code == 200
    assert statuses(shop, sessions) == final
    assert len(shop.stripe.refunds()) == 20
    assert shop.available("limited") == 0


def test_stripe_failing_along_the_way_still_ends_in_exactly_one_refund(shop: Shop) -> None:
    shop.product("one", stock=1)
    first = shop.checkout(shop.cart(one=1))
    second = shop.checkout(shop.cart(one=1))
    shop.stripe.complete(first, "pay")
    shop.stripe.wait_for_deliveries(1)
    # The next calls fail: the webhook's retrieve and the refund worker's first tries.
    shop.stripe.fail_next(6, status=503)
    shop.stripe.complete(second, "pay")

    eventually(lambda: statuses(shop, [second]) == ["refunded"], timeout=30)
    (refund,) = shop.stripe.refunds()
    refund_calls = [
        q for q in shop.stripe.requests() if q["path"] == "/v1/refunds" and q["method"] == "POST"
    ]
    assert {q["idempotency_key"] for q in refund_calls} == {refund["idempotency_key"]}
    assert sum(q["failure_injected"] for q in shop.stripe.requests()) == 6
    assert statuses(shop, [first]) == ["confirmed"]


def test_one_hung_refund_holds_back_no_other(database: Database, shop: Shop) -> None:
    """Stripe hangs on one payment's refund (the call never answers while the hang lasts):
    every other refund is made within a second or so of being owed, the hung one fails its
    attempts (the SDK's own timeouts) and is retried on its own schedule, and once Stripe
    answers it is made: one refund per payment, each under one idempotency key."""
    shop.product("one", stock=1)
    sessions = [shop.checkout(shop.cart(one=1)) for _ in range(6)]
    shop.stripe.webhook_url = None  # each webhook delivered below, when the test says so
    for sid in sessions:
        shop.stripe.complete(sid, "pay")
    first, hung, *others = sessions
    assert shop.deliver("checkout.session.completed", first).status_code == 200  # the unit
    hung_intent = shop.stripe.payment_intent_of(hung)
    assert hung_intent is not None
    shop.stripe.delay_calls(120, path="/v1/refunds", payment_intent=hung_intent)
    assert shop.deliver("checkout.session.completed", hung).status_code == 200
    assert statuses(shop, [hung]) == ["refund_pending"]  # owed: its call now hangs

    # Owed one after another while the hung call holds (a hung attempt lasts ~3.5 s): each
    # is made as soon as owed, never after the hung one.
    waited = [seconds_to_refund(shop, sid) for sid in others]
    assert max(waited) < 2.5, waited  # a sanity bound: a hung attempt alone takes ~3.5 s
    assert statuses(shop, [hung]) == ["refund_pending"]  # still hung: nothing made for it
    pending = "SELECT count(*) FROM side_effect_retries WHERE name = 'refunds'"
    eventually(lambda: scalar(database, pending) == 1)  # failed, waiting for its retry

    shop.stripe.delay_calls(0, path="/v1/refunds", payment_intent=hung_intent)  # Stripe answers
    eventually(lambda: statuses(shop, [hung]) == ["refunded"], timeout=30)
    wait_at_rest(database, "refunds")
    refunds = shop.stripe.refunds()
    assert sorted(r["payment_intent"] for r in refunds) == sorted(
        str(shop.stripe.payment_intent_of(sid)) for sid in [hung, *others]
    )
    calls = [
        q
        for q in stripe_calls(shop.stripe, "POST", "/v1/refunds")
        if q["params"].get("payment_intent") == hung_intent
    ]
    assert len(calls) >= 2  # tried, timed out, tried again
    assert len({q["idempotency_key"] for q in calls}) == 1
    assert statuses(shop, [first]) == ["confirmed"]
