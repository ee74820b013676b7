"""The domain's rules, in memory: aggregates built directly, the service on the POPO store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import Aggregate

from ledger.application import Ledger
from ledger.domain import Cart, InventoryItem, Order, PaidSession, inventory_item_id, order_id_for
from ledger.domain.cart import MAX_LINE_QUANTITY
from ledger.domain.errors import (
    CartClosed,
    CurrencyMismatch,
    DomainError,
    EmptyCart,
    InsufficientStock,
    InvalidProduct,
    InvalidQuantity,
    InvalidTransition,
    UnknownCart,
    UnknownCheckoutSession,
    UnknownProduct,
)
from ledger.domain.vocabulary import OrderStatus, Rejection
from ledger.payments import Refund

LINES = [{"sku": "mug", "name": "Mug", "quantity": 2, "unit_amount": 500}]


def names(aggregate: Aggregate) -> list[str]:
    """The names of the events an aggregate has pending, collecting them."""
    return [type(e).__name__ for e in aggregate.collect_events()]


def listed(sku: str = "mug", on_hand: int = 0) -> InventoryItem:
    item = InventoryItem.new(sku, "Mug", 500, "usd", "test")
    if on_hand:
        item.adjust_stock(on_hand, "delivery", "test")
    item.collect_events()
    return item


def cart_checking_out(session_id: str = "cs_1") -> Cart:
    cart = Cart(user_id="u1", cause="test")
    cart.set_line("mug", 2, "test")
    cart.start_checkout(session_id, LINES, 1000, "usd", "test")
    cart.collect_events()
    return cart


def placed_order(session_id: str = "cs_1") -> Order:
    order = Order(
        checkout_session_id=session_id,
        cart_id=uuid4(),
        lines=LINES,
        amount_total=1000,
        currency="usd",
        payment_intent="pi_1",
        cause="test",
    )
    order.collect_events()
    return order


# ---- products and stock --------------------------------------------------------------


def test_a_product_is_listed_with_its_details_and_no_stock() -> None:
    item = InventoryItem.new("mug", "Mug", 500, "usd", "admin")
    assert (item.sku, item.name, item.unit_amount, item.currency, item.on_hand) == (
        "mug",
        "Mug",
        500,
        "usd",
        0,
    )
    assert names(item) == ["ProductListed"]


@pytest.mark.parametrize(
    ("name", "unit_amount", "currency"),
    [
        ("", 500, "usd"),
        ("   ", 500, "usd"),
        ("Mug", 0, "usd"),
        ("Mug", -1, "usd"),
        ("Mug", 500, "USD"),
        ("Mug", 500, "us"),
        ("Mug", 500, "usdd"),
        ("Mug", 500, ""),
        ("Mug", 500, "u5d"),
        ("Mug", 500, "üsd"),
    ],
)
def test_a_product_with_bad_details_is_refused(name: str, unit_amount: int, currency: str) -> None:
    with pytest.raises(InvalidProduct) as caught:
        InventoryItem.new("mug", name, unit_amount, currency, "admin")
    assert caught.value.code == "invalid_product"
    item = listed()
    with pytest.raises(InvalidProduct):
        item.change_details(name, unit_amount, currency, "admin")
    assert names(item) == []
    assert (item.name, item.unit_amount, item.currency) == ("Mug", 500, "usd")


def test_changing_details_records_only_real_changes() -> None:
    item = listed()
    assert item.change_details("Mug", 500, "usd", "admin") is False
    assert names(item) == []
    assert item.change_details("Big mug", 750, "eur", "admin") is True
    assert names(item) == ["ProductDetailsChanged"]
    assert (item.name, item.unit_amount, item.currency) == ("Big mug", 750, "eur")


def test_stock_is_received_and_written_off() -> None:
    item = listed()
    item.adjust_stock(5, "delivery", "admin")
    item.adjust_stock(-2, "broken", "admin")
    assert item.on_hand == 3
    assert names(item) == ["StockReceived", "StockWrittenOff"]
    item.adjust_stock(-3, None, "admin")
    assert item.on_hand == 0


def test_a_zero_stock_adjustment_is_refused() -> None:
    item = listed(on_hand=2)
    with pytest.raises(InvalidQuantity):
        item.adjust_stock(0, None, "admin")
    assert names(item) == []


def test_writing_off_more_than_on_hand_is_refused_and_records_nothing() -> None:
    item = listed(on_hand=2)
    with pytest.raises(InsufficientStock) as caught:
        item.adjust_stock(-3, "lost", "admin")
    assert (caught.value.sku, caught.value.requested, caught.value.on_hand) == ("mug", 3, 2)
    assert caught.value.code == "insufficient_stock"
    assert item.on_hand == 2
    assert names(item) == []


def test_reserving_takes_stock_but_never_more_than_on_hand() -> None:
    item = listed(on_hand=3)
    order_id = uuid4()
    with pytest.raises(InsufficientStock):
        item.reserve(order_id, 4, "evt")
    with pytest.raises(InvalidQuantity):
        item.reserve(order_id, 0, "evt")
    assert names(item) == []
    item.reserve(order_id, 3, "evt")
    assert item.on_hand == 0
    assert names(item) == ["StockReserved"]


def test_can_supply() -> None:
    item = listed(on_hand=2)
    assert item.can_supply(2)
    assert not item.can_supply(3)
    assert not item.can_supply(0)


# ---- carts ---------------------------------------------------------------------------


def test_a_cart_line_is_set_changed_and_removed_with_zero() -> None:
    cart = Cart(user_id=None, cause="test")
    assert cart.status == "open"
    cart.set_line("mug", 2, "test")
    cart.set_line("mug", 2, "test")  # unchanged: nothing recorded
    cart.set_line("mug", 5, "test")
    assert cart.lines == {"mug": 5}
    cart.set_line("mug", 0, "test")
    cart.set_line("nothing-here", 0, "test")  # removing an absent line records nothing
    assert cart.lines == {}
    assert names(cart) == ["CartCreated", "CartLineSet", "CartLineSet", "CartLineSet"]


@pytest.mark.parametrize("quantity", [-1, -(10**30), MAX_LINE_QUANTITY + 1, 10**30])
def test_a_cart_line_out_of_range_is_refused(quantity: int) -> None:
    cart = Cart(user_id=None, cause="test")
    cart.set_line("mug", 1, "test")
    cart.collect_events()
    with pytest.raises(InvalidQuantity):
        cart.set_line("mug", quantity, "test")
    assert cart.lines == {"mug": 1}
    assert names(cart) == []


def test_the_largest_line_is_accepted() -> None:
    cart = Cart(user_id=None, cause="test")
    cart.set_line("mug", MAX_LINE_QUANTITY, "test")
    assert cart.lines == {"mug": MAX_LINE_QUANTITY}


def test_checking_out_an_empty_cart_is_refused() -> None:
    cart = Cart(user_id=None, cause="test")
    cart.collect_events()
    with pytest.raises(EmptyCart) as caught:
        cart.start_checkout("cs_1", [], 0, "usd", "test")
    assert caught.value.code == "empty_cart"
    assert cart.status == "open"
    assert names(cart) == []


def test_a_converted_cart_refuses_every_change() -> None:
    cart = cart_checking_out()
    cart.convert("cs_1", order_id_for("cs_1"), "evt")
    assert cart.status == "converted"
    cart.collect_events()
    with pytest.raises(CartClosed) as caught:
        cart.set_line("mug", 3, "test")
    assert caught.value.code == "cart_closed"
    with pytest.raises(CartClosed):
        cart.set_line("mug", 0, "test")
    with pytest.raises(CartClosed):
        cart.set_line("mug", -1, "test")
    with pytest.raises(CartClosed):
        cart.start_checkout("cs_2", LINES, 1000, "usd", "test")
    with pytest.raises(CartClosed):
        cart.convert("cs_1", order_id_for("cs_1"), "evt")
    assert cart.lines == {"mug": 2}
    assert names(cart) == []


def test_checkout_records_exactly_what_was_priced() -> None:
    cart = cart_checking_out()
    assert cart.status == "checking_out"
    snapshot = cart.session("cs_1")
    assert snapshot == {
        "state": "processing",
        "lines": LINES,
        "amount_total": 1000,
        "currency": "usd",
        "hold_id": None,  # nothing held (LEDGER_STOCK_HOLD off)
    }
    with pytest.raises(UnknownCheckoutSession):
        cart.session("cs_other")


def test_an_expired_session_reopens_the_cart() -> None:
    cart = cart_checking_out()
    cart.record_expired("cs_1", "evt")
    assert cart.status == "open"
    assert names(cart) == ["CheckoutExpired"]


def test_a_failed_delayed_payment_reopens_the_cart() -> None:
    cart = cart_checking_out()
    cart.record_awaiting_payment("cs_1", "evt")
    assert cart.status == "checking_out"
    cart.record_payment_failed("cs_1", "evt")
    assert cart.status == "open"
    assert names(cart) == ["CheckoutAwaitingPayment", "CheckoutPaymentFailed"]


def test_a_rejected_session_reopens_the_cart() -> None:
    cart = cart_checking_out()
    cart.record_rejected("cs_1", order_id_for("cs_1"), "out_of_stock", "evt")
    assert cart.status == "open"
    assert cart.order_id is None
    assert names(cart) == ["CheckoutRejected"]


def test_a_paid_session_converts_the_cart() -> None:
    cart = cart_checking_out()
    cart.record_awaiting_payment("cs_1", "evt")
    cart.convert("cs_1", order_id_for("cs_1"), "evt")
    assert cart.status == "converted"
    assert cart.order_id == order_id_for("cs_1")


def test_a_cart_checking_out_may_change_and_start_a_second_session() -> None:
    cart = cart_checking_out("cs_1")
    cart.set_line("mug", 3, "test")
    cart.start_checkout("cs_2", [{**LINES[0], "quantity": 3}], 1500, "usd", "test")
    assert cart.status == "checking_out"
    cart.record_expired("cs_1", "evt")
    assert cart.status == "checking_out"  # the second session is still pending
    cart.convert("cs_2", order_id_for("cs_2"), "evt")
    assert cart.status == "converted"
    assert cart.session("cs_2")["amount_total"] == 1500


def test_a_late_session_of_a_converted_cart_can_be_rejected() -> None:
    cart = cart_checking_out("cs_1")
    cart.start_checkout("cs_2", LINES, 1000, "usd", "test")
    cart.convert("cs_2", order_id_for("cs_2"), "evt")
    cart.record_rejected("cs_1", order_id_for("cs_1"), "cart_already_converted", "evt")
    assert cart.status == "converted"
    assert cart.order_id == order_id_for("cs_2")


def test_session_transitions_out_of_order_are_refused() -> None:
    cart = cart_checking_out()
    cart.record_awaiting_payment("cs_1", "evt")
    with pytest.raises(InvalidTransition):
        cart.record_expired("cs_1", "evt")  # only an unpaid, unfinished session expires
    with pytest.raises(InvalidTransition):
        cart.record_awaiting_payment("cs_1", "evt")
    cart.record_payment_failed("cs_1", "evt")
    with pytest.raises(InvalidTransition):
        cart.record_payment_failed("cs_1", "evt")
    with pytest.raises(InvalidTransition):
        cart.record_expired("cs_1", "evt")
    with pytest.raises(UnknownCheckoutSession):
        cart.record_expired("cs_never", "evt")
    assert cart.status == "open"
    # A failed payment that clears after all (the customer paid again) is decided like any.
    cart.convert("cs_1", order_id_for("cs_1"), "evt")
    assert cart.status == "converted"


# ---- orders --------------------------------------------------------------------------


def test_an_order_is_placed_then_awaits_then_is_confirmed() -> None:
    order = Order(
        checkout_session_id="cs_1",
        cart_id=uuid4(),
        lines=LINES,
        amount_total=1000,
        currency="usd",
        payment_intent=None,
        cause="evt",
    )
    assert order.status == OrderStatus.PROCESSING
    assert not order.is_decided
    order.await_payment("evt")
    assert order.status == OrderStatus.AWAITING_PAYMENT
    order.confirm_payment("pi_1", "evt")
    assert order.status == OrderStatus.CONFIRMED
    assert order.payment_intent == "pi_1"
    assert order.is_decided
    assert names(order) == ["OrderPlaced", "AwaitingPayment", "PaymentConfirmed"]


def test_a_rejected_order_requests_a_refund_then_records_it() -> None:
    order = placed_order()
    order.reject(Rejection.OUT_OF_STOCK, "pi_9", "evt")
    assert order.status == OrderStatus.REFUND_PENDING
    assert order.rejection_reason == "out_of_stock"
    assert order.payment_intent == "pi_9"
    assert names(order) == ["OrderRejected", "RefundRequested"]
    order.follow_refund("re_1", "pending", 1000, None, "worker")
    assert (order.status, order.refund_id) == (OrderStatus.REFUND_PENDING, "re_1")
    assert names(order) == ["RefundSubmitted"]
    order.follow_refund("re_1", "pending", 1000, None, "stripe:evt_2")  # the same news again
    assert names(order) == []
    order.follow_refund("re_1", "succeeded", 1000, None, "stripe:evt_3")
    assert (order.status, order.refund_id) == (OrderStatus.REFUNDED, "re_1")
    assert names(order) == ["RefundIssued"]
    # A refund can still fail after it succeeded (Stripe: the card was closed meanwhile).
    order.follow_refund("re_1", "failed", 1000, "expired_or_canceled_card", "stripe:evt_4")
    assert (order.status, order.refund_failure) == (
        OrderStatus.REFUND_FAILED,
        "expired_or_canceled_card",
    )
    assert names(order) == ["RefundFailed"]


def test_a_refused_refund_is_flagged_until_a_refund_succeeds() -> None:
    order = placed_order()
    order.reject(Rejection.OUT_OF_STOCK, "pi_9", "evt")
    order.refuse_refund("charge_disputed", "worker")
    assert (order.status, order.refund_failure) == (OrderStatus.REFUND_FAILED, "charge_disputed")
    order.follow_refund("re_by_hand", "pending", 1000, None, "stripe:evt_2")
    assert (
        order.status == OrderStatus.REFUND_FAILED
    )  # still a person's to watch until the money is back
    order.follow_refund("re_by_hand", "succeeded", 1000, None, "stripe:evt_3")
    assert (order.status, order.refund_id) == (OrderStatus.REFUNDED, "re_by_hand")
    assert names(order) == [
        "OrderRejected", "RefundRequested", "RefundFailed", "RefundSubmitted", "RefundIssued"
    ]  # fmt: skip


def test_outside_refunds_and_disputes_are_recorded_once_and_a_refund_moves_a_placed_order() -> None:
    order = placed_order()
    order.confirm_payment("pi_1", "evt")
    order.collect_events()
    for _ in range(2):
        order.note_outside_refund("re_dash", "succeeded", 500, "usd", "stripe:evt_r")
        order.note_dispute("dp_1", "needs_response", 1000, "usd", "fraudulent", "stripe:evt_d")
    order.note_dispute("dp_1", "lost", 1000, "usd", "fraudulent", "stripe:evt_c")
    order.note_dispute("dp_1", "lost", 1000, "usd", "fraudulent", "stripe:evt_c2")
    # A Dashboard refund is money back: half of it here. A dispute changes no status.
    assert order.status == OrderStatus.PARTIALLY_REFUNDED
    assert names(order) == [
        "OutsideRefundRecorded", "OrderStatusChanged", "DisputeOpened", "DisputeClosed"
    ]  # fmt: skip
    assert (order.outside_refunds, order.disputes) == ({"re_dash": "succeeded"}, {"dp_1": "lost"})


def test_a_delayed_payment_can_fail_and_still_clear_later() -> None:
    order = placed_order()
    order.await_payment("evt")
    order.fail_payment("evt")
    assert order.status == OrderStatus.PAYMENT_FAILED
    assert not order.is_decided
    order.confirm_payment("pi_1", "evt_cleared")
    assert order.status == OrderStatus.CONFIRMED


@pytest.mark.parametrize(
    ("setup", "attempt"),
    [
        ([], lambda o: o.follow_refund("re_1", "succeeded", 1, None, "w")),
        ([], lambda o: o.refuse_refund("charge_disputed", "w")),
        (["confirm"], lambda o: o.confirm_payment("pi", "e")),
        (["confirm"], lambda o: o.await_payment("e")),
        (["confirm"], lambda o: o.fail_payment("e")),
        (["confirm"], lambda o: o.reject(Rejection.OUT_OF_STOCK, None, "e")),
        (["confirm"], lambda o: o.follow_refund("re_1", "succeeded", 1, None, "w")),
        (["await"], lambda o: o.await_payment("e")),
        (["reject"], lambda o: o.confirm_payment("pi", "e")),
        (["reject"], lambda o: o.reject(Rejection.OUT_OF_STOCK, None, "e")),
        (["reject", "refund"], lambda o: o.refuse_refund("charge_disputed", "w")),
        (["fail"], lambda o: o.fail_payment("e")),
    ],
)
def test_invalid_order_transitions_are_refused(setup: list[str], attempt: Any) -> None:
    order = placed_order()
    steps = {
        "confirm": lambda: order.confirm_payment("pi", "e"),
        "await": lambda: order.await_payment("e"),
        "reject": lambda: order.reject(Rejection.OUT_OF_STOCK, None, "e"),
        "refund": lambda: order.follow_refund("re_1", "succeeded", 1, None, "w"),
        "fail": lambda: order.fail_payment("e"),
    }
    for step in setup:
        steps[step]()
    order.collect_events()
    status, version = order.status, order.version
    with pytest.raises(InvalidTransition) as caught:
        attempt(order)
    assert caught.value.code == "invalid_transition"
    assert (order.status, order.version) == (status, version)
    assert names(order) == []


# ---- identities and events -----------------------------------------------------------


def test_ids_are_deterministic() -> None:
    assert order_id_for("cs_1") == order_id_for("cs_1") == placed_order("cs_1").id
    assert order_id_for("cs_1") != order_id_for("cs_2")
    assert inventory_item_id("mug") == InventoryItem.new("mug", "Mug", 1, "usd", "t").id
    assert inventory_item_id("mug") != inventory_item_id("Mug")
    assert inventory_item_id("x") != order_id_for("x")
    assert isinstance(order_id_for("cs_1"), UUID)


def test_every_event_carries_its_cause_and_a_utc_timestamp() -> None:
    item = InventoryItem.new("mug", "Mug", 500, "usd", "c:list")
    item.change_details("Mug 2", 600, "usd", "c:details")
    item.adjust_stock(5, None, "c:receive")
    item.adjust_stock(-1, "broken", "c:writeoff")
    order = Order(
        checkout_session_id="cs_1",
        cart_id=uuid4(),
        lines=LINES,
        amount_total=1000,
        currency="usd",
        payment_intent=None,
        cause="c:place",
    )
    item.reserve(order.id, 2, "c:reserve")
    order.await_payment("c:await")
    order.confirm_payment("pi", "c:confirm")
    other = placed_order("cs_2")
    other.reject(Rejection.OUT_OF_STOCK, None, "c:reject")
    other.follow_refund("re_1", "succeeded", 1000, None, "c:refund")
    cart = Cart(user_id=None, cause="c:cart")
    cart.set_line("mug", 1, "c:line")
    cart.start_checkout("cs_1", LINES, 1000, "usd", "c:start")
    cart.start_checkout("cs_2", LINES, 1000, "usd", "c:start2")
    cart.start_checkout("cs_3", LINES, 1000, "usd", "c:start3")
    cart.record_awaiting_payment("cs_1", "c:awaiting")
    cart.record_payment_failed("cs_1", "c:failed")
    cart.record_expired("cs_2", "c:expired")
    cart.record_rejected("cs_3", order.id, "out_of_stock", "c:rejected")
    cart.start_checkout("cs_4", LINES, 1000, "usd", "c:start4")
    cart.convert("cs_4", order.id, "c:convert")

    events = [*item.collect_events(), *order.collect_events(), *other.collect_events()]
    events += cart.collect_events()
    seen = set()
    for e in events:
        kind = type(e).__name__
        seen.add(kind)
        assert isinstance(e.cause, str) and e.cause.startswith("c:"), kind  # type: ignore[attr-defined]
        assert e.timestamp.utcoffset() == timedelta(0), kind
    assert seen >= {
        "ProductListed",
        "ProductDetailsChanged",
        "StockReceived",
        "StockWrittenOff",
        "StockReserved",
        "OrderPlaced",
        "AwaitingPayment",
        "PaymentConfirmed",
        "OrderRejected",
        "RefundRequested",
        "RefundIssued",
        "CartCreated",
        "CartLineSet",
        "CheckoutStarted",
        "CheckoutAwaitingPayment",
        "CheckoutPaymentFailed",
        "CheckoutExpired",
        "CheckoutRejected",
        "CartConverted",
    }


def test_domain_errors_carry_snake_case_codes() -> None:
    errors: list[DomainError] = [
        UnknownProduct("x"),
        UnknownCart(uuid4()),
        InvalidProduct("x"),
        InvalidQuantity("x"),
        InsufficientStock("x", 2, 1),
        CartClosed(),
        EmptyCart(),
        CurrencyMismatch("usd", "eur"),
        UnknownCheckoutSession("cs"),
        InvalidTransition("x"),
    ]
    for error in errors:
        assert error.code.islower() and " " not in error.code and error.code != "domain_error"
        assert str(error)


# ---- the service, in memory ----------------------------------------------------------


@pytest.fixture
def app() -> Iterator[Ledger]:
    service = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    try:
        yield service
    finally:
        service.close()


def stocked(app: Ledger, sku: str, quantity: int, currency: str = "usd") -> None:
    app.put_product(sku, f"Product {sku}", 500, currency, "test")
    if quantity:
        app.adjust_stock(sku, quantity, "delivery", "test")


def paid_checkout(app: Ledger, lines: dict[str, int], session_id: str) -> PaidSession:
    cart = app.create_cart("u1", "test")
    for sku, quantity in lines.items():
        app.set_cart_line(cart.id, sku, quantity, "test")
    priced = app.price(app.get_cart(cart.id))
    app.start_checkout(priced, session_id, "test")
    assert priced.currency is not None
    return PaidSession(session_id, cart.id, priced.amount_total, priced.currency, "pi_1")


def log_length(app: Ledger) -> int:
    return len(app.recorder.select_notifications(1, 10_000))


def test_service_lists_a_product_once_and_changes_it(app: Ledger) -> None:
    item, created = app.put_product("mug", "Mug", 500, "usd", "t")
    assert created
    events = log_length(app)
    item, created = app.put_product("mug", "Mug", 500, "usd", "t")
    assert not created
    assert log_length(app) == events
    item, created = app.put_product("mug", "Mug", 650, "usd", "t")
    assert not created and item.unit_amount == 650
    assert app.get_product("mug").unit_amount == 650
    with pytest.raises(UnknownProduct):
        app.get_product("nope")
    with pytest.raises(UnknownProduct):
        app.adjust_stock("nope", 1, None, "t")


def test_service_refuses_a_write_off_below_zero_and_stores_nothing(app: Ledger) -> None:
    stocked(app, "mug", 2)
    events = log_length(app)
    with pytest.raises(InsufficientStock):
        app.adjust_stock("mug", -3, "lost", "t")
    assert log_length(app) == events
    assert app.get_product("mug").on_hand == 2


def test_service_refuses_two_currencies_in_one_cart(app: Ledger) -> None:
    stocked(app, "mug", 5, "usd")
    stocked(app, "tee", 5, "eur")
    cart = app.create_cart(None, "t")
    app.set_cart_line(cart.id, "mug", 1, "t")
    events = log_length(app)
    with pytest.raises(CurrencyMismatch) as caught:
        app.set_cart_line(cart.id, "tee", 1, "t")
    assert caught.value.code == "currency_mismatch"
    assert log_length(app) == events
    assert app.get_cart(cart.id).lines == {"mug": 1}
    # Once the other currency's line is gone, the cart may switch.
    app.set_cart_line(cart.id, "mug", 0, "t")
    app.set_cart_line(cart.id, "tee", 2, "t")
    priced = app.price(app.get_cart(cart.id))
    assert (priced.currency, priced.amount_total) == ("eur", 1000)


def test_service_refuses_unknown_carts_and_products(app: Ledger) -> None:
    stocked(app, "mug", 1)
    cart = app.create_cart(None, "t")
    with pytest.raises(UnknownCart):
        app.get_cart(uuid4())
    with pytest.raises(UnknownCart):
        app.get_cart(inventory_item_id("mug"))  # an id, but not a cart's
    with pytest.raises(UnknownProduct):
        app.set_cart_line(cart.id, "nope", 1, "t")
    with pytest.raises(UnknownCart):
        app.set_cart_line(uuid4(), "mug", 1, "t")


def test_place_order_confirms_reserves_and_converts(app: Ledger) -> None:
    stocked(app, "mug", 3)
    stocked(app, "tee", 1)
    paid = paid_checkout(app, {"mug": 2, "tee": 1}, "cs_1")
    order = app.place_order(paid, "evt_1")
    assert order.status == OrderStatus.CONFIRMED
    assert order.id == order_id_for("cs_1")
    assert order.amount_total == 1500
    assert app.get_product("mug").on_hand == 1
    assert app.get_product("tee").on_hand == 0
    cart = app.get_cart(paid.cart_id)
    assert (cart.status, cart.order_id) == ("converted", order.id)
    with pytest.raises(CartClosed):
        app.set_cart_line(paid.cart_id, "mug", 1, "t")


def test_place_order_is_idempotent(app: Ledger) -> None:
    stocked(app, "mug", 3)
    paid = paid_checkout(app, {"mug": 2}, "cs_1")
    first = app.place_order(paid, "evt_1")
    events = log_length(app)
    again = app.place_order(paid, "evt_1-again")
    assert (again.id, again.status, again.version) == (
        first.id,
        OrderStatus.CONFIRMED,
        first.version,
    )
    assert log_length(app) == events
    assert app.get_product("mug").on_hand == 1


def test_out_of_stock_rejects_and_reopens_the_cart(app: Ledger) -> None:
    stocked(app, "mug", 2)
    paid = paid_checkout(app, {"mug": 2}, "cs_1")
    app.adjust_stock("mug", -1, "broken", "t")
    order = app.place_order(paid, "evt_1")
    assert (order.status, order.rejection_reason) == (OrderStatus.REFUND_PENDING, "out_of_stock")
    assert app.get_product("mug").on_hand == 1
    assert app.get_cart(paid.cart_id).status == "open"
    assert app.place_order(paid, "evt_1-again").status == OrderStatus.REFUND_PENDING
    refund = Refund("re_1", "succeeded", 1000, "usd", "pi_1", str(order.id))
    refunded = app.record_refund(order.id, refund, "worker")
    assert refunded.order.status == OrderStatus.REFUNDED
    assert refunded.events == ("RefundSubmitted", "RefundIssued")
    again = app.record_refund(order.id, refund, "worker")
    assert (again.events, again.order.version) == ((), refunded.order.version)


@pytest.mark.parametrize(("amount", "currency"), [(999, "usd"), (1000, "eur"), (1001, "usd")])
def test_an_amount_other_than_priced_is_rejected(app: Ledger, amount: int, currency: str) -> None:
    stocked(app, "mug", 5)
    paid = paid_checkout(app, {"mug": 2}, "cs_1")
    tampered = PaidSession("cs_1", paid.cart_id, amount, currency, "pi_1")
    order = app.place_order(tampered, "evt_1")
    assert (order.status, order.rejection_reason) == (OrderStatus.REFUND_PENDING, "amount_mismatch")
    assert app.get_product("mug").on_hand == 5


def test_a_second_paid_session_of_a_converted_cart_is_rejected(app: Ledger) -> None:
    stocked(app, "mug", 5)
    first = paid_checkout(app, {"mug": 1}, "cs_1")
    app.set_cart_line(first.cart_id, "mug", 2, "t")
    priced = app.price(app.get_cart(first.cart_id))
    app.start_checkout(priced, "cs_2", "t")
    second = PaidSession("cs_2", first.cart_id, priced.amount_total, "usd", "pi_2")
    assert app.place_order(second, "evt_2").status == OrderStatus.CONFIRMED
    late = app.place_order(first, "evt_1")
    assert (late.status, late.rejection_reason) == (
        OrderStatus.REFUND_PENDING,
        "cart_already_converted",
    )
    assert app.get_product("mug").on_hand == 3  # only the paid-first session's two units
    cart = app.get_cart(first.cart_id)
    assert (cart.status, cart.order_id) == ("converted", order_id_for("cs_2"))


def test_a_delayed_payment_awaits_then_confirms(app: Ledger) -> None:
    stocked(app, "mug", 2)
    paid = paid_checkout(app, {"mug": 2}, "cs_1")
    waiting = app.record_awaiting_payment("cs_1", paid.cart_id, "pi_1", "evt_1")
    assert waiting.status == OrderStatus.AWAITING_PAYMENT
    assert app.get_product("mug").on_hand == 2  # no stock taken yet
    assert app.get_cart(paid.cart_id).status == "checking_out"
    assert app.record_awaiting_payment("cs_1", paid.cart_id, "pi_1", "evt_1").version == (
        waiting.version
    )
    order = app.place_order(paid, "evt_2")
    assert order.status == OrderStatus.CONFIRMED
    assert app.get_product("mug").on_hand == 0


def test_a_failed_delayed_payment_and_an_expiry_reopen_the_cart(app: Ledger) -> None:
    stocked(app, "mug", 2)
    paid = paid_checkout(app, {"mug": 1}, "cs_1")
    app.record_awaiting_payment("cs_1", paid.cart_id, "pi_1", "evt_1")
    assert (
        app.record_payment_failed("cs_1", paid.cart_id, "evt_2").status
        == OrderStatus.PAYMENT_FAILED
    )
    assert app.get_cart(paid.cart_id).status == "open"
    priced = app.price(app.get_cart(paid.cart_id))
    app.start_checkout(priced, "cs_2", "t")
    assert app.get_cart(paid.cart_id).status == "checking_out"
    app.record_expired("cs_2", paid.cart_id, "evt_3")
    app.record_expired("cs_2", paid.cart_id, "evt_3-again")
    assert app.get_cart(paid.cart_id).status == "open"
    assert app.get_order(order_id_for("cs_2")) is None
    assert app.get_product("mug").on_hand == 2


def test_checking_out_an_empty_cart_is_refused_by_the_service(app: Ledger) -> None:
    cart = app.create_cart(None, "t")
    priced = app.price(cart)
    assert (priced.lines, priced.amount_total, priced.currency) == ([], 0, None)
    with pytest.raises(EmptyCart):
        cart.start_checkout("cs_1", priced.snapshot(), 0, "usd", "t")


def test_a_payment_that_clears_after_a_recorded_failure_becomes_an_order_or_a_refund(
    app: Ledger,
) -> None:
    stocked(app, "mug", 1)
    cleared = paid_checkout(app, {"mug": 1}, "cs_cleared")
    app.record_awaiting_payment("cs_cleared", cleared.cart_id, "pi_1", "evt_1")
    app.record_payment_failed("cs_cleared", cleared.cart_id, "evt_2")
    assert app.get_cart(cleared.cart_id).status == "open"
    order = app.place_order(cleared, "evt_3")  # Stripe now says the payment succeeded
    assert order.status == OrderStatus.CONFIRMED
    assert app.get_product("mug").on_hand == 0
    assert app.get_cart(cleared.cart_id).status == "converted"
    # A failure reported after the order was placed changes nothing: the money was taken.
    assert (
        app.record_payment_failed("cs_cleared", cleared.cart_id, "evt_4").status
        == OrderStatus.CONFIRMED
    )

    late = paid_checkout(app, {"mug": 1}, "cs_late")
    app.record_payment_failed("cs_late", late.cart_id, "evt_5")
    order = app.place_order(late, "evt_6")  # cleared, but the last mug went meanwhile
    assert (order.status, order.rejection_reason) == (OrderStatus.REFUND_PENDING, "out_of_stock")
