"""The read models after the sale (issue 17): the merchant's refunds and cancellation of a placed
order, and refunds made in Stripe's Dashboard, as the merchant's orders (`projections.orders`),
the storefront's status (`projections.order_status`) and the auditors' order history show them.

Driven through a real `Ledger` on PostgreSQL, with the read models kept by real workers. The
merchant's decisions are the order's own (`Order.refund`, `Order.cancel`, and what Stripe says
of the refunds, `Order.follow_merchant_refund`), saved with the stock they return in one commit,
as a command does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import pytest

from ledger.application import Ledger
from ledger.domain import InventoryItem, Order, PaidSession
from ledger.payments import Refund
from ledger.storage import Database
from projections import (
    OrderHistories,
    Orders,
    OrderStatuses,
    ReadStore,
    default_projections,
    rebuild_all,
    verify_all,
)
from tests.test_projections import caught_up, start_checkout, stock, workers

CAUSE = "test"
READ_MODELS = [p.name for p in default_projections()]


class AfterSale:
    """One shop's ledger and read models, and what the merchant does with its orders."""

    def __init__(self, database: Database, app: Ledger, reads: ReadStore) -> None:
        self.database = database
        self.app = app
        self.orders = Orders(reads, consistent=False)
        self.statuses = OrderStatuses(reads, consistent=False)
        self.histories = OrderHistories(reads, consistent=False)

    def place(self, session_id: str, *, authorized_only: bool = False, **lines: int) -> UUID:
        paid = start_checkout(self.app, session_id, **lines)
        if authorized_only:
            paid = PaidSession(
                paid.session_id,
                paid.cart_id,
                paid.amount_total,
                paid.currency,
                paid.payment_intent,
                authorized_only=True,
            )
        order = self.app.place_order(paid, CAUSE)
        assert order.status == "confirmed", order.status
        return order.id

    def decide(
        self, order_id: UUID, decision: Callable[[Order, dict[str, InventoryItem]], Any]
    ) -> None:
        """`decision` on the order and its lines' items, saved in one commit."""
        order: Order = self.app.repository.get(order_id)
        items: dict[str, InventoryItem] = {
            line["sku"]: self.app.repository.get(InventoryItem.create_id(line["sku"]))
            for line in order.lines
        }
        decision(order, items)
        self.app.save(order, *items.values())

    def refund(
        self,
        order_id: UUID,
        refund_id: str,
        *,
        lines: dict[str, int] | None = None,
        amount: int | None = None,
        restock: bool = True,
        reason: str | None = None,
    ) -> None:
        self.decide(
            order_id,
            lambda order, items: order.refund(
                refund_id,
                lines=lines,
                amount=amount,
                restock=restock,
                reason=reason,
                items=items,
                cause=CAUSE,
            ),
        )

    def cancel(self, order_id: UUID, request_id: str, *, restock: bool = True) -> None:
        self.decide(
            order_id,
            lambda order, items: order.cancel(
                request_id, restock=restock, reason="customer asked", items=items, cause=CAUSE
            ),
        )

    def stripe_says(
        self, order_id: UUID, refund_id: str, status: str, failure: str | None = None
    ) -> None:
        """Stripe's news of a merchant refund (its Stripe id derived from the ledger's)."""
        self.decide(
            order_id,
            lambda order, _: order.follow_merchant_refund(
                refund_id, f"re_{refund_id}", status, failure, CAUSE
            ),
        )

    def order(self, order_id: UUID) -> dict[str, Any]:
        assert caught_up(self.database, READ_MODELS, timeout=10)
        found = self.orders.get(order_id)
        assert found is not None
        return found

    def status(self, session_id: str) -> str:
        assert caught_up(self.database, READ_MODELS, timeout=10)
        body = self.statuses.get(session_id)
        assert body is not None
        status: str = body["status"]
        return status

    def history(self, order_id: UUID) -> list[dict[str, Any]]:
        assert caught_up(self.database, READ_MODELS, timeout=10)
        events = self.histories.events(order_id)
        assert events is not None
        return events

    def on_hand(self, sku: str) -> int:
        on_hand: int = self.app.get_product(sku).on_hand
        return on_hand


@pytest.fixture
def shop(database: Database, ledger: Ledger) -> Iterator[AfterSale]:
    reads = ReadStore(database)
    try:
        with workers(database):
            yield AfterSale(database, ledger, reads)
    finally:
        reads.close()


def refunds(order: dict[str, Any]) -> list[tuple[str, int, str, str | None, list[Any]]]:
    return [
        (r["refund_id"], r["amount"], r["status"], r["reason"], r["restocked"])
        for r in order["refunds"]
    ]


def refunded_quantities(order: dict[str, Any]) -> dict[str, int]:
    return {item["sku"]: item["quantity_refunded"] for item in order["items"]}


def assert_a_replay_gives_the_same(shop: AfterSale, *order_ids: UUID) -> None:
    """Every read model equals a fresh replay of the log, and a rebuild changes no order."""
    before = [shop.order(order_id) for order_id in order_ids]
    assert verify_all(shop.database) == {name: [] for name in READ_MODELS}
    rebuild_all(shop.database)
    assert [shop.order(order_id) for order_id in order_ids] == before


# ---- the merchant's refunds --------------------------------------------------------------------


def test_refunds_by_lines_and_by_amount_show_their_lines_restock_and_status(
    shop: AfterSale,
) -> None:
    stock(shop.app, "mug", 5, unit_amount=1000)
    stock(shop.app, "pen", 5, unit_amount=300)
    order_id = shop.place("cs_lines", mug=2, pen=1)
    assert shop.on_hand("mug") == 3

    shop.refund(order_id, "mr_1", lines={"mug": 1}, reason="damaged")
    order = shop.order(order_id)
    assert order["status"] == "partially_refunded"
    assert refunds(order) == [("mr_1", 1000, "pending", "damaged", [{"sku": "mug", "quantity": 1}])]
    assert refunded_quantities(order) == {"mug": 1, "pen": 0}
    assert order["amount_refunded"] == 0  # not back with the customer yet
    assert shop.status("cs_lines") == "partially_refunded"
    assert shop.on_hand("mug") == 4  # back on hand in the refund's own commit

    shop.stripe_says(order_id, "mr_1", "pending")  # Stripe made it: nothing changes here
    assert refunds(shop.order(order_id))[0][2] == "pending"
    shop.stripe_says(order_id, "mr_1", "succeeded")
    order = shop.order(order_id)
    assert refunds(order)[0][2] == "succeeded"
    assert order["amount_refunded"] == 1000
    assert order["status"] == "partially_refunded"

    # The rest by amount: no line refunded, nothing restocked; nothing remains of the payment.
    shop.refund(order_id, "mr_2", amount=1300, restock=False)
    order = shop.order(order_id)
    assert order["status"] == "refunded"
    assert refunds(order)[1] == ("mr_2", 1300, "pending", None, [])
    assert refunded_quantities(order) == {"mug": 1, "pen": 0}
    assert order["amount_refunded"] == 1000
    assert shop.status("cs_lines") == "refunded"
    shop.stripe_says(order_id, "mr_2", "succeeded")
    order = shop.order(order_id)
    assert order["amount_refunded"] == 2300 == order["amount_captured"]
    # Lines and amounts unchanged by the refunds: the order as it was charged.
    assert (order["amount_total"], [i["quantity"] for i in order["items"]]) == (2300, [2, 1])
    assert [json.loads(o) for o in shop.orders.page(status="refunded").orders] == [order]

    # The auditors' history: the refunds, the status they came to and the stock they returned.
    events = shop.history(order_id)
    mine = [(e["stream"], e["type"]) for e in events if e["type"] not in ("OrderPlaced",)]
    assert ("order", "MerchantRefundRequested") in mine
    assert ("order", "MerchantRefundSubmitted") in mine
    assert ("order", "MerchantRefundSucceeded") in mine
    assert [e["data"]["status"] for e in events if e["type"] == "OrderStatusChanged"] == [
        "partially_refunded",
        "refunded",
    ]
    returned = [e for e in events if e["type"] == "StockReturned"]
    assert [(e["stream"], e["data"]["quantity"], e["data"]["reason"]) for e in returned] == [
        ("inventory", 1, "refunded")
    ]
    assert [e["position"] for e in events] == sorted(e["position"] for e in events)

    assert_a_replay_gives_the_same(shop, order_id)


def test_a_failed_refund_flags_the_order_until_the_next_refund(shop: AfterSale) -> None:
    stock(shop.app, "mug", 5, unit_amount=1000)
    order_id = shop.place("cs_failed", mug=3)

    shop.refund(order_id, "mr_1", lines={"mug": 1})
    shop.stripe_says(order_id, "mr_1", "failed", "expired_or_canceled_card")
    order = shop.order(order_id)
    assert order["status"] == "refund_failed"
    assert refunds(order) == [("mr_1", 1000, "failed", None, [{"sku": "mug", "quantity": 1}])]
    # Its line stays refunded and its stock back on hand: the order's book keeps it so.
    assert refunded_quantities(order) == {"mug": 1}
    assert order["amount_refunded"] == 0
    assert shop.status("cs_failed") == "refund_failed"
    assert [json.loads(o) for o in shop.orders.page(status="refund_failed").orders] == [order]

    # Stripe refusing to make one at all fails it too (no Stripe id to show).
    shop.refund(order_id, "mr_2", amount=500)
    assert shop.status("cs_failed") == "partially_refunded"  # a new refund clears the flag
    shop.decide(order_id, lambda order, _: order.refuse_merchant_refund("mr_2", "no", CAUSE))
    assert refunds(shop.order(order_id))[1][:3] == ("mr_2", 500, "failed")
    assert shop.status("cs_failed") == "refund_failed"

    shop.refund(order_id, "mr_3", amount=700)
    shop.stripe_says(order_id, "mr_3", "succeeded")
    order = shop.order(order_id)
    assert order["status"] == "partially_refunded"
    assert [r[2] for r in refunds(order)] == ["failed", "failed", "succeeded"]
    assert order["amount_refunded"] == 700
    assert shop.status("cs_failed") == "partially_refunded"

    assert_a_replay_gives_the_same(shop, order_id)


# ---- cancellation ------------------------------------------------------------------------------


def test_a_cancel_refunds_the_rest_and_lists_it_with_what_it_restocked(shop: AfterSale) -> None:
    stock(shop.app, "mug", 5, unit_amount=1000)
    stock(shop.app, "pen", 5, unit_amount=300)
    order_id = shop.place("cs_cancel", mug=2, pen=1)
    shop.refund(order_id, "mr_pen", lines={"pen": 1}, restock=False, reason="missing")
    shop.stripe_says(order_id, "mr_pen", "succeeded")

    shop.cancel(order_id, "cancel_1")
    order = shop.order(order_id)
    assert order["status"] == "cancelled"
    # The cancel's refund is the rest, under the cancel's request id, with what it restocked.
    assert refunds(order) == [
        ("mr_pen", 300, "succeeded", "missing", []),
        ("cancel_1", 2000, "pending", "customer asked", [{"sku": "mug", "quantity": 2}]),
    ]
    assert refunded_quantities(order) == {"mug": 2, "pen": 1}
    assert order["amount_refunded"] == 300
    assert shop.status("cs_cancel") == "cancelled"
    assert (shop.on_hand("mug"), shop.on_hand("pen")) == (5, 4)

    shop.stripe_says(order_id, "cancel_1", "succeeded")
    order = shop.order(order_id)
    assert (order["status"], order["amount_refunded"]) == ("cancelled", 2300)
    assert [json.loads(o) for o in shop.orders.page(status="cancelled").orders] == [order]

    events = shop.history(order_id)
    cancelled = [e for e in events if e["type"] == "OrderCancelled"]
    assert [(e["stream"], e["data"]["restocked"]) for e in cancelled] == [("order", [])]
    assert [e["data"]["reason"] for e in events if e["type"] == "StockReturned"] == ["cancelled"]

    assert_a_replay_gives_the_same(shop, order_id)


def test_a_cancelled_authorization_lists_no_refund_but_its_stock_is_in_the_history(
    shop: AfterSale,
) -> None:
    stock(shop.app, "mug", 5, unit_amount=1000)
    order_id = shop.place("cs_release", authorized_only=True, mug=2)
    assert shop.order(order_id)["amount_captured"] == 0  # only authorized

    shop.cancel(order_id, "cancel_1")
    order = shop.order(order_id)
    # Nothing was taken, so nothing is refunded: the authorization is released instead.
    assert (order["status"], order["refunds"], order["amount_refunded"]) == ("cancelled", [], 0)
    assert refunded_quantities(order) == {"mug": 0}
    assert shop.status("cs_release") == "cancelled"
    assert shop.on_hand("mug") == 5

    events = shop.history(order_id)
    [cancelled] = [e for e in events if e["type"] == "OrderCancelled"]
    assert cancelled["data"]["release"] is True
    assert cancelled["data"]["restocked"] == [{"sku": "mug", "quantity": 2}]
    returned = [e["data"] for e in events if e["type"] == "StockReturned"]
    assert [(d["quantity"], d["reason"]) for d in returned] == [(2, "cancelled")]

    assert_a_replay_gives_the_same(shop, order_id)


# ---- refunds made in Stripe's Dashboard --------------------------------------------------------


def test_a_partial_dashboard_refund_makes_the_order_partially_refunded_without_restock(
    shop: AfterSale,
) -> None:
    stock(shop.app, "mug", 5, unit_amount=1000)
    order_id = shop.place("cs_dash", mug=2)

    refund = Refund("re_dashboard", "succeeded", 600, "usd", "pi_cs_dash", None)
    shop.app.record_refund(order_id, refund, CAUSE)
    order = shop.order(order_id)
    assert order["status"] == "partially_refunded"
    assert refunds(order) == [("re_dashboard", 600, "succeeded", None, [])]
    assert order["amount_refunded"] == 600
    assert refunded_quantities(order) == {"mug": 0}  # no line: only money went back
    assert shop.on_hand("mug") == 3
    assert shop.status("cs_dash") == "partially_refunded"

    # The rest, in the Dashboard too: refunded.
    rest = Refund("re_dashboard_2", "succeeded", 1400, "usd", "pi_cs_dash", None)
    shop.app.record_refund(order_id, rest, CAUSE)
    assert shop.order(order_id)["status"] == "refunded"
    assert shop.status("cs_dash") == "refunded"
    types = [e["type"] for e in shop.history(order_id)]
    assert types.count("OutsideRefundRecorded") == 2 and "StockReturned" not in types

    assert_a_replay_gives_the_same(shop, order_id)
