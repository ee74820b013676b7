"""The auditors' replay, invariants and report on stock holds and manual capture (issue 16),
fed synthetic stored records: fast, and no database needed. Each log is written as the
ledger stores it (topics `<module>:<Aggregate>.<Event>`, the event's fields as JSON), so what
is tested is what `ledger audit verify` and `ledger audit report` read."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    UUIDAsHex,
)

from ledger.domain import Cart, InventoryItem, Order, PaidSession, inventory_item_id, order_id_for
from ledger.domain.holds import place_hold, release_hold
from ledger.domain.pricing import PricedCart, PricedLine
from ledger.domain.vocabulary import HoldEnd, OrderStatus
from ledger.storage import Database
from projections.audit.invariants import (
    AUTHORIZATIONS,
    BALANCE,
    CAPTURE,
    HELD,
    HOLDS,
    ONE_OUTCOME,
    RETURNED,
    STOCK,
    Violation,
    balances,
    check_replay,
)
from projections.audit.records import Row
from projections.audit.replay import Replay
from projections.audit.report import build_report
from tests.processes import run_ledger
from tests.shop import Shop, eventually, running_shop

INVENTORY = "ledger.domain.inventory:InventoryItem"
CART = "ledger.domain.cart:Cart"
ORDER = "ledger.domain.order:Order"


@dataclass
class Log:
    """A log being written: each `add` stores one record at the next position."""

    rows: list[Row] = field(default_factory=list)

    def add(self, stream_id: UUID, topic: str, **fields: Any) -> int:
        position = len(self.rows) + 1
        stamp = {"_type_": "datetime_iso", "_data_": "2026-12-01T10:00:00+00:00"}
        state: dict[str, Any] = {"timestamp": stamp, "cause": "test", **fields}
        self.rows.append((position, stream_id, position, topic, json.dumps(state).encode()))
        return position

    def product(self, sku: str, stock: int) -> UUID:
        item = inventory_item_id(sku)
        self.add(item, f"{INVENTORY}.ProductListed", sku=sku, name=sku, unit_amount=500)
        self.add(item, f"{INVENTORY}.StockReceived", quantity=stock, reason=None)
        return item

    def hold(self, sku: str, hold_id: str, cart: UUID, quantity: int) -> int:
        return self.add(
            inventory_item_id(sku),
            f"{INVENTORY}.StockHeld",
            hold_id=hold_id,
            cart_id=str(cart),
            quantity=quantity,
            held_until="2026-12-01T10:15:00+00:00",
        )

    def release(self, sku: str, hold_id: str, quantity: int, reason: str = "time_up") -> int:
        return self.add(
            inventory_item_id(sku),
            f"{INVENTORY}.StockReleased",
            hold_id=hold_id,
            quantity=quantity,
            reason=reason,
        )

    def reserve(self, sku: str, order: UUID, quantity: int, hold_id: str | None = None) -> int:
        return self.add(
            inventory_item_id(sku),
            f"{INVENTORY}.StockReserved",
            order_id=str(order),
            quantity=quantity,
            hold_id=hold_id,
        )

    def placed(
        self, session: str, cart: UUID, lines: dict[str, int], amount: int, currency: str
    ) -> UUID:
        order = order_id_for(session)
        self.add(
            order,
            f"{ORDER}.OrderPlaced",
            checkout_session_id=session,
            cart_id=str(cart),
            lines=[
                {"sku": sku, "name": sku, "quantity": q, "unit_amount": 500}
                for sku, q in lines.items()
            ],
            amount_total=amount,
            currency=currency,
            payment_intent=f"pi_{session}",
        )
        return order

    def paid(
        self,
        session: str,
        cart: UUID,
        lines: dict[str, int],
        amount: int,
        currency: str = "usd",
        hold_id: str | None = None,
        manual: bool = False,
    ) -> UUID:
        """A paid session become the order, in one commit: stock taken (the cart's hold, if
        any), the cart converted; with manual capture, its capture requested."""
        order = self.placed(session, cart, lines, amount, currency)
        self.add(order, f"{ORDER}.PaymentConfirmed", payment_intent=f"pi_{session}")
        if manual:
            self.add(order, f"{ORDER}.CaptureRequested", amount=amount, currency=currency)
        for sku, quantity in lines.items():
            self.reserve(sku, order, quantity, hold_id)
        self.add(cart, f"{CART}.CartConverted", session_id=session, order_id=str(order))
        return order

    def captured(self, order: UUID, amount: int, currency: str = "usd") -> int:
        return self.add(order, f"{ORDER}.PaymentCaptured", amount=amount, currency=currency)

    def capture_failed(
        self, order: UUID, cart: UUID, session: str, lines: dict[str, int], code: str
    ) -> int:
        """Stripe refused the capture for good: in one commit, the order fails, each line's
        stock comes back and the cart is open again."""
        failed = self.add(order, f"{ORDER}.CaptureFailed", code=code)
        for sku, quantity in lines.items():
            self.add(
                inventory_item_id(sku),
                f"{INVENTORY}.StockReturned",
                order_id=str(order),
                quantity=quantity,
                reason="capture_failed",
            )
        self.add(cart, f"{CART}.CartReopened", session_id=session, order_id=str(order), reason=code)
        return failed

    def released(self, session: str, cart: UUID, amount: int, currency: str = "usd") -> UUID:
        """A manual-capture session that cannot be served: rejected, its authorization to be
        released (no refund), and later cancelled by Stripe."""
        order = self.placed(session, cart, {"mug": 1}, amount, currency)
        self.add(
            order, f"{ORDER}.OrderRejected", reason="out_of_stock", payment_intent=f"pi_{session}"
        )
        self.add(order, f"{ORDER}.ReleaseRequested", amount=amount, currency=currency)
        self.add(
            cart,
            f"{CART}.CheckoutRejected",
            session_id=session,
            order_id=str(order),
            reason="out_of_stock",
        )
        self.add(order, f"{ORDER}.AuthorizationReleased", status="canceled")
        return order

    def replay(self) -> Replay:
        return Replay().read(self.rows)

    def violations(self) -> list[Violation]:
        return check_replay(self.replay())


def money(count: int, amount: int) -> dict[str, int]:
    return {"count": count, "amount": amount}


# A currency's figures after the sale when the merchant neither refunded nor cancelled.
NO_AFTER_SALE: dict[str, Any] = {
    "merchant_refunds": {
        **money(0, 0),
        "succeeded": money(0, 0),
        "pending": money(0, 0),
        "failed": money(0, 0),
    },
    "merchant_refunds_by_reason": {},
    "cancellations": {"count": 0, "released": 0},
}


def named(violations: list[Violation], check: str) -> list[Violation]:
    return [v for v in violations if v.check == check]


# ---- holds ------------------------------------------------------------------------------------


def test_a_hold_taken_by_its_cart_s_order_ends_and_takes_stock_once() -> None:
    log = Log()
    item = log.product("mug", stock=2)
    cart = uuid4()
    log.hold("mug", "h1", cart, 2)
    log.paid("cs_1", cart, {"mug": 2}, 1000, hold_id="h1")

    replay = log.replay()

    assert check_replay(replay) == []
    stock = replay.stock[str(item)]
    # On hand went down once (2 -> 0), and the hold ended: nothing held, nothing over.
    assert (stock.on_hand, stock.held, stock.holds) == (0, 0, {})


def test_a_hold_taken_twice_is_named_where_the_second_take_is() -> None:
    log = Log()
    log.product("mug", stock=2)
    cart = uuid4()
    log.hold("mug", "h1", cart, 1)
    order = log.paid("cs_1", cart, {"mug": 1}, 500, hold_id="h1")
    again = log.reserve("mug", order, 1, hold_id="h1")

    violations = log.violations()

    (hold,) = named(violations, HOLDS)
    assert hold.positions == (again,)
    assert "hold h1 taken by an order, already ended at position" in hold.message
    # The order took its line twice, too.
    assert any("mug taken 2 times" in v.message for v in named(violations, ONE_OUTCOME))


def test_a_hold_released_ends_and_its_units_can_be_held_again() -> None:
    log = Log()
    item = log.product("mug", stock=1)
    log.hold("mug", "h1", uuid4(), 1)
    log.release("mug", "h1", 1)
    log.hold("mug", "h2", uuid4(), 1)  # the same unit, for someone else: not over

    replay = log.replay()

    assert check_replay(replay) == []
    stock = replay.stock[str(item)]
    assert (stock.on_hand, stock.held, list(stock.holds)) == (1, 1, ["h2"])


def test_a_hold_released_twice_or_never_placed_is_named() -> None:
    log = Log()
    log.product("mug", stock=1)
    log.hold("mug", "h1", uuid4(), 1)
    first = log.release("mug", "h1", 1)
    twice = log.release("mug", "h1", 1)
    stranger = log.release("mug", "h9", 1)
    taken = log.reserve("mug", log.placed("cs_1", uuid4(), {"mug": 1}, 500, "usd"), 1, "h8")

    holds = named(log.violations(), HOLDS)

    assert [(v.positions, v.message) for v in holds] == [
        ((twice,), f"mug: hold h1 released, already ended at position {first}"),
        ((stranger,), "mug: hold h9 released, never placed"),
        ((taken,), "mug: hold h8 taken by an order, never placed"),
    ]


def test_an_order_taking_another_cart_s_hold_is_named() -> None:
    log = Log()
    log.product("mug", stock=1)
    log.hold("mug", "h1", uuid4(), 1)
    log.paid("cs_1", uuid4(), {"mug": 1}, 500, hold_id="h1")

    (hold,) = named(log.violations(), HOLDS)

    assert "took a hold of cart" in hold.message


def test_a_planted_over_hold_fails_verify_naming_its_position() -> None:
    log = Log()
    log.product("mug", stock=2)
    log.hold("mug", "h1", uuid4(), 1)
    over = log.hold("mug", "h2", uuid4(), 2)  # 3 held of 2 on hand
    log.release("mug", "h2", 2)  # back to 1 held: fine again
    # Taking free stock under a live hold is the same fault: held 1, on hand 0.
    taken = log.reserve("mug", log.placed("cs_1", uuid4(), {"mug": 2}, 1000, "usd"), 2)

    held = named(log.violations(), HELD)

    assert [(v.positions, v.message) for v in held] == [
        ((over,), "mug: 3 held, 2 on hand"),
        ((taken,), "mug: 1 held, 0 on hand"),
    ]
    assert str(held[0]).startswith(f"held + taken never above on hand at position {over}: ")


def test_writing_off_held_stock_is_an_over_hold() -> None:
    log = Log()
    item = log.product("mug", stock=2)
    log.hold("mug", "h1", uuid4(), 2)
    written_off = log.add(item, f"{INVENTORY}.StockWrittenOff", quantity=1, reason="broken")

    assert [v.positions for v in named(log.violations(), HELD)] == [(written_off,)]


def test_reservations_recorded_before_holds_existed_take_free_stock() -> None:
    log = Log()
    item = log.product("mug", stock=1)
    order = log.placed("cs_1", cart := uuid4(), {"mug": 1}, 500, "usd")
    log.add(order, f"{ORDER}.PaymentConfirmed", payment_intent="pi_cs_1")
    # A version 1 StockReserved: no hold_id field at all.
    log.add(item, f"{INVENTORY}.StockReserved", order_id=str(order), quantity=1)
    log.add(cart, f"{CART}.CartConverted", session_id="cs_1", order_id=str(order))

    assert log.violations() == []


# ---- manual capture ---------------------------------------------------------------------------


def test_a_manual_capture_order_is_a_payment_only_once_captured() -> None:
    log = Log()
    log.product("mug", stock=1)
    cart = uuid4()
    log.hold("mug", "h1", cart, 1)
    order = log.paid("cs_1", cart, {"mug": 1}, 500, hold_id="h1", manual=True)

    awaiting = log.replay()
    assert check_replay(awaiting) == []
    usd = balances(list(awaiting.orders.values()))["usd"]
    # Authorized, not captured: no money taken yet, so nothing kept either.
    assert (usd.payments.count, usd.orders.count) == (0, 0)
    assert (usd.authorizations.count, usd.authorizations.amount) == (1, 500)
    assert (usd.awaiting_capture.count, usd.awaiting_capture.amount) == (1, 500)

    log.captured(order, 500)
    done = log.replay()

    assert check_replay(done) == []
    usd = balances(list(done.orders.values()))["usd"]
    figures = {
        name: (m.count, m.amount)
        for name, m in (
            ("payments", usd.payments),
            ("orders", usd.orders),
            ("authorizations", usd.authorizations),
            ("captured", usd.captured),
            ("awaiting", usd.awaiting_capture),
            ("released", usd.released),
        )
    }
    assert figures == {
        "payments": (1, 500),
        "orders": (1, 500),
        "authorizations": (1, 500),
        "captured": (1, 500),
        "awaiting": (0, 0),
        "released": (0, 0),
    }


def test_a_released_authorization_is_neither_a_payment_nor_a_refund() -> None:
    log = Log()
    log.product("mug", stock=0)
    log.released("cs_1", uuid4(), 500)

    replay = log.replay()

    assert check_replay(replay) == []
    usd = balances(list(replay.orders.values()))["usd"]
    assert usd.payments.count == 0
    assert sum(m.count for m in usd.refunds.values()) == 0
    assert (usd.authorizations.count, usd.released.count, usd.released.amount) == (1, 1, 500)


def test_a_failed_capture_returns_the_stock_and_the_cart_may_convert_again() -> None:
    log = Log()
    item = log.product("mug", stock=3)
    log.product("cup", stock=1)
    cart = uuid4()
    lines = {"mug": 2, "cup": 1}
    order = log.paid("cs_1", cart, lines, 1500, manual=True)
    log.capture_failed(order, cart, "cs_1", lines, "authorization_expired")
    # The customer pays again from the reopened cart: a second conversion is no violation.
    again = log.paid("cs_2", cart, {"mug": 1}, 500, manual=True)
    log.captured(again, 500)

    replay = log.replay()

    assert check_replay(replay) == []
    assert replay.stock[str(item)].on_hand == 2  # 3, 2 taken, 2 back, 1 taken
    usd = balances(list(replay.orders.values()))["usd"]
    assert (usd.authorizations.count, usd.authorizations.amount) == (2, 2000)
    assert (usd.capture_failed.count, usd.capture_failed.amount) == (1, 1500)
    assert (usd.captured.count, usd.captured.amount) == (1, 500)
    assert (usd.payments.count, usd.orders.count) == (1, 1)


def test_a_failed_capture_without_its_stock_back_or_with_it_twice_is_named() -> None:
    log = Log()
    log.product("mug", stock=3)
    log.product("cup", stock=3)
    cart = uuid4()
    order = log.paid("cs_1", cart, {"mug": 1, "cup": 1}, 1000, manual=True)
    # Only the mug comes back, twice; the cup never does.
    failed = log.capture_failed(order, cart, "cs_1", {"mug": 1}, "authorization_expired")
    twice = log.add(
        inventory_item_id("mug"),
        f"{INVENTORY}.StockReturned",
        order_id=str(order),
        quantity=1,
        reason="capture_failed",
    )

    returned = {
        v.message.rpartition(": ")[2]: v.positions for v in named(log.violations(), RETURNED)
    }

    assert returned == {
        "mug (1 taken) returned as [1, 1]": (failed + 1, twice),
        "cup (1 taken) returned as []": (failed,),
    }


def test_stock_returned_to_an_order_whose_capture_never_failed_is_named() -> None:
    log = Log()
    log.product("mug", stock=1)
    cart = uuid4()
    order = log.paid("cs_1", cart, {"mug": 1}, 500, manual=True)
    log.captured(order, 500)
    back = log.add(
        inventory_item_id("mug"),
        f"{INVENTORY}.StockReturned",
        order_id=str(order),
        quantity=1,
        reason="capture_failed",
    )
    reopened = log.add(
        cart, f"{CART}.CartReopened", session_id="cs_1", order_id=str(order), reason="x"
    )

    assert [v.positions for v in named(log.violations(), RETURNED)] == [(back,), (reopened,)]


def test_an_authorization_captured_twice_or_captured_and_refused_is_named() -> None:
    log = Log()
    log.product("mug", stock=2)
    twice = log.paid("cs_1", uuid4(), {"mug": 1}, 500, manual=True)
    first = log.captured(twice, 500)
    second = log.captured(twice, 500)
    cart = uuid4()
    both = log.paid("cs_2", cart, {"mug": 1}, 700, manual=True)
    captured = log.captured(both, 700)
    refused = log.capture_failed(both, cart, "cs_2", {"mug": 1}, "authorization_expired")

    violations = log.violations()

    capture = {v.positions: v.message for v in named(violations, CAPTURE)}
    assert capture[(first, second)].endswith("2 captures, 0 refused")
    assert capture[(captured, refused)].endswith("1 captures, 1 refused")
    # The money shows it too: more captured than authorized, more taken than kept.
    assert named(violations, AUTHORIZATIONS)
    assert named(violations, BALANCE)


def test_a_capture_other_than_authorized_or_never_requested_is_named() -> None:
    log = Log()
    log.product("mug", stock=2)
    order = log.paid("cs_1", uuid4(), {"mug": 1}, 500, manual=True)
    short = log.captured(order, 400)
    automatic = log.paid("cs_2", uuid4(), {"mug": 1}, 500)  # charged: nothing to capture
    stray = log.captured(automatic, 500)

    capture = {v.positions: v.message for v in named(log.violations(), CAPTURE)}

    assert capture[(short,)].endswith("captured 400 usd of 500 usd")
    assert capture[(stray,)].endswith("captured or refused, never requested")


# ---- per-currency figures and the report ------------------------------------------------------


def test_the_report_s_per_currency_figures_and_its_capture_failed_list() -> None:
    log = Log()
    log.product("mug", stock=10)
    # usd, automatic capture: one order kept, one refunded (as today).
    log.paid("cs_a", uuid4(), {"mug": 1}, 500)
    refunded = log.placed("cs_b", uuid4(), {"mug": 1}, 500, "usd")
    log.add(refunded, f"{ORDER}.OrderRejected", reason="out_of_stock", payment_intent="pi_b")
    log.add(refunded, f"{ORDER}.RefundRequested", amount=500, currency="usd")
    log.add(refunded, f"{ORDER}.RefundIssued", refund_id="re_b", amount=500)
    # eur, manual capture: captured, awaiting, released, refused.
    captured = log.paid("cs_c", uuid4(), {"mug": 1}, 1000, "eur", manual=True)
    log.captured(captured, 1000, "eur")
    log.paid("cs_d", uuid4(), {"mug": 2}, 2000, "eur", manual=True)
    log.released("cs_e", uuid4(), 300, "eur")
    cart = uuid4()
    refused = log.paid("cs_f", cart, {"mug": 1}, 700, "eur", manual=True)
    log.capture_failed(refused, cart, "cs_f", {"mug": 1}, "authorization_expired")

    replay = log.replay()
    assert check_replay(replay) == []
    report = build_report(replay, None, None, [], "600s").as_json()

    usd, eur = report["currencies"]["usd"], report["currencies"]["eur"]
    assert usd == {
        "payments": money(2, 1000),
        "orders": money(1, 500),
        "refunds_issued": money(1, 500),
        "refunds_pending": money(0, 0),
        "refunds_failed": money(0, 0),
        "disputes": 0,
        "disputes_lost": 0,
        "outside_refunds": money(0, 0),
        "authorizations": money(0, 0),
        "captured": money(0, 0),
        "released": money(0, 0),
        "awaiting_capture": money(0, 0),
        "capture_failed": money(0, 0),
        **NO_AFTER_SALE,
    }
    assert eur == {
        "payments": money(1, 1000),
        "orders": money(1, 1000),
        "refunds_issued": money(0, 0),
        "refunds_pending": money(0, 0),
        "refunds_failed": money(0, 0),
        "disputes": 0,
        "disputes_lost": 0,
        "outside_refunds": money(0, 0),
        "authorizations": money(4, 4000),
        "captured": money(1, 1000),
        "released": money(1, 300),
        "awaiting_capture": money(1, 2000),
        "capture_failed": money(1, 700),
        **NO_AFTER_SALE,
    }
    assert report["capture_failed"] == [
        {
            "order_id": str(refused),
            "checkout_session_id": "cs_f",
            "amount": 700,
            "currency": "eur",
            "code": "authorization_expired",
        }
    ]
    assert report["refund_failed"] == []


def test_an_authorization_counts_in_the_currency_stripe_authorized() -> None:
    # Priced 1000 usd, authorized 1000 eur: rejected and released, in eur (never usd).
    log = Log()
    log.product("mug", stock=1)
    cart = uuid4()
    order = log.placed("cs_1", cart, {"mug": 1}, 1000, "usd")
    log.add(order, f"{ORDER}.OrderRejected", reason="amount_mismatch", payment_intent="pi_1")
    log.add(order, f"{ORDER}.ReleaseRequested", amount=1000, currency="eur")

    replay = log.replay()

    assert check_replay(replay) == []
    figures = balances(list(replay.orders.values()))
    assert list(figures) == ["eur"]
    assert (figures["eur"].released.count, figures["eur"].released.amount) == (1, 1000)


def test_the_text_tables_add_manual_capture_only_when_there_is_some(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from web.audit_cli import _authorization_table, _balance_table

    log = Log()
    log.product("mug", stock=2)
    log.paid("cs_a", uuid4(), {"mug": 1}, 500)
    automatic = balances(list(log.replay().orders.values()))
    _authorization_table(automatic)
    assert capsys.readouterr().out == ""  # a shop that captures automatically: no new table

    order = log.paid("cs_b", uuid4(), {"mug": 1}, 700, manual=True)
    log.captured(order, 700)
    figures = balances(list(log.replay().orders.values()))
    _balance_table(figures)
    balance_rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    # The balance table keeps its shape (tests read its 16 words a row): payments, orders,
    # refunds issued, pending, failed.
    assert balance_rows[1][:7] == ["usd", "2", "/", "1200", "2", "/", "1200"]
    assert len(balance_rows[1]) == 16
    _authorization_table(figures)
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("usd")]
    assert line == (
        "usd: authorizations 1 / 700 = captured 1 / 700 + released 0 / 0"
        " + capture failed 0 / 0 + awaiting capture 0 / 0"
    )


# ---- the domain's own events, as stored ---------------------------------------------------------


@dataclass
class StoredLog:
    """The domain's aggregates, decided in memory, their events stored one commit at a time
    through the library's mapper (as the ledger stores them): the replay reads the fields the
    domain really records, not this file's idea of them."""

    rows: list[Row] = field(default_factory=list)

    def __post_init__(self) -> None:
        transcoder = JSONTranscoder()
        for transcoding in (UUIDAsHex(), DatetimeAsISO(), DecimalAsStr()):
            transcoder.register(transcoding)
        self.mapper: Mapper[UUID] = Mapper(transcoder=transcoder)

    def commit(self, *aggregates: Aggregate) -> None:
        for aggregate in aggregates:
            for event in aggregate.collect_events():
                stored = self.mapper.to_stored_event(event)
                position = len(self.rows) + 1
                originator = UUID(str(stored.originator_id))
                version = int(stored.originator_version)
                self.rows.append((position, originator, version, stored.topic, stored.state))


def test_the_domain_s_holds_and_captures_as_stored_verify_and_add_up() -> None:
    log = StoredLog()
    mug = InventoryItem.new("mug", "Mug", 500, "usd", "test")
    mug.adjust_stock(1, "delivery", "test")
    cup = InventoryItem.new("cup", "Cup", 700, "usd", "test")
    cup.adjust_stock(2, "delivery", "test")
    log.commit(mug, cup)

    def checkout(item: InventoryItem, quantity: int, sid: str, hold_id: str | None) -> Cart:
        cart = Cart(user_id=None, cause="test")
        cart.set_line(item.sku, quantity, "test", "usd")
        priced = PricedCart(cart, [PricedLine.of(item, quantity)], "usd")
        if hold_id is not None:
            place_hold(cart, priced, {item.sku: item}, hold_id, "2026-12-06T12:00:00+00:00", "test")
        cart.start_checkout(sid, priced.snapshot(), priced.amount_total, "usd", "test", hold_id)
        log.commit(cart, item)
        return cart

    def decide(cart: Cart, item: InventoryItem, sid: str, manual: bool) -> Order:
        order = Order.open(sid, cart, f"pi_{sid}", None, "test")
        amount = cart.session(sid)["amount_total"]
        paid = PaidSession(sid, cart.id, amount, "usd", f"pi_{sid}", None, manual)
        order.fulfil(paid, cart, [item], "test")
        log.commit(item, order, cart)  # a reservation stored before its order: as may be
        return order

    # The last mug: A's hold lapses, B holds it; A's late authorization is released, B's
    # captured.
    a = checkout(mug, 1, "cs_a", "h_a")
    release_hold(a, "h_a", [mug], HoldEnd.TIME_UP, "test")
    log.commit(mug, a)
    b = checkout(mug, 1, "cs_b", "h_b")
    late = decide(a, mug, "cs_a", manual=True)
    assert late.status == OrderStatus.RELEASED
    late.record_release("canceled", "test")
    log.commit(late)
    kept = decide(b, mug, "cs_b", manual=True)
    kept.record_capture(500, "usd", "test")
    log.commit(kept)
    # Two cups, held and authorized; the authorization lapses: the capture is refused, the
    # cups come back and the cart reopens; its customer then pays by card, captured at once.
    c = checkout(cup, 2, "cs_c", "h_c")
    lapsed = decide(c, cup, "cs_c", manual=True)
    lapsed.capture_refused("authorization_expired", c, [cup], "test")
    log.commit(lapsed, cup, c)
    c.start_checkout("cs_c2", c.session("cs_c")["lines"], 1400, "usd", "test")
    log.commit(c)
    charged = decide(c, cup, "cs_c2", manual=False)
    assert charged.status == OrderStatus.CONFIRMED

    replay = Replay().read(log.rows)

    assert check_replay(replay) == []
    assert {f.sku: (f.on_hand, f.held) for f in replay.stock.values()} == {
        "mug": (0, 0),
        "cup": (0, 0),
    }
    report = build_report(replay, None, None, [], "600s").as_json()
    usd = report["currencies"]["usd"]
    assert {k: usd[k] for k in ("payments", "orders", "refunds_pending")} == {
        "payments": money(2, 1900),  # the mug captured, the cups charged
        "orders": money(2, 1900),
        "refunds_pending": money(0, 0),  # the late mug was released, never refunded
    }
    assert {k: usd[k] for k in MANUAL_KEYS} == {
        "authorizations": money(3, 2400),
        "captured": money(1, 500),
        "released": money(1, 500),
        "awaiting_capture": money(0, 0),
        "capture_failed": money(1, 1400),
    }
    assert [(f["order_id"], f["code"]) for f in report["capture_failed"]] == [
        (str(lapsed.id), "authorization_expired")
    ]

    # And the same log with the taken hold's reservation planted a second time: caught.
    (taken,) = [r for r in log.rows if r[3].endswith(".StockReserved") and b"h_b" in r[4]]
    planted = (len(log.rows) + 1, taken[1], len(log.rows) + 1, taken[3], taken[4])
    violations = check_replay(Replay().read([*log.rows, planted]))
    assert [v.check for v in violations if v.positions == (planted[0],)] == [STOCK, HOLDS]
    assert any("mug taken 2 times" in v.message for v in named(violations, ONE_OUTCOME))


MANUAL_KEYS = ("authorizations", "captured", "released", "awaiting_capture", "capture_failed")


# ---- through the running ledger -----------------------------------------------------------------


def test_a_shop_with_holds_and_manual_capture_verifies_and_reports_what_stripe_captured(
    database: Database, tmp_path: Path
) -> None:
    """The only test here that needs PostgreSQL: what the ledger really stores (a hold
    released when its cart checked out again, holds taken by their orders, a checkout refused
    while the last units are held, captures by the worker) passes `ledger audit verify`, and
    the report's figures are what the stand-in captured."""
    with running_shop(database, LEDGER_STOCK_HOLD="30m", LEDGER_CAPTURE="manual") as shop:
        shop.product("mug", unit_amount=1200, stock=2)
        first = shop.cart(mug=1)
        shop.checkout(first)
        again = shop.checkout(first)  # the first session expired, its hold released
        other = shop.checkout(shop.cart(mug=1))
        refused = shop.api.post(f"/api/carts/{shop.cart(mug=1)}/checkout")
        assert refused.status_code == 409, refused.text  # both mugs held
        for sid in (again, other):
            shop.stripe.complete(sid, "pay")
        eventually(lambda: all(shop.status(s) == "confirmed" for s in (again, other)), 20)
        eventually(lambda: captured_in_log(database) == 2, 20)

        done = run_ledger(tmp_path, "audit", "verify", LEDGER_DATABASE_URL=database.conninfo_url())
        assert done.returncode == 0, done.stdout + done.stderr
        report = run_ledger(
            tmp_path, "audit", "report", "--json", LEDGER_DATABASE_URL=database.conninfo_url()
        )
        assert report.returncode == 0, report.stderr

    usd = json.loads(report.stdout)["currencies"]["usd"]
    assert {k: usd[k] for k in ("payments", "orders", "refunds_pending", *MANUAL_KEYS)} == {
        "payments": money(2, 2400),
        "orders": money(2, 2400),
        "refunds_pending": money(0, 0),
        "authorizations": money(2, 2400),
        "captured": money(2, 2400),
        "released": money(0, 0),
        "awaiting_capture": money(0, 0),
        "capture_failed": money(0, 0),
    }
    charged = [p for p in shop.stripe.payment_intents() if p["status"] == "succeeded"]
    assert sum(p["amount_received"] for p in charged) == usd["captured"]["amount"]
    assert "StockReleased" in topics_in_log(database)


def topics_in_log(database: Database) -> list[str]:
    with database.connect() as conn:
        rows = conn.execute("SELECT topic FROM ledger_events ORDER BY notification_id").fetchall()
    return [str(r[0]).rpartition(".")[2] for r in rows]


def captured_in_log(database: Database) -> int:
    return topics_in_log(database).count("PaymentCaptured")


def test_a_released_authorization_and_a_refused_capture_verify_and_are_reported(
    database: Database, tmp_path: Path
) -> None:
    """Manual capture without holds: two customers authorized for the last mug end as one
    captured order and one released authorization (no refund); a cup's authorization lapses
    while its capture waits to be retried, so Stripe refuses the capture: the order fails and
    the cup comes back. The log verifies, and the report lists the refused capture."""
    with running_shop(database, LEDGER_CAPTURE="manual") as shop:
        shop.product("mug", unit_amount=1200, stock=1)
        shop.product("cup", unit_amount=800, stock=1)
        race = [shop.checkout(shop.cart(mug=1)) for _ in range(2)]
        for sid in race:
            shop.stripe.complete(sid, "pay")
        eventually(lambda: sorted(shop.status(s) for s in race) == ["confirmed", "released"], 20)

        # The cup's first two captures fail for a while (Stripe answers 500): the
        # authorization lapses before the worker tries again.
        lapsing = shop.checkout(shop.cart(cup=1))
        shop.stripe.webhook_url = None  # paid, but the ledger is told only below
        shop.stripe.complete(lapsing, "pay")
        shop.stripe.fail_next(2, 500, path=capture_path(shop, lapsing))
        shop.stripe.webhook_url = f"{shop.url}/webhooks/stripe"
        assert shop.deliver("checkout.session.completed", lapsing).status_code == 200
        eventually(lambda: shop.status(lapsing) == "confirmed", 20)
        eventually(lambda: capture_calls(shop, lapsing) >= 1, 20)
        shop.stripe.lapse_authorization(lapsing)
        eventually(lambda: shop.status(lapsing) == "payment_failed", 30)
        eventually(lambda: shop.available("cup") == 1, 20)
        eventually(lambda: "AuthorizationReleased" in topics_in_log(database), 20)

        done = run_ledger(tmp_path, "audit", "verify", LEDGER_DATABASE_URL=database.conninfo_url())
        assert done.returncode == 0, done.stdout + done.stderr
        report = run_ledger(
            tmp_path, "audit", "report", "--json", LEDGER_DATABASE_URL=database.conninfo_url()
        )
        assert report.returncode == 0, report.stderr
        table = run_ledger(tmp_path, "audit", "report", LEDGER_DATABASE_URL=database.conninfo_url())

    built = json.loads(report.stdout)
    usd = built["currencies"]["usd"]
    assert {k: usd[k] for k in ("payments", "orders", "refunds_pending", *MANUAL_KEYS)} == {
        "payments": money(1, 1200),
        "orders": money(1, 1200),
        "refunds_pending": money(0, 0),  # the race's loser was released, not refunded
        "authorizations": money(3, 3200),
        "captured": money(1, 1200),
        "released": money(1, 1200),
        "awaiting_capture": money(0, 0),
        "capture_failed": money(1, 800),
    }
    (refused,) = built["capture_failed"]
    assert (refused["checkout_session_id"], refused["amount"], refused["currency"]) == (
        lapsing,
        800,
        "usd",
    )
    assert refused["code"]
    assert "captures Stripe refused (capture_failed): 1" in table.stdout
    assert f"session {lapsing}  800 usd" in table.stdout
    assert shop.stripe.refunds() == []


def capture_calls(shop: Shop, session_id: str) -> int:
    """How often the ledger asked Stripe to capture the session's payment."""
    return sum(r["path"] == capture_path(shop, session_id) for r in shop.stripe.requests())


def capture_path(shop: Shop, session_id: str) -> str:
    return f"/v1/payment_intents/{shop.stripe.payment_intent_of(session_id)}/capture"
