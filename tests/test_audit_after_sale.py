"""The auditors keep up with the merchant's refunds and cancellations (issue 17): `ledger audit
verify` accepts what the domain records after the sale and names, by position, a refund beyond
what was captured and a restock beyond what the order took; `ledger audit report` adds the
merchant's refunds up by status and reason, counts cancellations and lists the refunds Stripe
failed. The domain is driven through the application (its aggregates loaded, decided and saved
in one commit with the items they restock) on a real PostgreSQL; verify and report run as the
real commands."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any
from uuid import UUID

from ledger.application import Ledger
from ledger.domain import Order, PaidSession
from ledger.domain.vocabulary import OrderStatus
from ledger.storage import Database
from projections import rebuild_all
from projections.audit.invariants import CHECKS, REFUNDED, RESTOCKED
from tests.processes import run_ledger

EVENTS = "ledger_events"


def audit(database: Database, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_ledger(tmp_path, "audit", *args, LEDGER_DATABASE_URL=database.conninfo_url())


def product(app: Ledger, sku: str, unit_amount: int, stock: int) -> None:
    app.put_product(sku, sku.title(), unit_amount, "usd", "test")
    app.adjust_stock(sku, stock, "delivery", "test")


def order_of(app: Ledger, session_id: str, manual: bool = False, **lines: int) -> Order:
    """A cart of `lines` (sku=quantity), checked out as `session_id` and paid (with manual
    capture: authorized, its capture requested): a confirmed order."""
    cart = app.create_cart(None, "test")
    for sku, quantity in lines.items():
        app.set_cart_line(cart.id, sku, quantity, "test")
    priced = app.price(app.get_cart(cart.id))
    app.start_checkout(priced, session_id, "test")
    paid = PaidSession(
        session_id, cart.id, priced.amount_total, "usd", f"pi_{session_id}", None, manual
    )
    order = app.place_order(paid, "test")
    assert order.status == OrderStatus.CONFIRMED
    return order


def refund(
    app: Ledger,
    order_id: UUID,
    refund_id: str,
    *,
    lines: dict[str, int] | None = None,
    amount: int | None = None,
    reason: str | None = None,
) -> None:
    """The merchant's refund, restocking its lines, saved with the items in one commit."""
    order = app.get_order(order_id)
    assert order is not None
    items = {sku: app.get_product(sku) for sku in order.book.ordered}
    order.refund(
        refund_id,
        lines=lines,
        amount=amount,
        restock=True,
        reason=reason,
        items=items,
        cause="test",
    )
    app.save(order, *items.values())


def cancel(app: Ledger, order_id: UUID, request_id: str, reason: str | None = None) -> None:
    order = app.get_order(order_id)
    assert order is not None
    items = {sku: app.get_product(sku) for sku in order.book.ordered}
    order.cancel(request_id, restock=True, reason=reason, items=items, cause="test")
    app.save(order, *items.values())


def stripe_says(app: Ledger, order_id: UUID, refund_id: str, status: str, code: str = "") -> None:
    order = app.get_order(order_id)
    assert order is not None
    order.follow_merchant_refund(refund_id, f"re_{refund_id}", status, code or None, "test")
    app.save(order)


def last_position(database: Database, event: str) -> int:
    with database.connect() as conn:
        row = conn.execute(
            f"SELECT max(notification_id) FROM {EVENTS} WHERE topic LIKE %s", (f"%.{event}",)
        ).fetchone()
    assert row is not None and row[0] is not None
    return int(row[0])


def check_lines(stdout: str) -> dict[str, str]:
    """`ledger audit verify`'s table: check -> result."""
    found = {}
    for line in stdout.splitlines():
        for check in CHECKS:
            if line.startswith(check + " "):
                found[check] = line[len(check) :].strip()
    return found


def test_verify_accepts_the_merchant_s_refunds_and_cancels_and_names_planted_ones(
    database: Database, ledger: Ledger, tmp_path: Path
) -> None:
    product(ledger, "mug", 500, 10)
    product(ledger, "cup", 700, 10)
    # By lines (a mug back on the shelf), then by amount, with no reason: the first succeeds,
    # the second is still pending at Stripe.
    lines = order_of(ledger, "cs_lines", mug=2, cup=1)
    refund(ledger, lines.id, "rf_lines", lines={"mug": 1}, reason="damaged")
    stripe_says(ledger, lines.id, "rf_lines", "succeeded")
    refund(ledger, lines.id, "rf_amount", amount=300)
    stripe_says(ledger, lines.id, "rf_amount", "pending")
    # Cancelled after the capture: the rest refunded, the mug back.
    cancelled = order_of(ledger, "cs_cancel", mug=1)
    cancel(ledger, cancelled.id, "cx_1", reason="customer asked")
    stripe_says(ledger, cancelled.id, "cx_1", "succeeded")
    # Cancelled before the capture (manual capture): the authorization released, the cup back.
    released = order_of(ledger, "cs_release", manual=True, cup=1)
    cancel(ledger, released.id, "cx_2")
    ledger.record_release(released.id, "canceled", "test")
    # A refund Stripe failed for good.
    failing = order_of(ledger, "cs_failing", mug=1)
    refund(ledger, failing.id, "rf_failing", amount=200, reason=" damaged ")
    stripe_says(ledger, failing.id, "rf_failing", "failed", "expired_or_canceled_card")
    # A partial refund made in Stripe's Dashboard.
    dashboard = order_of(ledger, "cs_dashboard", cup=1)
    outside = ledger.get_order(dashboard.id)
    assert outside is not None
    outside.note_outside_refund("re_dash", "succeeded", 300, "usd", "test")
    ledger.save(outside)

    # Every order came where the domain says, and the stock is back.
    statuses = {
        o.checkout_session_id: o.status
        for o in (ledger.get_order(x.id) for x in (lines, cancelled, released, failing, dashboard))
        if o is not None
    }
    assert statuses == {
        "cs_lines": OrderStatus.PARTIALLY_REFUNDED,
        "cs_cancel": OrderStatus.CANCELLED,
        "cs_release": OrderStatus.CANCELLED,
        "cs_failing": OrderStatus.REFUND_FAILED,
        "cs_dashboard": OrderStatus.PARTIALLY_REFUNDED,
    }
    assert (ledger.get_product("mug").on_hand, ledger.get_product("cup").on_hand) == (8, 8)

    rebuild_all(database)  # the read models and the hash chain, as the workers keep them
    done = audit(database, tmp_path, "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    checks = check_lines(done.stdout)
    assert checks[REFUNDED] == checks[RESTOCKED] == "ok", done.stdout

    report = audit(database, tmp_path, "report", "--json")
    assert report.returncode == 0, report.stderr
    built = json.loads(report.stdout)
    usd = built["currencies"]["usd"]
    # The merchant's refunds and the Dashboard's leave the orders and the balance as they were:
    # four charged orders kept, the released authorization never a payment.
    assert (usd["payments"], usd["orders"]) == (money(4, 3400), money(4, 3400))
    assert usd["merchant_refunds"] == refunds((4, 1500), (2, 1000), (1, 300), (1, 200))
    assert usd["merchant_refunds_by_reason"] == {
        "customer asked": refunds((1, 500), (1, 500), (0, 0), (0, 0)),
        "damaged": refunds((2, 700), (1, 500), (0, 0), (1, 200)),
        "unspecified": refunds((1, 300), (0, 0), (1, 300), (0, 0)),
    }
    assert usd["cancellations"] == {"count": 2, "released": 1}
    assert usd["outside_refunds"] == money(1, 300)
    assert {k: usd[k] for k in ("authorizations", "released", "awaiting_capture")} == {
        "authorizations": money(1, 700),
        "released": money(1, 700),
        "awaiting_capture": money(0, 0),
    }
    assert built["merchant_refunds_failed"] == [
        {
            "order_id": str(failing.id),
            "checkout_session_id": "cs_failing",
            "refund_id": "rf_failing",
            "amount": 200,
            "currency": "usd",
            "code": "expired_or_canceled_card",
        }
    ]
    table = audit(database, tmp_path, "report")
    assert table.returncode == 0, table.stderr
    assert "usd: merchant refunds 4 / 1500 (succeeded 2 / 1000, pending 1 / 300," in table.stdout
    assert "  reason 'unspecified': 1 / 300 (" in table.stdout
    assert "usd: cancellations 2 (1 released an authorization instead of a refund)" in (
        table.stdout
    )
    assert "merchant refunds Stripe refused or failed: 1" in table.stdout
    assert f"order {failing.id}  refund rf_failing  200 usd  expired_or_canceled_card" in (
        table.stdout
    )

    # Planted, past the rules: (a) a refund of 600 on the cup's 700, 300 of which the
    # Dashboard gave back; (b) five mugs back for the order that took one (and had it back).
    planted = ledger.get_order(dashboard.id)
    assert planted is not None
    planted._merchant_refund_requested(
        refund_id="rf_planted",
        amount=600,
        currency="usd",
        lines=[],
        restocked=[],
        reason=None,
        cause="planted",
    )
    ledger.save(planted)
    too_much = last_position(database, "MerchantRefundRequested")
    mug = ledger.get_product("mug")
    mug.give_back(cancelled.id, 5, "refunded", "planted")
    ledger.save(mug)
    too_many = last_position(database, "StockReturned")

    failed = audit(database, tmp_path, "verify")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    violations = [v for v in failed.stdout.splitlines() if v.startswith("VIOLATION")]
    assert f"VIOLATION {REFUNDED} at position {too_much}: order {dashboard.id}" in "\n".join(
        violations
    ), violations
    assert any(
        v.startswith(f"VIOLATION {RESTOCKED} at position {too_many}: order {cancelled.id}")
        and "mug back 6, 1 taken" in v
        for v in violations
    ), violations
    checks = check_lines(failed.stdout)
    assert checks[REFUNDED] == checks[RESTOCKED] == "VIOLATED (1)"


def money(count: int, amount: int) -> dict[str, int]:
    return {"count": count, "amount": amount}


def refunds(
    total: tuple[int, int],
    succeeded: tuple[int, int],
    pending: tuple[int, int],
    failed: tuple[int, int],
) -> dict[str, Any]:
    return {
        **money(*total),
        "succeeded": money(*succeeded),
        "pending": money(*pending),
        "failed": money(*failed),
    }


def test_a_cancel_whose_release_stripe_refused_is_refunded_and_adds_up() -> None:
    """Cancelled before its capture, but captured at Stripe meanwhile (in the Dashboard): the
    release is refused, the capture recorded and refunded as the cancel's refund. As stored
    by the domain, in memory: no database needed."""
    from ledger.domain import Cart, InventoryItem
    from ledger.domain.pricing import PricedCart, PricedLine
    from projections.audit.invariants import balances, check_replay
    from projections.audit.replay import Replay
    from tests.test_audit_holds_capture import StoredLog

    log = StoredLog()
    mug = InventoryItem.new("mug", "Mug", 500, "usd", "test")
    mug.adjust_stock(2, "delivery", "test")
    cart = Cart(user_id=None, cause="test")
    cart.set_line("mug", 2, "test", "usd")
    priced = PricedCart(cart, [PricedLine.of(mug, 2)], "usd")
    cart.start_checkout("cs_1", priced.snapshot(), priced.amount_total, "usd", "test")
    log.commit(mug, cart)
    order = Order.open("cs_1", cart, "pi_1", None, "test")
    order.fulfil(PaidSession("cs_1", cart.id, 1000, "usd", "pi_1", None, True), cart, [mug], "test")
    log.commit(order, mug, cart)
    order.cancel("cx", restock=True, reason=None, items={"mug": mug}, cause="test")
    log.commit(order, mug)
    order.release_refused("payment_intent_unexpected_state", "succeeded", (1000, "usd"), "test")
    order.follow_merchant_refund("cx", "re_cx", "succeeded", None, "test")
    log.commit(order)

    replay = Replay().read(log.rows)

    assert check_replay(replay) == []
    usd = balances(list(replay.orders.values()))["usd"]
    figures = {
        name: (m.count, m.amount)
        for name, m in (
            ("authorizations", usd.authorizations),
            ("captured", usd.captured),
            ("released", usd.released),
            ("awaiting", usd.awaiting_capture),
            ("payments", usd.payments),
            ("orders", usd.orders),
        )
    }
    assert figures == {
        "authorizations": (1, 1000),
        "captured": (1, 1000),
        "released": (0, 0),
        "awaiting": (0, 0),
        "payments": (1, 1000),
        "orders": (1, 1000),
    }
    (facts,) = replay.orders.values()
    assert [(r.amount, r.status) for r in facts.merchant_refunds.values()] == [(1000, "succeeded")]
    assert facts.restocked == {"mug": [(facts.restocked["mug"][0][0], 2)]}
