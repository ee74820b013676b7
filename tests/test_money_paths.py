"""Money never stuck or lost: refunds followed until Stripe settles them, delayed payments
decided by the PaymentIntent's status, missed events resynced, disputes and refunds made in
Stripe's Dashboard recorded. The ledger and the stand-in in real servers, the real SDK."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.storage import Database
from tests.processes import run_ledger
from tests.shop import STRIPE_KEY, WEBHOOK_SECRET, Shop, eventually, running_shop

EVENTS = "ledger_events"


@pytest.fixture
def shop(database: Database) -> Iterator[Shop]:
    with running_shop(database) as s:
        yield s


def settles_as(shop: Shop, session_id: str, status: str, timeout: float = 20) -> None:
    eventually(lambda: shop.status(session_id) == status, timeout=timeout)


def metric(shop: Shop, name: str, **labels: str) -> float:
    text = shop.api.get("/metrics").text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(f"{name}{{{wanted}}}" if labels else name) + r" ([0-9.e+]+)"
    match = re.search(pattern, text)
    return float(match[1]) if match else 0.0


def event_types(database: Database, order_id: object) -> list[str]:
    with database.connect() as conn:
        rows = conn.execute(
            f"SELECT topic FROM {EVENTS} WHERE originator_id = %s ORDER BY notification_id",
            (order_id,),
        ).fetchall()
    return [str(topic).rsplit(".", 1)[-1] for (topic,) in rows]


def count_events(database: Database, name: str) -> int:
    with database.connect() as conn:
        row = conn.execute(
            f"SELECT count(*) FROM {EVENTS} WHERE topic LIKE %s", (f"%.{name}",)
        ).fetchone()
    assert row is not None
    return int(row[0])


def paid_for_the_last_unit(shop: Shop, sku: str) -> tuple[str, str]:
    """Two sessions paid for the one unit there is: the first confirmed, the second refunded."""
    shop.product(sku, unit_amount=1500, stock=1)
    first = shop.checkout(shop.cart(**{sku: 1}))
    second = shop.checkout(shop.cart(**{sku: 1}))
    shop.stripe.complete(first, "pay")
    settles_as(shop, first, "confirmed")
    return first, second


def a_pending_refund(shop: Shop) -> tuple[str, dict[str, Any]]:
    """A paid session refunded (the stock was gone) whose refund Stripe keeps pending, once the
    ledger has recorded it: the session, and Stripe's refund."""
    shop.stripe.refund_status = "pending"
    _first, second = paid_for_the_last_unit(shop, "mug")
    shop.stripe.complete(second, "pay")
    eventually(lambda: len(shop.stripe.refunds()) == 1)
    (refund,) = shop.stripe.refunds()
    eventually(lambda: shop.order(second).refund_id == refund["id"])
    return second, refund


def another_race_is_refunded(shop: Shop, sku: str) -> None:
    """Two more customers race for one unit of `sku`: the loser's refund goes through."""
    shop.product(sku, stock=1)
    third = shop.checkout(shop.cart(**{sku: 1}))
    fourth = shop.checkout(shop.cart(**{sku: 1}))
    shop.stripe.complete(third, "pay")
    shop.stripe.complete(fourth, "pay")
    eventually(lambda: {shop.status(third), shop.status(fourth)} == {"confirmed", "refunded"})


# ---- 1. a refund refused for good holds back no other ----------------------------------------


def test_a_refund_already_made_in_the_dashboard_is_found_and_holds_back_no_other(
    shop: Shop, database: Database
) -> None:
    _first, second = paid_for_the_last_unit(shop, "mug")
    # The second payment is refunded in Stripe's Dashboard before the ledger hears of it.
    shop.stripe.webhook_url = None
    shop.stripe.complete(second, "pay")
    dashboard = shop.stripe.dashboard_refund(second)
    shop.stripe.webhook_url = f"{shop.url}/webhooks/stripe"
    assert shop.deliver("checkout.session.completed", second).status_code == 200

    # The ledger's own refund meets charge_already_refunded, finds the Dashboard's, records it.
    settles_as(shop, second, "refunded")
    order = shop.order(second)
    assert order.refund_id == dashboard["id"]
    assert "RefundIssued" in event_types(database, order.id)

    # An unrelated customer's later refund is not held back.
    another_race_is_refunded(shop, "pen")
    assert len([r for r in shop.stripe.refunds() if r["status"] == "succeeded"]) == 2


def test_a_refund_stripe_refuses_for_good_is_refund_failed_and_the_next_ones_go_on(
    shop: Shop, database: Database
) -> None:
    failed_before = metric(shop, "ledger_refunds_total", outcome="failed")
    _first, second = paid_for_the_last_unit(shop, "mug")
    # A dispute on the second payment makes Stripe refuse its refund (charge_disputed).
    shop.stripe.webhook_url = None
    shop.stripe.complete(second, "pay")
    shop.stripe.open_dispute(second)
    shop.stripe.webhook_url = f"{shop.url}/webhooks/stripe"
    assert shop.deliver("checkout.session.completed", second).status_code == 200

    settles_as(shop, second, "refund_failed")
    order = shop.order(second)
    assert order.refund_failure == "charge_disputed"
    assert metric(shop, "ledger_refunds_total", outcome="failed") == failed_before + 1

    another_race_is_refunded(shop, "pen")


# ---- 2. a full refund of what Stripe charged, with no amount ---------------------------------


def test_the_refund_asks_for_the_whole_charge_without_an_amount(shop: Shop) -> None:
    _first, second = paid_for_the_last_unit(shop, "mug")
    shop.stripe.complete(second, "pay")
    settles_as(shop, second, "refunded")
    (call,) = [
        q for q in shop.stripe.requests() if q["path"] == "/v1/refunds" and q["method"] == "POST"
    ]
    assert "amount" not in call["params"]
    assert call["params"]["metadata"] == {"order_id": str(shop.order(second).id)}
    (refund,) = shop.stripe.refunds()
    (session,) = [s for s in shop.stripe.sessions() if s["id"] == second]
    assert refund["amount"] == session["amount_total"]


# ---- 3. the refund's own status is followed ------------------------------------------------


def test_a_pending_refund_stays_refund_pending_until_stripe_says_it_succeeded_or_failed(
    shop: Shop, database: Database
) -> None:
    pending_before = metric(shop, "ledger_refunds_total", outcome="pending")
    second, refund = a_pending_refund(shop)
    assert refund["status"] == "pending"
    assert shop.status(second) == "refund_pending"
    assert metric(shop, "ledger_refunds_total", outcome="pending") == pending_before + 1

    shop.stripe.settle_refund(refund["id"], "succeeded")  # refund.updated, signed, delivered
    settles_as(shop, second, "refunded")

    # Stripe can still fail a refund afterwards: the order is flagged for a person.
    failed_before = metric(shop, "ledger_refunds_total", outcome="failed")
    shop.stripe.settle_refund(refund["id"], "failed")
    settles_as(shop, second, "refund_failed")
    assert metric(shop, "ledger_refunds_total", outcome="failed") == failed_before + 1
    types = event_types(database, shop.order(second).id)
    assert types.count("RefundSubmitted") == 1
    assert types.count("RefundIssued") == 1
    assert types.count("RefundFailed") == 1


def test_a_refund_that_fails_while_pending_is_refund_failed(shop: Shop) -> None:
    second, refund = a_pending_refund(shop)
    shop.stripe.settle_refund(refund["id"], "failed")
    settles_as(shop, second, "refund_failed")
    assert shop.order(second).refund_failure == "expired_or_canceled_card"


# ---- 4. a rejected or restricted key is a retry, never a lost order --------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_a_rejected_key_answers_5xx_and_the_retry_places_the_order(shop: Shop, status: int) -> None:
    shop.product("mug", stock=5)
    session_id = shop.checkout(shop.cart(mug=1))
    shop.stripe.webhook_url = None
    shop.stripe.complete(session_id, "pay")
    failures_before = sum(
        metric(shop, "ledger_stripe_fetch_failures_total", kind=kind)
        for kind in ("AuthenticationError", "PermissionError")
    )
    shop.stripe.fail_next(1, status=status, path="/v1/checkout/sessions")

    assert shop.deliver("checkout.session.completed", session_id).status_code == 503
    assert shop.order(session_id) is None
    failures_after = sum(
        metric(shop, "ledger_stripe_fetch_failures_total", kind=kind)
        for kind in ("AuthenticationError", "PermissionError")
    )
    assert failures_after == failures_before + 1

    assert shop.deliver("checkout.session.completed", session_id).status_code == 200
    assert shop.status(session_id) == "confirmed"


# ---- 5. a delayed payment is decided by the PaymentIntent's status ---------------------------


def test_a_failure_event_while_the_payment_is_processing_changes_nothing(shop: Shop) -> None:
    shop.product("mug", stock=5)
    cart_id = shop.cart(mug=1)
    session_id = shop.checkout(cart_id)
    shop.stripe.webhook_url = None
    shop.stripe.complete(session_id, "pay_later")
    assert shop.deliver("checkout.session.completed", session_id).status_code == 200
    assert shop.status(session_id) == "awaiting_payment"

    # A signed async_payment_failed arrives while the PaymentIntent is still processing.
    assert shop.deliver("checkout.session.async_payment_failed", session_id).status_code == 200
    assert shop.status(session_id) == "awaiting_payment"

    shop.stripe.complete(session_id, "async_succeed")
    assert shop.deliver("checkout.session.async_payment_succeeded", session_id).status_code == 200
    assert shop.status(session_id) == "confirmed"
    assert shop.available("mug") == 4


def test_the_status_poll_sees_a_delayed_payment_fail_without_any_webhook(shop: Shop) -> None:
    shop.product("mug", stock=5)
    cart_id = shop.cart(mug=1)
    session_id = shop.checkout(cart_id)
    shop.stripe.webhook_url = None
    shop.stripe.complete(session_id, "pay_later")
    shop.stripe.complete(session_id, "async_fail")
    eventually(lambda: shop.status(session_id) == "payment_failed")
    assert shop.get_cart(cart_id)["status"] == "open"


# ---- 6. sessions whose webhooks never arrive are settled by the resync -----------------------


def test_withheld_webhooks_settle_with_ledger_stripe_resync(
    shop: Shop, database: Database, tmp_path: Path
) -> None:
    shop.product("mug", unit_amount=900, stock=15)
    sessions = [shop.checkout(shop.cart(mug=1)) for _ in range(20)]
    shop.stripe.webhook_url = None  # Stripe never reaches us
    for sid in sessions:
        shop.stripe.complete(sid, "pay")
    assert [shop.order(sid) for sid in sessions] == [None] * 20

    for _ in range(2):  # a second run finds nothing left to change
        done = run_ledger(
            tmp_path,
            *("stripe", "resync", "--older-than", "0s"),
            LEDGER_DATABASE_URL=database.conninfo_url(),
            STRIPE_API_KEY=STRIPE_KEY,
            STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
            STRIPE_API_BASE=shop.stripe.public_base_url,
        )
        assert done.returncode == 0, done.stderr
        assert "failures: 0" in done.stdout

    statuses = [shop.status(sid) for sid in sessions]
    assert statuses.count("confirmed") == 15
    assert statuses.count("refund_pending") + statuses.count("refunded") == 5
    eventually(lambda: [shop.status(sid) for sid in sessions].count("refunded") == 5)
    assert count_events(database, "OrderPlaced") == 20
    assert count_events(database, "StockReserved") == 15
    assert count_events(database, "RefundRequested") == 5
    assert len(shop.stripe.refunds()) == 5
    assert shop.available("mug") == 0


def test_resync_without_a_stripe_key_is_one_clear_line(tmp_path: Path, database: Database) -> None:
    done = run_ledger(tmp_path, "stripe", "resync", LEDGER_DATABASE_URL=database.conninfo_url())
    assert done.returncode == 2
    assert done.stderr.strip().startswith("ledger: ")
    assert "STRIPE_API_KEY" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_workers_resync_a_pending_refund_whose_events_never_arrive(database: Database) -> None:
    with running_shop(database, LEDGER_RESYNC_INTERVAL="0.2", LEDGER_RESYNC_AFTER="0s") as shop:
        second, refund = a_pending_refund(shop)
        shop.stripe.webhook_url = None  # the refund's events are lost
        shop.stripe.settle_refund(refund["id"], "succeeded")
        settles_as(shop, second, "refunded")


# ---- 7. disputes and refunds made in the Dashboard are recorded ------------------------------


def test_disputes_and_dashboard_refunds_are_recorded_on_the_order_once(
    shop: Shop, database: Database
) -> None:
    shop.product("mug", stock=5)
    session_id = shop.checkout(shop.cart(mug=2))
    shop.stripe.complete(session_id, "pay")
    settles_as(shop, session_id, "confirmed")
    order_id = shop.order(session_id).id
    disputes_before = metric(shop, "ledger_disputes_total", status="needs_response")

    dispute = shop.stripe.open_dispute(session_id)
    eventually(lambda: "DisputeOpened" in event_types(database, order_id))
    shop.stripe.close_dispute(dispute["id"], "won")
    eventually(lambda: "DisputeClosed" in event_types(database, order_id))
    shop.stripe.dashboard_refund(session_id)
    eventually(lambda: "OutsideRefundRecorded" in event_types(database, order_id))

    # Stripe delivers them all again: nothing new is recorded.
    before = event_types(database, order_id)
    for event in shop.stripe.events():
        if event["type"].startswith(("charge.", "refund.")):
            payload, signature = shop.stripe.build_event(
                event["type"], event["data"]["object"]["id"]
            )
            assert shop.post_webhook(payload, signature).status_code == 200
    assert event_types(database, order_id) == before
    assert before.count("DisputeOpened") == before.count("DisputeClosed") == 1
    assert before.count("OutsideRefundRecorded") == 1
    order = shop.order(session_id)
    assert order.disputes == {dispute["id"]: "won"}
    # The Dashboard gave all of it back: refunded; but neither reverses the order's stock.
    assert shop.status(session_id) == "refunded"
    assert shop.available("mug") == 3
    assert metric(shop, "ledger_disputes_total", status="needs_response") == disputes_before + 1


def test_refund_and_dispute_events_about_foreign_payments_are_ignored(shop: Shop) -> None:
    shop.product("mug", stock=5)
    session_id = shop.checkout(shop.cart(mug=1))
    shop.stripe.webhook_url = None
    shop.stripe.complete(session_id, "pay")
    # The ledger never heard of this payment (its webhooks were lost, and no resync ran).
    dispute = shop.stripe.open_dispute(session_id)
    payload, signature = shop.stripe.build_event("charge.dispute.created", dispute["id"])
    assert shop.post_webhook(payload, signature).status_code == 200
    assert shop.order(session_id) is None


# ---- the storm: transient failures everywhere, one refusal for good ---------------------------


def test_a_refund_storm_issues_each_refund_once_and_flags_the_one_refused(
    shop: Shop, database: Database
) -> None:
    shop.product("rare", unit_amount=700, stock=2)
    sessions = [shop.checkout(shop.cart(rare=1)) for _ in range(12)]
    shop.stripe.webhook_url = None
    for sid in sessions:
        shop.stripe.complete(sid, "pay")
    for sid in sessions[:2]:
        assert shop.deliver("checkout.session.completed", sid).status_code == 200
    refused = sessions[-1]
    shop.stripe.open_dispute(refused)  # its refund will be refused for good
    # Every refund's first attempt fails (the SDK tries each call twice).
    shop.stripe.fail_next(2 * 10, status=500, path="/v1/refunds")
    shop.stripe.webhook_url = f"{shop.url}/webhooks/stripe"
    for sid in sessions[2:]:
        assert shop.deliver("checkout.session.completed", sid).status_code == 200

    eventually(
        lambda: (
            sorted(shop.status(sid) for sid in sessions[2:]) == ["refund_failed"] + ["refunded"] * 9
        ),
        timeout=60,
    )
    assert shop.status(refused) == "refund_failed"
    refunds = shop.stripe.refunds()
    assert len(refunds) == 9
    assert len({r["payment_intent"] for r in refunds}) == 9
    assert count_events(database, "RefundIssued") == 9
    assert count_events(database, "RefundFailed") == 1
    with database.connect() as conn:
        row = conn.execute("SELECT count(*) FROM side_effect_retries").fetchone()
    assert row == (0,)
