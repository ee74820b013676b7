"""The order decision and the refund rule, as tables of cases on aggregates in memory."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eventsourcing.domain import Aggregate

from ledger.domain import Cart, InventoryItem, Order, PaidSession
from ledger.domain.vocabulary import OrderStatus, Rejection, SessionState

LINES = [
    {"sku": "mug", "name": "Mug", "quantity": 2, "unit_amount": 500},
    {"sku": "tea", "name": "Tea", "quantity": 1, "unit_amount": 300},
]


def item(sku: str, on_hand: int) -> InventoryItem:
    listed = InventoryItem.new(sku, sku.title(), 500, "usd", "test")
    if on_hand:
        listed.adjust_stock(on_hand, "delivery", "test")
    listed.collect_events()
    return listed


def checking_out(session_id: str = "cs_1") -> Cart:
    cart = Cart(user_id=None, cause="test")
    cart.set_line("mug", 2, "test")
    cart.set_line("tea", 1, "test")
    cart.start_checkout(session_id, LINES, 1300, "usd", "test")
    cart.collect_events()
    return cart


def paid(cart: Cart, amount: int = 1300, currency: str = "usd", sid: str = "cs_1") -> PaidSession:
    return PaidSession(sid, cart.id, amount, currency, "pi_1")


def names(aggregate: Aggregate) -> list[str]:
    return [type(e).__name__ for e in aggregate.collect_events()]


def converted_by_another_session(cart: Cart) -> None:
    cart.start_checkout("cs_0", LINES, 1300, "usd", "test")
    cart.convert("cs_0", Order.create_id("cs_0"), "test")


@pytest.mark.parametrize(
    ("amount", "currency", "mug", "tea", "before", "expected"),
    [
        (1300, "usd", 2, 1, None, None),
        (1300, "usd", 5, 9, None, None),
        (1299, "usd", 2, 1, None, Rejection.AMOUNT_MISMATCH),
        (1300, "eur", 2, 1, None, Rejection.AMOUNT_MISMATCH),
        (1300, "usd", 1, 1, None, Rejection.OUT_OF_STOCK),
        (1300, "usd", 2, 0, None, Rejection.OUT_OF_STOCK),
        (1300, "usd", 2, 1, converted_by_another_session, Rejection.CART_ALREADY_CONVERTED),
        # The amount is checked first: a mismatch is refunded whatever the stock.
        (1, "usd", 0, 0, converted_by_another_session, Rejection.AMOUNT_MISMATCH),
    ],
)
def test_the_order_decision(
    amount: int,
    currency: str,
    mug: int,
    tea: int,
    before: Callable[[Cart], None] | None,
    expected: Rejection | None,
) -> None:
    cart = checking_out()
    if before is not None:
        before(cart)
    items = [item("mug", mug), item("tea", tea)]
    order = Order.open("cs_1", cart, None, None, "test")
    order.collect_events()

    order.fulfil(paid(cart, amount, currency), cart, items, "evt")

    if expected is None:
        assert order.status == OrderStatus.CONFIRMED
        assert names(order) == ["PaymentConfirmed"]
        assert [i.on_hand for i in items] == [mug - 2, tea - 1]
        assert cart.session("cs_1")["state"] == SessionState.CONVERTED
        assert cart.order_id == order.id
    else:
        assert (order.status, order.rejection_reason) == (OrderStatus.REFUND_PENDING, expected)
        assert names(order) == ["OrderRejected", "RefundRequested"]
        assert [i.on_hand for i in items] == [mug, tea]  # no stock taken
        assert all(not i.pending_events for i in items)
        assert cart.session("cs_1")["state"] == SessionState.REJECTED


def test_an_order_holds_what_its_session_was_priced_at() -> None:
    cart = checking_out()
    order = Order.open("cs_1", cart, "pi_1", None, "test")
    assert (order.lines, order.amount_total, order.currency) == (LINES, 1300, "usd")
    assert (order.status, order.payment_intent) == (OrderStatus.PROCESSING, "pi_1")


def _rejected(refund_id: str | None = None, failed: bool = False) -> Order:
    cart = checking_out()
    order = Order.open("cs_1", cart, "pi_1", None, "test")
    order.reject(Rejection.OUT_OF_STOCK, "pi_1", "test")
    if refund_id is not None:
        order.follow_refund(refund_id, "pending", 1300, None, "test")
    if failed:
        order.refuse_refund("charge_disputed", "test")
    return order


def _confirmed() -> Order:
    order = Order.open("cs_1", checking_out(), "pi_1", None, "test")
    order.confirm_payment("pi_1", "test")
    return order


@pytest.mark.parametrize(
    ("order", "refund_id", "names_order", "succeeded", "adopt", "owned"),
    [
        # A confirmed order owes nothing back: any refund of its payment came from outside.
        (_confirmed, "re_1", True, True, True, False),
        # The refund the ledger asked for, known by its id or by the order id in its metadata.
        (lambda: _rejected("re_1"), "re_1", False, False, False, True),
        (lambda: _rejected("re_1"), "re_2", False, True, True, False),
        (_rejected, "re_x", True, False, False, True),
        # Found when Stripe says the charge is refunded already: adopted only when asked to.
        (_rejected, "re_x", False, False, True, True),
        (_rejected, "re_x", False, False, False, False),
        # A person refunded an order whose refund failed: it is the order's once it succeeded.
        (lambda: _rejected(failed=True), "re_hand", False, True, False, True),
        (lambda: _rejected(failed=True), "re_hand", False, False, True, False),
    ],
)
def test_whether_a_refund_is_the_orders_own(
    order: Callable[[], Order],
    refund_id: str,
    names_order: bool,
    succeeded: bool,
    adopt: bool,
    owned: bool,
) -> None:
    decided = order()
    ref = str(decided.id) if names_order else None
    assert decided.owns_refund(refund_id, ref, succeeded, adopt) is owned
