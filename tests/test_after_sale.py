"""The order's decisions after the sale, in memory: refunds by lines and by amount never exceed
what remains, restocks never exceed what the order took, a cancel refunds (or releases) the
rest, Stripe's news moves each refund on once, and the same request again changes nothing."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from ledger.domain import InventoryItem, Order
from ledger.domain.errors import (
    InvalidRefund,
    OrderNotCancellable,
    OrderNotRefundable,
    RefundExceedsRemaining,
)
from ledger.domain.vocabulary import OrderStatus, RefundStatus
from tests.test_domain import names

LINES: list[dict[str, Any]] = [
    {"sku": "mug", "name": "Mug", "quantity": 2, "unit_amount": 1200, "currency": "usd"},
    {"sku": "tea", "name": "Tea", "quantity": 1, "unit_amount": 800, "currency": "usd"},
]
TOTAL = 3200


def stock(sku: str, on_hand: int = 5) -> InventoryItem:
    item = InventoryItem.new(sku, sku.title(), 100, "usd", "test")
    item.adjust_stock(on_hand, None, "test")
    return item


def confirmed(*, manual: bool = False) -> tuple[Order, dict[str, InventoryItem]]:
    """A placed order whose stock was taken from its items (mug 5 -> 3, tea 5 -> 4)."""
    order = Order(
        checkout_session_id="cs_1",
        cart_id=uuid4(),
        lines=LINES,
        amount_total=TOTAL,
        currency="usd",
        payment_intent="pi_1",
        cause="test",
    )
    order.confirm_payment("pi_1", "test")
    if manual:
        order._capture_requested(amount=TOTAL, currency="usd", cause="test")
    items = {sku: stock(sku) for sku in ("mug", "tea")}
    for line in LINES:
        items[line["sku"]].reserve(order.id, line["quantity"], "test")
    for aggregate in (order, *items.values()):
        aggregate.collect_events()
    return order, items


def on_hand(items: dict[str, InventoryItem]) -> dict[str, int]:
    return {sku: item.on_hand for sku, item in items.items()}


def test_a_line_refund_restocks_in_the_same_decision_and_moves_the_status() -> None:
    order, items = confirmed()
    refund = order.refund(
        "r1", lines={"tea": 1}, amount=None, restock=True, reason="broken", items=items, cause="t"
    )
    assert (refund.amount, refund.lines, refund.restocked) == (800, {"tea": 1}, {"tea": 1})
    assert order.status == OrderStatus.PARTIALLY_REFUNDED
    assert names(order) == ["MerchantRefundRequested", "OrderStatusChanged"]
    assert names(items["tea"]) == ["StockReturned"]
    assert on_hand(items) == {"mug": 3, "tea": 5}

    order.refund("r2", lines={"mug": 2}, amount=None, restock=False, reason=None, items=items,
                 cause="t")  # fmt: skip
    assert order.status == OrderStatus.REFUNDED
    assert on_hand(items) == {"mug": 3, "tea": 5}  # not put back: the merchant said so
    with pytest.raises(RefundExceedsRemaining):
        order.refund("r3", lines=None, amount=1, restock=False, reason=None, items=items, cause="t")


def test_refunds_never_exceed_what_remains_of_the_payment_or_of_a_line() -> None:
    order, items = confirmed()
    order.refund("r1", lines=None, amount=3000, restock=False, reason=None, items=items, cause="t")
    order.collect_events()
    with pytest.raises(RefundExceedsRemaining):  # 200 remain
        order.refund("r2", lines={"tea": 1}, amount=None, restock=True, reason=None, items=items,
                     cause="t")  # fmt: skip
    with pytest.raises(RefundExceedsRemaining):
        order.refund("r3", lines={"mug": 3}, amount=None, restock=True, reason=None, items=items,
                     cause="t")  # fmt: skip
    with pytest.raises(InvalidRefund):
        order.refund("r4", lines={"cup": 1}, amount=None, restock=True, reason=None, items=items,
                     cause="t")  # fmt: skip
    assert names(order) == [] and on_hand(items) == {"mug": 3, "tea": 4}  # nothing recorded


def test_the_same_request_again_changes_nothing() -> None:
    order, items = confirmed()
    first = order.refund("r1", lines={"mug": 1}, amount=None, restock=True, reason=None,
                         items=items, cause="t")  # fmt: skip
    order.collect_events()
    items["mug"].collect_events()
    again = order.refund("r1", lines={"mug": 1}, amount=None, restock=True, reason=None,
                         items=items, cause="t")  # fmt: skip
    assert again is first
    order.cancel("c1", restock=True, reason=None, items=items, cause="t")
    order.collect_events()
    order.cancel("c1", restock=True, reason=None, items=items, cause="t")
    assert names(order) == []
    with pytest.raises(OrderNotCancellable):
        order.cancel("c2", restock=True, reason=None, items=items, cause="t")
    with pytest.raises(OrderNotRefundable):  # a cancelled order is not refunded again
        order.refund("r9", lines=None, amount=1, restock=False, reason=None, items=items, cause="t")


def test_a_cancel_refunds_the_rest_and_restocks_only_what_was_not_refunded() -> None:
    order, items = confirmed()
    order.refund("r1", lines={"mug": 1}, amount=None, restock=False, reason=None, items=items,
                 cause="t")  # fmt: skip
    order.collect_events()
    order.cancel("c1", restock=True, reason="customer", items=items, cause="t")
    assert names(order) == ["MerchantRefundRequested", "OrderCancelled", "OrderStatusChanged"]
    rest = order.book.merchant["c1"]
    assert (rest.amount, rest.lines, rest.restocked) == (2000, {"mug": 1, "tea": 1},
                                                         {"mug": 1, "tea": 1})  # fmt: skip
    assert order.status == OrderStatus.CANCELLED
    assert on_hand(items) == {"mug": 4, "tea": 5}  # one mug was refunded without coming back
    assert order.book.restocked == {"mug": 1, "tea": 1}


def test_a_cancel_before_capture_releases_the_authorization_and_refunds_nothing() -> None:
    order, items = confirmed(manual=True)
    with pytest.raises(OrderNotRefundable, match="not captured"):
        order.refund("r1", lines=None, amount=1, restock=False, reason=None, items=items, cause="t")
    order.cancel("c1", restock=True, reason=None, items=items, cause="t")
    assert names(order) == ["OrderCancelled", "OrderStatusChanged"]
    assert (order.release, order.capture, order.book.merchant) == ("requested", "cancelled", {})
    assert on_hand(items) == {"mug": 5, "tea": 5}
    # A capture under way when the cancel was decided: Stripe took the money after all, so
    # the cancel refunds it.
    order.release_refused("payment_intent_unexpected_state", "succeeded", (TOTAL, "usd"), "t")
    assert names(order) == ["ReleaseFailed", "PaymentCaptured", "MerchantRefundRequested"]
    assert order.book.merchant["c1"].amount == TOTAL
    assert order.status == OrderStatus.CANCELLED


def test_stripes_news_moves_a_refund_on_once_and_a_failure_flags_the_order_until_the_next() -> None:
    order, items = confirmed()
    order.refund("r1", lines=None, amount=500, restock=False, reason=None, items=items, cause="t")
    order.collect_events()
    for _ in range(2):
        order.follow_merchant_refund("r1", "re_1", "pending", None, "t")
    assert names(order) == ["MerchantRefundSubmitted"]
    order.follow_merchant_refund("re_other", "re_2", "succeeded", None, "t")  # not a refund of ours
    order.follow_merchant_refund("r1", "re_1", "failed", "expired_or_canceled_card", "t")
    assert names(order) == ["MerchantRefundFailed", "OrderStatusChanged"]
    assert order.status == OrderStatus.REFUND_FAILED
    assert order.book.merchant["r1"].status == RefundStatus.FAILED
    assert order.book.remaining(order.captured) == TOTAL  # its money is still to give back
    order.refund("r2", lines=None, amount=500, restock=False, reason=None, items=items, cause="t")
    assert order.status == OrderStatus.PARTIALLY_REFUNDED  # the merchant acted: flag cleared

    order.refuse_merchant_refund("r2", "charge_disputed", "t")
    assert order.status == OrderStatus.REFUND_FAILED


def test_a_dashboard_refund_counts_against_what_remains_and_never_restocks() -> None:
    order, items = confirmed()
    order.note_outside_refund("re_dash", "succeeded", 3000, "usd", "t")
    assert order.status == OrderStatus.PARTIALLY_REFUNDED
    with pytest.raises(RefundExceedsRemaining):
        order.refund("r1", lines=None, amount=201, restock=False, reason=None, items=items,
                     cause="t")  # fmt: skip
    order.note_outside_refund("re_dash", "failed", 3000, "usd", "t")  # it failed later
    assert order.status == OrderStatus.CONFIRMED
    assert on_hand(items) == {"mug": 3, "tea": 4}


def test_an_order_never_placed_cannot_be_refunded_or_cancelled() -> None:
    order = Order(
        checkout_session_id="cs_1",
        cart_id=uuid4(),
        lines=LINES,
        amount_total=TOTAL,
        currency="usd",
        payment_intent="pi_1",
        cause="test",
    )
    with pytest.raises(OrderNotCancellable):
        order.cancel("c1", restock=True, reason=None, items={}, cause="t")
    with pytest.raises(OrderNotRefundable):
        order.refund("r1", lines=None, amount=1, restock=False, reason=None, items={}, cause="t")
