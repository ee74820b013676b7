"""Stock holds and manual capture, as decisions of aggregates in memory: what a hold keeps from
others, how it ends, and what an authorized payment becomes."""

from __future__ import annotations

import pytest

from ledger.domain import Cart, InventoryItem, Order, PaidSession
from ledger.domain.errors import InsufficientStock
from ledger.domain.holds import place_hold, release_hold
from ledger.domain.pricing import OutOfStock, PricedCart, PricedLine
from ledger.domain.vocabulary import CartStatus, HoldEnd, OrderStatus, SessionState
from tests.test_order_decision import names

UNTIL = "2026-12-06T12:00:00+00:00"


def mug(on_hand: int) -> InventoryItem:
    item = InventoryItem.new("mug", "Mug", 500, "usd", "test")
    item.adjust_stock(on_hand, "delivery", "test")
    item.collect_events()
    return item


def held_checkout(item: InventoryItem, quantity: int, hold_id: str, sid: str) -> Cart:
    """A cart of `quantity` mugs, checked out on session `sid` with its stock held."""
    cart = Cart(user_id=None, cause="test")
    cart.set_line("mug", quantity, "test", "usd")
    priced = PricedCart(cart, [PricedLine.of(item, quantity)], "usd")
    place_hold(cart, priced, {"mug": item}, hold_id, UNTIL, "test")
    cart.start_checkout(sid, priced.snapshot(), priced.amount_total, "usd", "test", hold_id)
    return cart


def paid(cart: Cart, sid: str, quantity: int, authorized_only: bool = False) -> PaidSession:
    return PaidSession(sid, cart.id, 500 * quantity, "usd", "pi_" + sid, None, authorized_only)


def decide(cart: Cart, item: InventoryItem, sid: str, authorized_only: bool = False) -> Order:
    order = Order.open(sid, cart, "pi_" + sid, None, "test")
    quantity = cart.session(sid)["lines"][0]["quantity"]
    order.fulfil(paid(cart, sid, quantity, authorized_only), cart, [item], "test")
    return order


def test_a_hold_keeps_its_units_from_everyone_else() -> None:
    item = mug(3)
    held_checkout(item, 2, "h1", "cs_1")
    assert (item.on_hand, item.held, item.available_to(), item.available_to("h1")) == (3, 2, 1, 3)
    other = Cart(user_id=None, cause="test")
    other.set_line("mug", 2, "test", "usd")
    priced = PricedCart(other, [PricedLine.of(item, 2)], "usd")
    with pytest.raises(OutOfStock) as short:
        place_hold(other, priced, {"mug": item}, "h2", UNTIL, "test")
    assert [(s.sku, s.requested, s.available) for s in short.value.shortages] == [("mug", 2, 1)]
    with pytest.raises(InsufficientStock):  # held units are promised: not written off
        item.adjust_stock(-2, "broken", "test")
    item.adjust_stock(-1, "broken", "test")
    assert (item.on_hand, item.held) == (2, 2)


def test_a_held_session_paid_takes_its_hold_and_nothing_more() -> None:
    item = mug(2)
    cart = held_checkout(item, 2, "h1", "cs_1")
    item.collect_events()
    order = decide(cart, item, "cs_1")
    assert order.status == OrderStatus.CONFIRMED
    (reserved,) = item.collect_events()
    assert (type(reserved).__name__, reserved.hold_id, reserved.quantity) == (  # type: ignore[attr-defined]
        "StockReserved",
        "h1",
        2,
    )
    assert (item.on_hand, item.held, cart.holds, cart.held_until) == (0, 0, {}, None)


def test_a_payment_after_its_hold_ended_takes_stock_as_before() -> None:
    item = mug(1)
    cart = held_checkout(item, 1, "h1", "cs_1")
    release_hold(cart, "h1", [item], HoldEnd.TIME_UP, "test")
    assert (item.held, cart.hold_of("cs_1")) == (0, None)
    late = held_checkout(item, 1, "h2", "cs_2")  # someone else holds the last unit now
    assert decide(cart, item, "cs_1").status == OrderStatus.REFUND_PENDING
    assert item.holds == {"h2": 1}
    assert decide(late, item, "cs_2").status == OrderStatus.CONFIRMED
    assert (item.on_hand, item.held) == (0, 0)


def test_a_rejected_held_session_releases_its_hold() -> None:
    item = mug(2)
    cart = held_checkout(item, 1, "h1", "cs_1")
    item.collect_events()
    order = Order.open("cs_1", cart, "pi_1", None, "test")
    wrong_amount = PaidSession("cs_1", cart.id, 1, "usd", "pi_1")
    order.fulfil(wrong_amount, cart, [item], "test")
    assert order.status == OrderStatus.REFUND_PENDING
    assert names(item) == ["StockReleased"]
    assert (item.held, cart.holds, cart.session("cs_1")["state"]) == (0, {}, SessionState.REJECTED)


def test_an_authorized_session_is_placed_with_its_capture_requested() -> None:
    item = mug(1)
    cart = held_checkout(item, 1, "h1", "cs_1")
    order = decide(cart, item, "cs_1", authorized_only=True)
    assert names(order)[-2:] == ["PaymentConfirmed", "CaptureRequested"]
    assert (order.status, order.capture, item.on_hand) == (OrderStatus.CONFIRMED, "requested", 0)
    order.record_capture(500, "usd", "test")
    order.record_capture(500, "usd", "test")  # the same news again records nothing
    assert names(order) == ["PaymentCaptured"]
    assert order.charged == (500, "usd")


def test_an_authorization_the_order_cannot_use_is_released_not_refunded() -> None:
    item = mug(1)
    first = held_checkout(item, 1, "h1", "cs_1")
    release_hold(first, "h1", [item], HoldEnd.TIME_UP, "test")
    second = held_checkout(item, 1, "h2", "cs_2")
    order = decide(first, item, "cs_1", authorized_only=True)
    assert order.status == OrderStatus.RELEASED
    assert names(order)[-2:] == ["OrderRejected", "ReleaseRequested"]
    assert "RefundRequested" not in names(order)
    order.record_release("canceled", "test")
    order.record_release("canceled", "test")
    assert names(order) == ["AuthorizationReleased"]
    assert decide(second, item, "cs_2").status == OrderStatus.CONFIRMED


def test_a_capture_refused_for_good_fails_the_order_and_gives_its_stock_back() -> None:
    item = mug(1)
    cart = held_checkout(item, 1, "h1", "cs_1")
    order = decide(cart, item, "cs_1", authorized_only=True)
    for aggregate in (order, item, cart):
        aggregate.collect_events()
    order.capture_refused("payment_intent_unexpected_state", cart, [item], "test")
    assert (names(order), names(item), names(cart)) == (
        ["CaptureFailed"],
        ["StockReturned"],
        ["CartReopened"],
    )
    assert (order.status, item.on_hand, cart.status) == (
        OrderStatus.PAYMENT_FAILED,
        1,
        CartStatus.OPEN,
    )
    order.capture_refused("payment_intent_unexpected_state", cart, [item], "test")
    assert (names(order), item.on_hand) == ([], 1)  # once only
