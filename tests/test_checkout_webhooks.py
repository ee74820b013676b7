"""Stripe Checkout end to end: the ledger and the stand-in in real servers, the real SDK."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from ledger.domain import inventory_item_id
from ledger.locks import advisory_lock_key
from ledger.storage import Database
from stripe_standin import sign_payload
from tests.conftest import count_rows
from tests.shop import OLD_WEBHOOK_SECRET, STRIPE_KEY, Shop, eventually, running_shop

EVENTS = "ledger_events"


@pytest.fixture
def shop(database: Database) -> Iterator[Shop]:
    with running_shop(database) as s:
        yield s


def stock_reservations(database: Database) -> int:
    with database.connect() as conn:
        row = conn.execute(
            f"SELECT count(*) FROM {EVENTS} WHERE topic LIKE %s", ("%.StockReserved",)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_checkout_creates_a_stripe_session_for_the_priced_cart(shop: Shop) -> None:
    shop.product("mug", unit_amount=1250, stock=5)
    shop.product("tea", unit_amount=800, stock=5)
    cart_id = shop.cart(mug=2, tea=1)

    r = shop.api.post(f"/api/carts/{cart_id}/checkout")

    assert r.status_code == 201, r.text
    body = r.json()
    assert body["checkout_session_id"].startswith("cs_")
    assert body["url"].startswith(shop.stripe.public_base_url)
    (session,) = shop.stripe.sessions()
    assert session["id"] == body["checkout_session_id"]
    assert session["amount_total"] == 2 * 1250 + 800
    assert session["metadata"] == {"cart_id": cart_id, "user_id": "user-1"}
    assert session["client_reference_id"] == cart_id
    assert session["success_url"] == (
        f"{shop.url}/checkout/success?session_id={{CHECKOUT_SESSION_ID}}"
    )
    (create,) = [q for q in shop.stripe.requests() if q["path"] == "/v1/checkout/sessions"]
    assert create["idempotency_key"]
    assert shop.get_cart(cart_id)["status"] == "checking_out"
    assert shop.status(body["checkout_session_id"]) == "processing"


def test_checkout_refuses_short_stock_and_empty_carts(shop: Shop) -> None:
    shop.product("mug", stock=1)
    cart_id = shop.cart(mug=3)

    r = shop.api.post(f"/api/carts/{cart_id}/checkout")
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "out_of_stock"
    assert r.json()["error"]["items"] == [{"sku": "mug", "requested": 3, "available": 1}]

    empty = shop.cart()
    r = shop.api.post(f"/api/carts/{empty}/checkout")
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "empty_cart"
    assert shop.stripe.sessions() == []


def test_paying_places_the_order_takes_stock_and_converts_the_cart(shop: Shop) -> None:
    shop.product("mug", stock=5)
    cart_id = shop.cart(mug=2)
    session_id = shop.checkout(cart_id)

    shop.stripe.complete(session_id, "pay")
    shop.stripe.wait_for_deliveries(1)

    (delivery,) = shop.stripe.deliveries()
    assert delivery["status"] == 200
    order = shop.order(session_id)
    assert order is not None and order.status == "confirmed"
    assert shop.available("mug") == 3
    assert shop.get_cart(cart_id)["status"] == "converted"
    poll = shop.api.get(f"/api/checkout-sessions/{session_id}/order").json()
    assert poll == {
        "checkout_session_id": session_id,
        "status": "confirmed",
        "order_id": str(order.id),
        "amount_total": 2 * 1250,
        "currency": "usd",
        "items": [{"sku": "mug", "name": "Product mug", "quantity": 2, "unit_amount": 1250}],
    }


def test_one_event_delivered_ten_times_eight_at_once_places_one_order(
    shop: Shop, database: Database
) -> None:
    shop.product("mug", stock=5)
    session_id = shop.checkout(shop.cart(mug=1))
    shop.stripe.webhook_url = None  # we deliver by hand
    shop.stripe.complete(session_id, "pay")
    payload, signature = shop.stripe.build_event("checkout.session.completed", session_id)

    statuses: list[int] = []
    start = threading.Barrier(8)

    def deliver() -> None:
        start.wait()
        statuses.append(shop.post_webhook(payload, signature).status_code)

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses += [shop.post_webhook(payload, signature).status_code for _ in range(2)]

    assert statuses == [200] * 10
    assert stock_reservations(database) == 1
    assert shop.available("mug") == 4
    assert shop.order(session_id).status == "confirmed"


def test_async_success_arriving_before_completed(shop: Shop) -> None:
    shop.product("mug", stock=5)
    cart_id = shop.cart(mug=1)
    session_id = shop.checkout(cart_id)
    shop.stripe.webhook_url = None
    shop.stripe.complete(session_id, "pay_later")
    shop.stripe.complete(session_id, "async_succeed")

    assert shop.deliver("checkout.session.async_payment_succeeded", session_id).status_code == 200
    assert shop.order(session_id).status == "confirmed"
    assert shop.deliver("checkout.session.completed", session_id).status_code == 200

    assert shop.order(session_id).status == "confirmed"
    assert shop.available("mug") == 4
    assert shop.get_cart(cart_id)["status"] == "converted"


def test_delayed_payment_waits_then_clears(shop: Shop) -> None:
    shop.product("mug", stock=5)
    cart_id = shop.cart(mug=1)
    session_id = shop.checkout(cart_id)

    shop.stripe.complete(session_id, "pay_later")
    shop.stripe.wait_for_deliveries(1)
    assert shop.order(session_id).status == "awaiting_payment"
    assert shop.status(session_id) == "awaiting_payment"
    assert shop.available("mug") == 5  # nothing taken before the money clears
    assert shop.get_cart(cart_id)["status"] == "checking_out"

    shop.stripe.complete(session_id, "async_succeed")
    shop.stripe.wait_for_deliveries(2)
    assert shop.order(session_id).status == "confirmed"
    assert shop.available("mug") == 4


def test_delayed_payment_that_fails_reopens_the_cart(shop: Shop) -> None:
    shop.product("mug", stock=5)
    cart_id = shop.cart(mug=1)
    session_id = shop.checkout(cart_id)

    shop.stripe.complete(session_id, "pay_later")
    shop.stripe.complete(session_id, "async_fail")
    shop.stripe.wait_for_deliveries(2)

    assert shop.order(session_id).status == "payment_failed"
    assert shop.status(session_id) == "payment_failed"
    assert shop.get_cart(cart_id)["status"] == "open"
    assert shop.available("mug") == 5


def test_expired_session_reopens_the_cart_without_an_order(shop: Shop) -> None:
    shop.product("mug", stock=5)
    cart_id = shop.cart(mug=1)
    session_id = shop.checkout(cart_id)

    shop.stripe.complete(session_id, "expire")
    shop.stripe.wait_for_deliveries(1)

    assert shop.order(session_id) is None
    assert shop.status(session_id) == "expired"
    assert shop.get_cart(cart_id)["status"] == "open"


def test_bad_signatures_are_refused_and_record_nothing(shop: Shop, database: Database) -> None:
    shop.product("mug", stock=5)
    session_id = shop.checkout(shop.cart(mug=1))
    shop.stripe.webhook_url = None
    shop.stripe.complete(session_id, "pay")
    payload, good = shop.stripe.build_event("checkout.session.completed", session_id)
    before = count_rows(database, EVENTS)
    stale = sign_payload(payload, shop.stripe.webhook_secret, int(time.time()) - 301)
    tampered = payload.replace(b'"livemode": false', b'"livemode": true')
    assert tampered != payload
    not_json = b"this is not json"

    cases = {
        "wrong secret": (payload, sign_payload(payload, "whsec_somebody_else")),
        "stale": (payload, stale),
        "missing header": (payload, None),
        "malformed header": (payload, "t=abc,v1="),
        "tampered": (tampered, good),
        "not json": (not_json, sign_payload(not_json, shop.stripe.webhook_secret)),
        "not an event": (b"[1, 2]", sign_payload(b"[1, 2]", shop.stripe.webhook_secret)),
    }
    for name, (body, signature) in cases.items():
        r = shop.post_webhook(body, signature)
        assert r.status_code == 400, name
        assert r.json()["error"]["code"], name

    assert count_rows(database, EVENTS) == before
    assert shop.order(session_id) is None


def test_the_previous_secret_still_signs_during_rotation(shop: Shop) -> None:
    shop.product("mug", stock=5)
    session_id = shop.checkout(shop.cart(mug=1))
    shop.stripe.webhook_url = None
    shop.stripe.complete(session_id, "pay")
    payload, _ = shop.stripe.build_event("checkout.session.completed", session_id)

    r = shop.post_webhook(payload, sign_payload(payload, OLD_WEBHOOK_SECRET))

    assert r.status_code == 200
    assert r.json() == {"received": True}
    assert shop.order(session_id).status == "confirmed"


def test_oversized_bodies_are_refused(shop: Shop) -> None:
    body = b"{" + b" " * (1024 * 1024) + b"}"
    r = shop.post_webhook(body, sign_payload(body, shop.stripe.webhook_secret))
    assert r.status_code == 413


def test_unhandled_event_types_are_acknowledged_and_ignored(shop: Shop, database: Database) -> None:
    before = count_rows(database, EVENTS)
    payload = json.dumps(
        {"id": "evt_x", "object": "event", "type": "charge.refunded", "data": {"object": {}}}
    ).encode()
    r = shop.post_webhook(payload, sign_payload(payload, shop.stripe.webhook_secret))
    assert r.status_code == 200
    assert count_rows(database, EVENTS) == before


def test_a_session_this_ledger_never_created_places_no_order(
    shop: Shop, database: Database
) -> None:
    # Another shop on the same Stripe account, with its own cart id.
    r = shop.stripe.app  # the stand-in is shared: create a session behind the ledger's back
    import stripe

    # The same account's key: the stand-in accepts only the one it was given.
    client = stripe.StripeClient(STRIPE_KEY, base_addresses={"api": shop.stripe.public_base_url})
    foreign = client.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "line_items": [
                {
                    "price_data": {
                        "currency": "usd",
                        "unit_amount": 500,
                        "product_data": {"name": "Elsewhere"},
                    },
                    "quantity": 1,
                }
            ],
            "metadata": {"cart_id": "0b6f5d5e-8d7a-4a8c-9d63-2f1f2b7a1c11"},
            "success_url": "https://elsewhere.example/ok",
            "cancel_url": "https://elsewhere.example/no",
        }
    )
    assert r is not None
    before = count_rows(database, EVENTS)
    shop.stripe.webhook_url = None
    shop.stripe.complete(foreign.id, "pay")

    r2 = shop.deliver("checkout.session.completed", foreign.id)

    assert r2.status_code == 200
    assert count_rows(database, EVENTS) == before
    assert shop.order(foreign.id) is None
    unknown = shop.api.get(f"/api/checkout-sessions/{foreign.id}/order")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "unknown_checkout_session"
    metrics = shop.api.get("/metrics").text
    assert 'ledger_anomalies_total{kind="not_started_by_this_ledger"}' in metrics
    assert "ledger_webhook_seconds_bucket" in metrics


def test_stripe_failing_gives_5xx_then_a_clean_success(shop: Shop, database: Database) -> None:
    shop.product("mug", stock=5)
    session_id = shop.checkout(shop.cart(mug=1))
    shop.stripe.webhook_url = None
    shop.stripe.complete(session_id, "pay")
    payload, signature = shop.stripe.build_event("checkout.session.completed", session_id)
    before = count_rows(database, EVENTS)

    shop.stripe.fail_next(2, status=500)  # the first try and the SDK's one retry
    r = shop.post_webhook(payload, signature)
    assert r.status_code >= 500
    assert count_rows(database, EVENTS) == before

    r = shop.post_webhook(payload, signature)
    assert r.status_code == 200
    assert shop.order(session_id).status == "confirmed"
    assert stock_reservations(database) == 1


def test_a_slow_stripe_gets_a_5xx_well_within_five_seconds(shop: Shop) -> None:
    shop.product("mug", stock=5)
    session_id = shop.checkout(shop.cart(mug=1))
    shop.stripe.webhook_url = None
    shop.stripe.complete(session_id, "pay")
    payload, signature = shop.stripe.build_event("checkout.session.completed", session_id)
    # Longer than each of the gateway's tries (1.5 s read timeout), short enough that the
    # stand-in's abandoned handlers finish before the server stops.
    shop.stripe.delay_seconds = 4

    started = time.monotonic()
    r = shop.post_webhook(payload, signature)
    elapsed = time.monotonic() - started
    shop.stripe.delay_seconds = 0

    assert r.status_code >= 500
    # The point of the test: a hung dependency is answered within the webhook's budget (the
    # gateway's tries time out; Stripe itself waits about ten seconds), not after Stripe's 4 s.
    assert elapsed < 5
    assert shop.order(session_id) is None
    eventually(lambda: shop.post_webhook(payload, signature).status_code == 200)
    assert shop.order(session_id).status == "confirmed"


def test_a_decision_stuck_behind_a_lock_is_busy_not_an_outage(
    shop: Shop, database: Database
) -> None:
    """Another writer holds the product's lock past the webhook's wait: that webhook answers
    5xx (Stripe retries), but the store is not declared down: other requests go on at once."""
    shop.product("mug", stock=5)
    shop.product("tea", stock=5)
    mug_session, tea_session = shop.checkout(shop.cart(mug=1)), shop.checkout(shop.cart(tea=1))
    shop.stripe.complete(mug_session, "pay")
    shop.stripe.complete(tea_session, "pay")
    key = advisory_lock_key(inventory_item_id("mug"))
    with database.connect(autocommit=True) as other_writer:
        other_writer.execute("SELECT pg_advisory_lock(%s)", (key,))
        stuck = shop.deliver("checkout.session.completed", mug_session)
        assert stuck.status_code == 503, stuck.text
        r = shop.deliver("checkout.session.completed", tea_session)  # no open breaker
        assert r.status_code == 200, r.text
        assert shop.status(tea_session) == "confirmed"
        other_writer.execute("SELECT pg_advisory_unlock(%s)", (key,))
    r = shop.deliver("checkout.session.completed", mug_session)  # Stripe's retry
    assert r.status_code == 200, r.text
    assert shop.status(mug_session) == "confirmed"
    assert shop.available("mug") == 4
