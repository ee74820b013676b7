"""The merchant's side of an order, through real parts (the ledger's HTTP server, PostgreSQL,
the stripe SDK talking to the stand-in): refunds by lines with restock or by amount, cancelling,
the Idempotency-Key, Stripe's refusals, a Dashboard refund, and the auditors' verify after all
of it."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.domain import order_id_for
from ledger.storage import Database
from tests.shop import ADMIN, Shop, running_shop
from tests.test_orders_read_model import cart_of, checkout, order, place, status_of
from tests.test_stock_holds import audit_verifies
from tests.waiting import wait_until

ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture
def shop(database: Database) -> Iterator[Shop]:
    with running_shop(database) as s:
        yield s


def post(
    shop: Shop, path: str, body: dict[str, Any] | None, key: str | None = None
) -> httpx.Response:
    headers = dict(ADMIN_AUTH)
    headers["Idempotency-Key"] = key or str(uuid.uuid4())
    return shop.api.post(path, json=body, headers=headers)


def refund(shop: Shop, order_id: str, body: dict[str, Any], key: str | None = None) -> Any:
    return post(shop, f"/api/orders/{order_id}/refunds", body, key)


def cancel(shop: Shop, order_id: str, body: dict[str, Any], key: str | None = None) -> Any:
    return post(shop, f"/api/orders/{order_id}/cancel", body, key)


def stripe_refunds(shop: Shop, order_id: str) -> list[dict[str, Any]]:
    """The refunds the stand-in made of the order's payment, oldest first."""
    mine = [r for r in shop.stripe.refunds() if r["metadata"].get("order_id") == order_id]
    return sorted(mine, key=lambda r: r["created"])


def merchant_refunds(shop: Shop, order_id: str) -> int:
    """How many refunds the order's own record holds (not a read model)."""
    recorded = shop.services.ledger.get_order(uuid.UUID(order_id))
    assert recorded is not None
    return len(recorded.book.merchant)


def two_line_order(shop: Shop) -> str:
    shop.product("mug", unit_amount=1200, stock=5)
    shop.product("tea", unit_amount=800, stock=5)
    return place(shop, "alice", mug=2, tea=1)


# ---- refunds by lines ------------------------------------------------------------------------


def test_refunding_one_line_with_restock_then_the_rest(shop: Shop, tmp_path: Path) -> None:
    order_id = two_line_order(shop)
    assert (shop.available("mug"), shop.available("tea")) == (3, 4)

    r = refund(shop, order_id, {"lines": [{"sku": "tea", "quantity": 1}], "reason": "damaged"})
    assert r.status_code == 201, r.text
    first = r.json()
    assert (first["amount"], first["status"], first["reason"]) == (800, "succeeded", "damaged")
    assert first["restocked"] == [{"sku": "tea", "quantity": 1}]
    body = order(shop, order_id)
    assert (body["status"], body["amount_refunded"]) == ("partially_refunded", 800)
    assert {i["sku"]: i["quantity_refunded"] for i in body["items"]} == {"mug": 0, "tea": 1}
    assert [(s["amount"], s["metadata"]["refund_id"]) for s in stripe_refunds(shop, order_id)] == [
        (800, first["refund_id"])
    ]
    assert (shop.available("mug"), shop.available("tea")) == (3, 5)
    assert status_of(shop.api, body["checkout_session_id"]) == "partially_refunded"

    r = refund(shop, order_id, {"lines": [{"sku": "mug", "quantity": 2}], "restock": False})
    assert r.status_code == 201, r.text
    body = order(shop, order_id)
    assert (body["status"], body["amount_refunded"]) == ("refunded", 3200)
    assert shop.available("mug") == 3  # not put back: the merchant said so

    r = refund(shop, order_id, {"lines": [{"sku": "mug", "quantity": 1}]})
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "refund_exceeds_remaining"
    r = refund(shop, order_id, {"amount": 1})
    assert r.status_code == 409 and r.json()["error"]["code"] == "refund_exceeds_remaining"
    assert len(stripe_refunds(shop, order_id)) == 2
    audit_verifies(tmp_path, shop.services.database)


def test_a_refund_larger_than_what_remains_records_and_sends_nothing(shop: Shop) -> None:
    order_id = two_line_order(shop)
    r = refund(shop, order_id, {"amount": 2000})
    assert r.status_code == 201, r.text
    refunds_before = merchant_refunds(shop, order_id)

    r = refund(shop, order_id, {"amount": 1201})  # 3200 - 2000 = 1200 remain
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "refund_exceeds_remaining"
    r = refund(shop, order_id, {"lines": [{"sku": "mug", "quantity": 3}]})
    assert r.status_code == 409 and "remain" in r.json()["error"]["message"]
    assert merchant_refunds(shop, order_id) == refunds_before
    assert [s["amount"] for s in stripe_refunds(shop, order_id)] == [2000]
    assert order(shop, order_id)["amount_refunded"] == 2000


def test_bad_refund_requests_are_refused_in_the_contracts_shape(shop: Shop) -> None:
    order_id = two_line_order(shop)
    path = f"/api/orders/{order_id}/refunds"
    r = shop.api.post(path, json={"amount": 100}, headers=ADMIN_AUTH)  # no key
    assert r.status_code == 400 and r.json()["error"]["code"] == "idempotency_key_required"
    r = shop.api.post(path, json={"amount": 100}, headers={**ADMIN_AUTH, "Idempotency-Key": ""})
    assert r.status_code == 400
    r = shop.api.post(path, json={"amount": 100}, headers={"Idempotency-Key": "k"})
    assert r.status_code == 401
    for body in ({}, {"amount": 0}, {"amount": 1, "lines": [{"sku": "mug", "quantity": 1}]}):
        r = refund(shop, order_id, body)
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", body
    r = refund(shop, order_id, {"lines": [{"sku": "nope", "quantity": 1}]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_refund"
    r = refund(shop, str(uuid.uuid4()), {"amount": 1})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_order"
    assert stripe_refunds(shop, order_id) == []


# ---- idempotency and cancelling --------------------------------------------------------------


def test_twenty_identical_cancels_make_one_refund_and_one_restock(shop: Shop) -> None:
    order_id = two_line_order(shop)
    answers: list[httpx.Response] = []
    start = threading.Barrier(20)

    def cancel_once() -> None:
        with httpx.Client(base_url=shop.url, timeout=30) as api:
            start.wait()
            headers = {**ADMIN_AUTH, "Idempotency-Key": "cancel-1"}
            body = {"reason": "customer changed their mind"}
            answers.append(api.post(f"/api/orders/{order_id}/cancel", json=body, headers=headers))

    threads = [threading.Thread(target=cancel_once) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert [a.status_code for a in answers] == [200] * 20, [a.text for a in answers]
    assert len({a.text for a in answers}) == 1  # twenty identical answers
    body = answers[0].json()
    assert (body["status"], body["amount_refunded"]) == ("cancelled", 3200)
    assert [s["amount"] for s in stripe_refunds(shop, order_id)] == [3200]
    assert (shop.available("mug"), shop.available("tea")) == (5, 5)  # put back once

    r = cancel(shop, order_id, {"reason": "another reason"}, key="cancel-1")
    assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_key_reused"
    r = refund(shop, order_id, {"amount": 1}, key="cancel-1")  # another endpoint
    assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_key_reused"
    r = cancel(shop, order_id, {"reason": "customer changed their mind"})  # a new key
    assert r.status_code == 409 and r.json()["error"]["code"] == "order_not_cancellable"
    r = refund(shop, order_id, {"amount": 1})
    assert r.status_code == 409 and r.json()["error"]["code"] == "refund_exceeds_remaining"


def test_the_same_key_answers_the_same_even_after_the_order_moved_on(shop: Shop) -> None:
    order_id = two_line_order(shop)
    first = refund(shop, order_id, {"amount": 500}, key="k-1")
    assert first.status_code == 201
    assert refund(shop, order_id, {"amount": 700}).status_code == 201
    again = refund(shop, order_id, {"amount": 500}, key="k-1")
    assert (again.status_code, again.json()) == (201, first.json())
    assert [s["amount"] for s in stripe_refunds(shop, order_id)] == [500, 700]


def test_cancelling_after_a_partial_refund_refunds_the_rest_and_restocks_the_rest(
    shop: Shop,
) -> None:
    order_id = two_line_order(shop)
    r = refund(shop, order_id, {"lines": [{"sku": "mug", "quantity": 1}], "restock": False})
    assert r.status_code == 201
    r = cancel(shop, order_id, {"restock": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["amount_refunded"]) == ("cancelled", 3200)
    assert [s["amount"] for s in stripe_refunds(shop, order_id)] == [1200, 2000]
    # The refunded mug stays out (damaged, say); the unrefunded mug and the tea come back.
    assert (shop.available("mug"), shop.available("tea")) == (4, 5)
    assert {i["sku"]: i["quantity_refunded"] for i in body["items"]} == {"mug": 2, "tea": 1}


def test_cancelling_before_capture_releases_the_authorization(database: Database) -> None:
    with running_shop(database, LEDGER_CAPTURE="manual") as shop:
        shop.product("mug", unit_amount=1200, stock=5)
        session_id = checkout(shop.api, cart_of(shop.api, "alice", mug=1))
        shop.stripe.webhook_url = None  # the payment's news is delivered below, by hand
        shop.stripe.complete(session_id, "pay")
        intent = shop.stripe.payment_intent_of(session_id)
        # Stripe cannot capture for now (the cancel, at its own path, goes through).
        shop.stripe.fail_next(1000, 503, path=f"/v1/payment_intents/{intent}/capture")
        assert shop.deliver("checkout.session.completed", session_id).status_code == 200
        order_id = str(order_id_for(session_id))
        assert order(shop, order_id)["amount_captured"] == 0  # authorized only, for now
        r = refund(shop, order_id, {"amount": 100})
        assert r.status_code == 409 and "not captured" in r.json()["error"]["message"]

        r = cancel(shop, order_id, {})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "cancelled"
        assert shop.available("mug") == 5

        def released() -> bool:
            return any(
                pi["id"] == intent and pi["status"] == "canceled"
                for pi in shop.stripe.payment_intents()
            )

        wait_until(released, 30)
        assert stripe_refunds(shop, order_id) == []
        assert order(shop, order_id)["amount_captured"] == 0


# ---- Stripe's refusals and the Dashboard -----------------------------------------------------


def test_a_refund_stripe_refuses_for_good_flags_the_order_and_holds_back_no_other(
    shop: Shop,
) -> None:
    shop.product("mug", unit_amount=1200, stock=5)
    refused_id = place(shop, "alice", mug=1)
    other_id = place(shop, "bob", mug=1)
    # Stripe refuses every refund of a disputed charge (and keeps that answer for the key).
    dispute = shop.stripe.open_dispute(order(shop, refused_id)["checkout_session_id"])
    r = refund(shop, refused_id, {"amount": 500})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "failed"
    assert order(shop, refused_id)["status"] == "refund_failed"

    r = refund(shop, other_id, {"amount": 500})
    assert (r.status_code, r.json()["status"]) == (201, "succeeded")
    assert order(shop, other_id)["status"] == "partially_refunded"

    # The bank decides for the shop; the merchant acts again: a new refund clears the flag.
    shop.stripe.close_dispute(dispute["id"], "won")
    r = refund(shop, refused_id, {"amount": 500})
    assert (r.status_code, r.json()["status"]) == (201, "succeeded")
    assert order(shop, refused_id)["status"] == "partially_refunded"


def test_a_refund_stripe_cannot_take_now_is_made_later_by_the_worker(shop: Shop) -> None:
    order_id = two_line_order(shop)
    shop.stripe.fail_next(4, 503, path="/v1/refunds")
    r = refund(shop, order_id, {"amount": 900})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "pending"
    wait_until(lambda: order(shop, order_id)["amount_refunded"] == 900, 30)
    assert [s["amount"] for s in stripe_refunds(shop, order_id)] == [900]


def test_a_dashboard_partial_refund_moves_the_status_without_restocking(shop: Shop) -> None:
    order_id = two_line_order(shop)
    session_id = order(shop, order_id)["checkout_session_id"]
    shop.stripe.dashboard_refund(session_id, 1000)
    wait_until(lambda: order(shop, order_id)["amount_refunded"] == 1000, 20)
    body = order(shop, order_id)
    assert body["status"] == "partially_refunded"
    assert (shop.available("mug"), shop.available("tea")) == (3, 4)
    # What remains for the merchant is what the Dashboard left.
    r = refund(shop, order_id, {"amount": 2201})
    assert r.status_code == 409
    r = refund(shop, order_id, {"amount": 2200})
    assert r.status_code == 201, r.text
    assert order(shop, order_id)["status"] == "refunded"


def test_the_resync_settles_a_merchant_refund_whose_news_never_came(shop: Shop) -> None:
    order_id = two_line_order(shop)
    shop.stripe.webhook_url = None  # Stripe's events are lost from here on
    shop.stripe.refund_status = "pending"
    r = refund(shop, order_id, {"amount": 700})
    assert (r.status_code, r.json()["status"]) == (201, "pending")
    [made] = stripe_refunds(shop, order_id)
    shop.stripe.settle_refund(made["id"], "succeeded")

    report = shop.services.resync.run_once(older_than=timedelta(0))
    assert report.outcomes["merchant_refunds"] == {"partially_refunded": 1}
    body = order(shop, order_id)
    assert (body["amount_refunded"], body["refunds"][0]["status"]) == (700, "succeeded")
