"""Manual capture (`LEDGER_CAPTURE=manual`, holds off), through real parts: the card is only
authorized at checkout, captured once the order's stock is committed, and an order that cannot
be served releases its authorization instead of refunding it. Capture and cancel happen once
each at Stripe, whatever is redelivered, killed or restarted.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

from ledger.storage import Database
from stripe_standin import StripeStandIn
from tests.processes import serving, working
from tests.shop import STRIPE_KEY, Shop, done_once_each, running_shop, stripe_calls
from tests.test_stock_holds import (
    SKU,
    add_product,
    audit_verifies,
    available,
    deliver_all,
    ledger_env,
    new_cart,
    on_hand,
    report_matches_stripe,
    stand_in_serving,
    statuses,
    wait_for_statuses,
)
from tests.waiting import wait_at_rest, wait_until

UNIT_AMOUNT = 4000


def processors(database: Database) -> list[str]:
    """Every read model and side-effect worker that has run on this database."""
    with database.connect(autocommit=True) as conn:
        rows = conn.execute("SELECT name FROM projection_tracking").fetchall()
    return sorted(str(r[0]) for r in rows)


def wait_all_at_rest(database: Database, timeout: float = 60) -> None:
    """Until every read model and worker has handled every event recorded so far, with
    nothing left to retry: whatever those events could make it do (a capture, a cancel), it
    has done."""
    wait_at_rest(database, *processors(database), timeout=timeout)


def intent_statuses(stand_in: StripeStandIn, intents: set[str]) -> Counter[str]:
    return Counter(pi["status"] for pi in stand_in.payment_intents() if pi["id"] in intents)


def intents_of(stand_in: StripeStandIn, sessions: list[str]) -> dict[str, str]:
    """Each session's PaymentIntent: {intent id: session id}."""
    return {str(stand_in.payment_intent_of(sid)): sid for sid in sessions}


def order_body(api: httpx.Client, session_id: str) -> dict[str, Any]:
    r = api.get(f"/api/checkout-sessions/{session_id}/order")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# ------------------------------------------------------------------ the last unit


@pytest.fixture
def manual(database: Database) -> Iterator[Shop]:
    with running_shop(database, LEDGER_CAPTURE="manual") as shop:
        yield shop


def test_two_authorized_customers_for_the_last_unit_one_captured_one_released_no_refund(
    manual: Shop, database: Database, tmp_path: Path
) -> None:
    shop = manual
    shop.product("mug", unit_amount=UNIT_AMOUNT, stock=1)
    sessions = [shop.checkout(shop.cart(mug=1)) for _ in range(2)]  # no holds: both start
    creations = stripe_calls(shop.stripe, "POST", "/v1/checkout/sessions")
    assert [c["params"]["payment_intent_data"]["capture_method"] for c in creations] == [
        "manual",
        "manual",
    ]

    # Both customers authorize their cards; then Stripe delivers both events, twice each.
    shop.stripe.webhook_url = None
    for sid in sessions:
        shop.stripe.complete(sid, "pay")
    intents = intents_of(shop.stripe, sessions)
    assert intent_statuses(shop.stripe, set(intents)) == {"requires_capture": 2}
    answers = deliver_all(shop.stripe, [(shop.url, sid) for sid in sessions * 2])
    assert answers == [200] * 4

    wait_for_statuses(shop.api, sessions, {"confirmed": 1, "released": 1}, timeout=30)
    wait_until(
        lambda: intent_statuses(shop.stripe, set(intents)) == {"succeeded": 1, "canceled": 1},
        30,
        lambda: intent_statuses(shop.stripe, set(intents)),
    )
    by_status = {order_body(shop.api, sid)["status"]: sid for sid in sessions}
    kept, released = by_status["confirmed"], by_status["released"]
    released_body = order_body(shop.api, released)
    assert released_body["order_id"] is not None
    assert (released_body["amount_total"], released_body["currency"]) == (UNIT_AMOUNT, "usd")

    # Redelivered once more after the capture and the cancel: nothing happens twice.
    assert deliver_all(shop.stripe, [(shop.url, sid) for sid in sessions]) == [200] * 2
    wait_all_at_rest(database)
    pi_of = {sid: pi for pi, sid in intents.items()}
    assert done_once_each(shop.stripe, "capture") == {pi_of[kept]: 1}
    assert done_once_each(shop.stripe, "cancel") == {pi_of[released]: 1}
    assert shop.stripe.refunds() == []  # released, not refunded: the customer never paid
    charge = {c["payment_intent"]: c for c in shop.stripe.charges()}
    assert (charge[pi_of[kept]]["captured"], charge[pi_of[released]]["captured"]) == (True, False)
    assert statuses(shop.api, sessions) == {"confirmed": 1, "released": 1}
    assert shop.available("mug") == 0 and on_hand(shop.api, "mug") == 0
    audit_verifies(tmp_path, database)
    report_matches_stripe(tmp_path, database, shop.stripe)


# ------------------------------------------------------------------ a lapsed authorization


def test_an_authorization_that_lapses_before_capture_fails_the_order_and_returns_its_stock(
    tmp_path: Path, database: Database
) -> None:
    with stand_in_serving() as (stand_in, stripe_url):
        env = ledger_env(database, stripe_url, LEDGER_CAPTURE="manual")
        with (
            serving(tmp_path, "--no-workers", **env) as url,
            httpx.Client(base_url=url, timeout=30) as api,
        ):
            add_product(api, SKU, 1)
            cart_id = new_cart(api, url, SKU)
            r = api.post(f"/api/carts/{cart_id}/checkout")
            assert r.status_code == 201, r.text
            sid = r.json()["checkout_session_id"]
            stand_in.complete(sid, "pay")
            assert deliver_all(stand_in, [(url, sid)]) == [200]
            # The order is placed on the authorization; with no worker running, its capture
            # waits, and meanwhile Stripe gives the card hold up.
            stand_in.lapse_authorization(sid)

            with working(tmp_path, **env):
                wait_until(lambda: api.get(f"/api/products/{SKU}").status_code == 200, 60)
                wait_until(
                    lambda: order_body(api, sid)["status"] == "payment_failed",
                    60,
                    lambda: order_body(api, sid),
                )
                wait_until(lambda: available(api, SKU) == 1, 30, lambda: available(api, SKU))
                assert on_hand(api, SKU) == 1
                assert api.get(f"/api/carts/{cart_id}").json()["status"] == "open"
                captures = stripe_calls(stand_in, "POST", "/capture")
                assert captures and {c["status"] for c in captures} == {400}
                assert done_once_each(stand_in, "capture") == {
                    str(stand_in.payment_intent_of(sid)): 0
                }
                assert stand_in.refunds() == []

                # The stock came back for real: the same cart buys it again.
                r = api.post(f"/api/carts/{cart_id}/checkout")
                assert r.status_code == 201, r.text
                again = r.json()["checkout_session_id"]
                stand_in.complete(again, "pay")
                assert deliver_all(stand_in, [(url, again)] * 2) == [200, 200]
                pi = str(stand_in.payment_intent_of(again))
                wait_until(
                    lambda: intent_statuses(stand_in, {pi}) == {"succeeded": 1},
                    60,
                    lambda: intent_statuses(stand_in, {pi}),
                )
                wait_until(lambda: order_body(api, again)["status"] == "confirmed", 30)
                assert api.get(f"/api/carts/{cart_id}").json()["status"] == "converted"
                assert available(api, SKU) == 0
    audit_verifies(tmp_path, database)
    report_matches_stripe(tmp_path, database, stand_in)


def test_a_released_authorization_captured_in_the_dashboard_first_is_refunded(
    tmp_path: Path, database: Database
) -> None:
    # The order cannot be served, so the ledger will cancel its authorization; before its
    # worker runs, a person captures the payment in Stripe's Dashboard. Stripe then refuses to
    # cancel it: the customer paid for nothing, so the ledger refunds what was captured.
    with stand_in_serving() as (stand_in, stripe_url):
        env = ledger_env(database, stripe_url, LEDGER_CAPTURE="manual")
        with (
            serving(tmp_path, "--no-workers", **env) as url,
            httpx.Client(base_url=url, timeout=30) as api,
        ):
            add_product(api, SKU, 1)
            sessions = []
            for _ in range(2):
                r = api.post(f"/api/carts/{new_cart(api, url, SKU)}/checkout")
                assert r.status_code == 201, r.text
                sessions.append(r.json()["checkout_session_id"])
            for sid in sessions:
                stand_in.complete(sid, "pay")
            # The first delivered takes the unit; the second is released (with no workers
            # here, nothing is captured or cancelled yet, and no read model is kept).
            for sid in sessions:
                assert deliver_all(stand_in, [(url, sid)]) == [200]
            released = sessions[1]
            dashboard = stripe.StripeClient(STRIPE_KEY, base_addresses={"api": stripe_url})
            dashboard.v1.payment_intents.capture(str(stand_in.payment_intent_of(released)))

            with working(tmp_path, **env):
                # (404 until the worker's read model has caught up.)
                status = f"/api/checkout-sessions/{released}/order"
                wait_until(
                    lambda: api.get(status).json().get("status") == "refunded",
                    60,
                    lambda: api.get(status).text,
                )
                wait_all_at_rest(database)
            pi = str(stand_in.payment_intent_of(released))
            assert [r["payment_intent"] for r in stand_in.refunds()] == [pi]
            assert statuses(api, sessions) == {"confirmed": 1, "refunded": 1}
            assert available(api, SKU) == 0
    audit_verifies(tmp_path, database)
    report_matches_stripe(tmp_path, database, stand_in)


# ------------------------------------------------------------------ exactly once at Stripe


def test_capture_and_cancel_happen_once_each_under_redelivery_a_killed_worker_and_a_restart(
    tmp_path: Path, database: Database
) -> None:
    customers, units = 30, 20
    with stand_in_serving() as (stand_in, stripe_url):
        env = ledger_env(database, stripe_url, LEDGER_CAPTURE="manual")
        with (
            serving(tmp_path, "--no-workers", **env) as url,
            httpx.Client(base_url=url, timeout=30) as api,
        ):
            add_product(api, SKU, units)
            sessions = []
            for _ in range(customers):
                r = api.post(f"/api/carts/{new_cart(api, url, SKU)}/checkout")
                assert r.status_code == 201, r.text
                sessions.append(str(r.json()["checkout_session_id"]))
                stand_in.complete(sessions[-1], "pay")
            intents = intents_of(stand_in, sessions)
            every_event_twice = [(url, sid) for sid in sessions * 2]
            assert Counter(deliver_all(stand_in, every_event_twice)) == {200: 2 * customers}
            assert stripe_calls(stand_in, "POST", "/capture") == []  # no worker yet

            # Each call to Stripe takes a while now, so the worker is killed mid-batch.
            stand_in.delay_seconds = 0.2

            def carried_out() -> int:
                return sum(done_once_each(stand_in, "capture").values()) + sum(
                    done_once_each(stand_in, "cancel").values()
                )

            with working(tmp_path, "work-1", **env) as first_worker:
                wait_until(lambda: carried_out() >= 3, 60, carried_out)
                first_worker.send_signal(signal.SIGKILL)
                assert first_worker.wait(timeout=10) == -signal.SIGKILL
            at_kill = carried_out()
            assert at_kill < customers, at_kill  # killed with captures and cancels still owed

            assert Counter(deliver_all(stand_in, every_event_twice)) == {200: 2 * customers}
            with working(tmp_path, "work-2", **env):
                wait_until(
                    lambda: (
                        intent_statuses(stand_in, set(intents))
                        == {"succeeded": units, "canceled": customers - units}
                    ),
                    90,
                    lambda: intent_statuses(stand_in, set(intents)),
                )
                wait_all_at_rest(database)

        # A restart: a new `ledger serve`, its workers in the same process, and every event
        # delivered again.
        stand_in.delay_seconds = 0
        with (
            serving(tmp_path, **env) as url,
            httpx.Client(base_url=url, timeout=30) as api,
        ):
            every_event = [(url, sid) for sid in sessions]
            assert Counter(deliver_all(stand_in, every_event)) == {200: customers}
            wait_all_at_rest(database)
            wait_for_statuses(
                api, sessions, {"confirmed": units, "released": customers - units}, timeout=30
            )
            outcome: dict[str, set[str]] = {"confirmed": set(), "released": set()}
            for pi, sid in intents.items():
                outcome[order_body(api, sid)["status"]].add(pi)
            assert done_once_each(stand_in, "capture") == dict.fromkeys(outcome["confirmed"], 1)
            assert done_once_each(stand_in, "cancel") == dict.fromkeys(outcome["released"], 1)
            assert stand_in.refunds() == []
            assert available(api, SKU) == 0 and on_hand(api, SKU) == 0
    audit_verifies(tmp_path, database)
    report_matches_stripe(tmp_path, database, stand_in)
