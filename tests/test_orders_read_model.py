"""The `orders` read model and its endpoints: the merchant's list and detail
(`LEDGER_ADMIN_TOKEN`) and a customer's orders for the storefront's own server
(`LEDGER_STOREFRONT_TOKEN`), through a running shop, the Stripe stand-in and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.domain import order_id_for
from ledger.storage import Database
from projections import verify_all
from tests.processes import run_ledger
from tests.shop import (
    ADMIN,
    AUDITOR,
    OTHER_STOREFRONT,
    STOREFRONT,
    Shop,
    running_shop,
    stripe_calls,
)
from tests.waiting import wait_until


@pytest.fixture
def shop(database: Database) -> Iterator[Shop]:
    with running_shop(database) as s:
        yield s


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN_AUTH = bearer(ADMIN)
STOREFRONT_AUTH = bearer(STOREFRONT)


def cart_of(api: httpx.Client, user_id: str | None, **lines: int) -> str:
    r = api.post("/api/carts", json={"user_id": user_id})
    assert r.status_code == 201, r.text
    cart_id: str = r.json()["cart_id"]
    for sku, quantity in lines.items():
        r = api.put(f"/api/carts/{cart_id}/items/{sku}", json={"quantity": quantity})
        assert r.status_code == 200, r.text
    return cart_id


def checkout(api: httpx.Client, cart_id: str) -> str:
    r = api.post(f"/api/carts/{cart_id}/checkout")
    assert r.status_code == 201, r.text
    session_id: str = r.json()["checkout_session_id"]
    return session_id


def status_of(api: httpx.Client, session_id: str) -> str:
    r = api.get(f"/api/checkout-sessions/{session_id}/order")
    assert r.status_code == 200, r.text
    status: str = r.json()["status"]
    return status


def place(shop: Shop, user_id: str | None, status: str = "confirmed", **lines: int) -> str:
    """A paid order of `user_id`'s cart, settled as `status`: its order id."""
    return place_over(shop.api, shop, user_id, status, **lines)


def place_over(
    api: httpx.Client, shop: Shop, user_id: str | None, status: str, **lines: int
) -> str:
    session_id = checkout(api, cart_of(api, user_id, **lines))
    shop.stripe.complete(session_id, "pay")
    wait_until(lambda: status_of(api, session_id) == status, 20, lambda: status_of(api, session_id))
    return str(order_id_for(session_id))


def order(shop: Shop, order_id: str) -> dict[str, Any]:
    r = shop.api.get(f"/api/orders/{order_id}", headers=ADMIN_AUTH)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def listing(
    shop: Shop, path: str = "/api/orders", auth: dict[str, str] = ADMIN_AUTH, **params: Any
) -> dict[str, Any]:
    r = shop.api.get(path, params={k: v for k, v in params.items() if v is not None}, headers=auth)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def ids(page: dict[str, Any]) -> list[str]:
    return [o["order_id"] for o in page["orders"]]


def every_page(
    shop: Shop, path: str = "/api/orders", auth: dict[str, str] = ADMIN_AUTH, **params: Any
) -> list[str]:
    found: list[str] = []
    after: str | None = None
    while True:
        page = listing(shop, path, auth, **params, after=after)
        found += ids(page)
        after = page["next_after"]
        if after is None:
            return found


# ---- the order's shape -------------------------------------------------------------------------


def test_a_confirmed_order_has_the_contracts_shape(shop: Shop) -> None:
    shop.product("mug", unit_amount=1250, stock=5)
    shop.product("pen", unit_amount=300, stock=5)
    before = datetime.now().astimezone()
    order_id = place(shop, "alice", mug=2, pen=1)

    body = order(shop, order_id)
    created_at = datetime.fromisoformat(body.pop("created_at"))
    assert created_at >= before
    session_id = body.pop("checkout_session_id")
    assert str(order_id_for(session_id)) == order_id
    assert body == {
        "order_id": order_id,
        "user_id": "alice",
        "status": "confirmed",
        "currency": "usd",
        "amount_total": 2800,
        "amount_captured": 2800,
        "amount_refunded": 0,
        "items": [
            {
                "sku": "mug",
                "name": "Product mug",
                "quantity": 2,
                "unit_amount": 1250,
                "quantity_refunded": 0,
            },
            {
                "sku": "pen",
                "name": "Product pen",
                "quantity": 1,
                "unit_amount": 300,
                "quantity_refunded": 0,
            },
        ],
        "refunds": [],
    }
    # The list holds the same order, in the same words.
    listed = listing(shop)["orders"]
    assert [o["order_id"] for o in listed] == [order_id]
    assert listed[0]["created_at"] == created_at.isoformat()

    # A cart without a user: `user_id` null.
    anonymous = place(shop, None, mug=1)
    assert order(shop, anonymous)["user_id"] is None

    for unknown in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        r = shop.api.get(f"/api/orders/{unknown}", headers=ADMIN_AUTH)
        assert r.status_code == 404, r.text
        assert r.json()["error"]["code"] == "unknown_order"
    # A checkout started but never paid has no order to show.
    unpaid = checkout(shop.api, cart_of(shop.api, "alice", mug=1))
    r = shop.api.get(f"/api/orders/{order_id_for(unpaid)}", headers=ADMIN_AUTH)
    assert r.status_code == 404


def test_an_order_refunded_for_lack_of_stock_shows_its_refund_pending_then_succeeded(
    shop: Shop, database: Database, tmp_path: Path
) -> None:
    shop.product("rare", unit_amount=700, stock=1)
    first = checkout(shop.api, cart_of(shop.api, "alice", rare=1))
    second = checkout(shop.api, cart_of(shop.api, "bob", rare=1))
    shop.stripe.complete(first, "pay")
    wait_until(lambda: status_of(shop.api, first) == "confirmed", 20)
    shop.stripe.hold_refunds(second)  # its refund stays pending at Stripe for now
    shop.stripe.complete(second, "pay")
    order_id = str(order_id_for(second))

    wait_until(lambda: len(shop.stripe.refunds()) == 1, 20)
    refund_id = shop.stripe.refunds()[0]["id"]
    wait_until(lambda: order(shop, order_id)["refunds"] != [], 20, lambda: order(shop, order_id))
    pending = order(shop, order_id)
    assert pending["status"] == "refund_pending"
    assert (pending["amount_total"], pending["amount_captured"]) == (700, 700)
    assert pending["amount_refunded"] == 0
    assert pending["user_id"] == "bob"
    [refund] = pending["refunds"]
    created = datetime.fromisoformat(refund.pop("created_at"))
    assert created >= datetime.fromisoformat(pending["created_at"])
    assert refund == {
        "refund_id": refund_id,
        "amount": 700,
        "status": "pending",
        "reason": "out_of_stock",
        "restocked": [],
    }

    shop.stripe.settle_refund(refund_id, "succeeded")
    wait_until(lambda: status_of(shop.api, second) == "refunded", 20)
    refunded = order(shop, order_id)
    assert refunded["status"] == "refunded"
    assert refunded["amount_refunded"] == 700
    assert [(r["refund_id"], r["status"], r["amount"]) for r in refunded["refunds"]] == [
        (refund_id, "succeeded", 700)
    ]
    # Filters by status: the refunded order is not among the confirmed ones.
    assert ids(listing(shop, status="refunded")) == [order_id]
    assert ids(listing(shop, status="confirmed")) == [str(order_id_for(first))]
    assert ids(listing(shop, status="refund_pending")) == []

    assert verify_all(database)["orders"] == []
    done = run_ledger(tmp_path, "audit", "verify", LEDGER_DATABASE_URL=database.conninfo_url())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "VIOLATION" not in done.stdout


def test_a_dashboard_refund_shows_in_amount_refunded_without_restocking(shop: Shop) -> None:
    shop.product("mug", unit_amount=1250, stock=5)
    order_id = place(shop, "alice", mug=2)
    session_id = order(shop, order_id)["checkout_session_id"]
    assert shop.available("mug") == 3

    dashboard = shop.stripe.dashboard_refund(session_id)
    wait_until(
        lambda: order(shop, order_id)["amount_refunded"] == 2500, 20, lambda: order(shop, order_id)
    )
    body = order(shop, order_id)
    assert [(r["refund_id"], r["amount"], r["status"], r["reason"]) for r in body["refunds"]] == [
        (dashboard["id"], 2500, "succeeded", None)
    ]
    assert body["amount_captured"] == 2500
    # In the same words as the storefront's status; and no stock comes back by itself.
    assert body["status"] == status_of(shop.api, session_id)
    assert shop.available("mug") == 3


# ---- the list ----------------------------------------------------------------------------------


def test_the_list_is_newest_first_and_filters_by_status_and_user(shop: Shop) -> None:
    shop.product("mug", unit_amount=1000, stock=20)
    placed = [place(shop, user, mug=1) for user in ("alice", "bob", "alice", None, "carol")]

    assert ids(listing(shop)) == placed[::-1]
    assert ids(listing(shop, user_id="alice")) == [placed[2], placed[0]]
    assert ids(listing(shop, user_id="nobody")) == []
    assert ids(listing(shop, status="confirmed", user_id="bob")) == [placed[1]]
    assert ids(listing(shop, status="refunded")) == []

    # Pages of two: newest first, each order once, `next_after` null on the last page.
    first = listing(shop, limit=2)
    assert ids(first) == [placed[4], placed[3]] and first["next_after"]
    second = listing(shop, limit=2, after=first["next_after"])
    assert ids(second) == [placed[2], placed[1]] and second["next_after"]
    third = listing(shop, limit=2, after=second["next_after"])
    assert ids(third) == [placed[0]] and third["next_after"] is None
    assert every_page(shop, limit=1) == placed[::-1]
    assert every_page(shop, user_id="alice", limit=1) == [placed[2], placed[0]]
    assert listing(shop, limit=5)["next_after"] is None  # exactly the rest: no empty page
    # `next_after` is opaque, but any of its form is taken: past the end starts at the newest.
    assert ids(listing(shop, after="f" * 16)) == placed[::-1]

    # Bad query parameters: 422 in the house shape, naming the parameter.
    for params, field in (
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "+5"}, "limit"),
        ({"after": "not-a-cursor"}, "after"),
        ({"after": "12"}, "after"),
        ({"status": "shipped"}, "status"),
        ({"user_id": "x" * 201}, "user_id"),
    ):
        r = shop.api.get("/api/orders", params=params, headers=ADMIN_AUTH)
        assert r.status_code == 422, (params, r.text)
        error = r.json()["error"]
        assert error["code"] == "validation_error"
        assert [f["field"] for f in error["fields"]] == [field]
    assert len(listing(shop, limit=200)["orders"]) == 5


def test_paging_lists_every_order_exactly_once_while_orders_are_being_placed(
    shop: Shop,
) -> None:
    shop.product("mug", unit_amount=500, stock=100)
    existing = [place(shop, f"user-{i % 3}", mug=1) for i in range(10)]
    placed_meanwhile: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def keep_placing() -> None:
        try:
            with httpx.Client(base_url=shop.url, timeout=30) as api:
                while not stop.is_set() and len(placed_meanwhile) < 30:
                    placed_meanwhile.append(place_over(api, shop, "user-0", "confirmed", mug=1))
        except BaseException as error:  # reported by the test below
            errors.append(error)

    writer = threading.Thread(target=keep_placing)
    writer.start()
    try:
        seen: list[str] = []
        after: str | None = None
        pages = 0
        while True:
            # Another order is placed between every two pages.
            def another_placed(n: int = pages) -> bool:
                return len(placed_meanwhile) > n or bool(errors)

            wait_until(another_placed, 30)
            page = listing(shop, limit=3, after=after)
            pages += 1
            seen += ids(page)
            after = page["next_after"]
            if after is None:
                break
    finally:
        stop.set()
        writer.join()
    assert not errors, errors
    assert pages >= 4
    assert len(seen) == len(set(seen)), "an order listed twice"
    assert set(existing) <= set(seen), "an order missed"
    assert set(seen) <= set(existing) | set(placed_meanwhile)
    # Newest first throughout: what was placed before paging began, in reverse.
    assert [i for i in seen if i in existing] == existing[::-1]
    # Once they are all placed, a fresh paging finds every one of them, once.
    everything = every_page(shop, limit=7)
    assert sorted(everything) == sorted(existing + placed_meanwhile)


# ---- the storefront's own server ---------------------------------------------------------------


def test_the_user_endpoint_lists_only_that_users_orders(shop: Shop) -> None:
    shop.product("mug", unit_amount=1000, stock=20)
    alice = [place(shop, "alice", mug=1) for _ in range(3)]
    place(shop, "bob", mug=1)
    place(shop, None, mug=1)

    page = listing(shop, "/api/users/alice/orders", STOREFRONT_AUTH)
    assert ids(page) == alice[::-1] and page["next_after"] is None
    assert page["orders"][0] == order(shop, alice[-1])  # the same order as the merchant's
    assert every_page(shop, "/api/users/alice/orders", STOREFRONT_AUTH, limit=2) == alice[::-1]
    other = bearer(OTHER_STOREFRONT)  # any of the comma-separated tokens
    assert len(ids(listing(shop, "/api/users/bob/orders", other))) == 1
    assert ids(listing(shop, "/api/users/nobody/orders", STOREFRONT_AUTH)) == []
    r = shop.api.get("/api/users/alice/orders", params={"limit": "0"}, headers=STOREFRONT_AUTH)
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"


def test_each_token_opens_only_its_own_endpoints(shop: Shop) -> None:
    shop.product("mug", unit_amount=1000, stock=5)
    order_id = place(shop, "alice", mug=1)
    admin_paths = ["/api/orders", f"/api/orders/{order_id}"]
    storefront_path = "/api/users/alice/orders"

    def status(path: str, headers: dict[str, str]) -> int:
        return shop.api.get(path, headers=headers).status_code

    for path in admin_paths:
        assert status(path, ADMIN_AUTH) == 200
        for wrong in (
            {},
            STOREFRONT_AUTH,
            bearer(AUDITOR),
            bearer("nope"),
            {"Authorization": ADMIN},
        ):
            r = shop.api.get(path, headers=wrong)
            assert r.status_code == 401, (path, wrong)
            assert r.json()["error"]["code"] == "unauthorized"
    assert status(storefront_path, STOREFRONT_AUTH) == 200
    for wrong in (
        {},
        ADMIN_AUTH,
        bearer(AUDITOR),
        bearer("nope"),
        bearer(f"{STOREFRONT},{OTHER_STOREFRONT}"),
    ):
        assert status(storefront_path, wrong) == 401, wrong
    # 401 before the query is even looked at.
    assert status("/api/orders?limit=0", {}) == 401


def test_without_a_storefront_token_the_user_endpoint_answers_401(database: Database) -> None:
    with running_shop(database, LEDGER_STOREFRONT_TOKEN=None) as shop:
        for headers in ({}, STOREFRONT_AUTH, ADMIN_AUTH, bearer("x")):
            r = shop.api.get("/api/users/alice/orders", headers=headers)
            assert r.status_code == 401, headers


# ---- manual capture ----------------------------------------------------------------------------


def test_manual_capture_shows_what_was_captured_and_what_was_released(
    database: Database,
) -> None:
    with running_shop(database, LEDGER_CAPTURE="manual") as shop:
        shop.product("rare", unit_amount=900, stock=1)
        first = checkout(shop.api, cart_of(shop.api, "alice", rare=1))
        second = checkout(shop.api, cart_of(shop.api, "bob", rare=1))
        shop.stripe.complete(first, "pay")
        wait_until(lambda: status_of(shop.api, first) == "confirmed", 20)
        captured = str(order_id_for(first))
        wait_until(lambda: order(shop, captured)["amount_captured"] == 900, 20)
        assert order(shop, captured)["amount_total"] == 900

        shop.stripe.complete(second, "pay")
        wait_until(lambda: status_of(shop.api, second) == "released", 20)
        released = order(shop, str(order_id_for(second)))
        assert released["status"] == "released"
        assert (released["amount_total"], released["amount_captured"]) == (900, 0)
        assert released["refunds"] == [] and released["amount_refunded"] == 0
        assert ids(listing(shop, status="released")) == [released["order_id"]]
        assert verify_all(database)["orders"] == []


def test_a_refused_capture_turns_the_listed_order_payment_failed(database: Database) -> None:
    with running_shop(database, LEDGER_CAPTURE="manual") as shop:
        shop.product("mug", unit_amount=800, stock=3)
        session_id = checkout(shop.api, cart_of(shop.api, "alice", mug=1))
        # The first capture attempt fails for a while (the SDK tries twice); meanwhile the
        # authorization lapses, so the worker's next attempt is refused for good.
        shop.stripe.webhook_url = None
        shop.stripe.complete(session_id, "pay")
        intent = shop.stripe.payment_intent_of(session_id)
        shop.stripe.fail_next(2, status=500, path=f"/v1/payment_intents/{intent}/capture")
        assert shop.deliver("checkout.session.completed", session_id).status_code == 200
        wait_until(lambda: len(stripe_calls(shop.stripe, "POST", "/capture")) >= 2, 20)
        order_id = str(order_id_for(session_id))
        body = order(shop, order_id)
        assert (body["status"], body["amount_total"], body["amount_captured"]) == (
            "confirmed",
            800,
            0,  # authorized, not captured yet
        )
        shop.stripe.lapse_authorization(session_id)

        wait_until(lambda: status_of(shop.api, session_id) == "payment_failed", 30)
        body = order(shop, order_id)
        assert (body["status"], body["amount_total"], body["amount_captured"]) == (
            "payment_failed",
            800,
            0,
        )
        assert ids(listing(shop, status="payment_failed")) == [order_id]
        assert verify_all(database)["orders"] == []
