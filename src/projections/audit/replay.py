"""One pass over the whole log, as stored, gathering what the ledger's invariants and the
auditors' report are about: stock per product at every point, and per order what it was paid,
how it ended, its refund and its disputes.

It reads the stored records (not the aggregates, not the read models): what it finds is what
the log says, whatever any code that wrote it believed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ledger.domain.vocabulary import RefundStatus
from projections.audit.records import STREAMS, Row, fields_of

Progress = Callable[[int, int], None]  # (events read, position): called now and then


@dataclass(slots=True)
class StockFacts:
    sku: str
    on_hand: int = 0
    lowest: int = 0
    lowest_at: int = 0  # the position where on hand was lowest


@dataclass(slots=True)
class OrderFacts:
    order_id: str
    session_id: str
    currency: str  # as Stripe charged it: priced by OrderPlaced, charged by RefundRequested
    amount: int
    lines: dict[str, int]  # sku -> quantity
    placed_at: int  # position of OrderPlaced
    confirmed: list[tuple[int, datetime]] = field(default_factory=list)
    rejected: list[tuple[int, datetime]] = field(default_factory=list)
    payment_failed: int | None = None
    reserved: dict[str, list[int]] = field(default_factory=dict)  # sku -> positions
    refund: RefundStatus | None = None  # requested counts as pending
    refund_failure: str | None = None
    refund_positions: list[int] = field(default_factory=list)
    disputes: dict[str, str] = field(default_factory=dict)
    outside_refunds: dict[str, tuple[str, int]] = field(default_factory=dict)  # id: status, amount


@dataclass
class Replay:
    """Feed it every record in position order (`read`), then ask it."""

    events: int = 0
    head: int = 0
    stock: dict[str, StockFacts] = field(default_factory=dict)  # by inventory item id
    orders: dict[str, OrderFacts] = field(default_factory=dict)  # by order id
    conversions: dict[str, list[int]] = field(default_factory=dict)  # cart id -> positions
    negative_stock: list[tuple[int, str, int]] = field(default_factory=list)
    strays: list[tuple[int, str]] = field(default_factory=list)  # events about no known order
    # Reservations stored before their order's OrderPlaced (in the same commit): order id ->
    # (sku, position).
    _unplaced: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    def read(self, rows: Iterable[Row], progress: Progress | None = None) -> Replay:
        for row in rows:
            self._apply(row)
            if progress is not None and self.events % 10_000 == 0:
                progress(self.events, self.head)
        for order_id, reservations in self._unplaced.items():  # never placed, after all
            self.strays.extend((position, order_id) for _, position in reservations)
        self._unplaced.clear()
        return self

    def _apply(self, row: Row) -> None:
        position, stream_id, _version, topic, state = row
        self.events += 1
        self.head = position
        aggregate_topic, _, name = topic.rpartition(".")
        stream = STREAMS.get(aggregate_topic)
        handler = _HANDLERS.get((stream, name))
        if handler is not None:
            handler(self, position, str(stream_id), fields_of(state))

    # ---- inventory --------------------------------------------------------------------------

    def _listed(self, position: int, item: str, e: dict[str, Any]) -> None:
        self.stock[item] = StockFacts(e["sku"], lowest_at=position)

    def _stock_moved(self, position: int, item: str, delta: int) -> None:
        facts = self.stock.setdefault(item, StockFacts(item))
        facts.on_hand += delta
        if facts.on_hand < facts.lowest:
            facts.lowest, facts.lowest_at = facts.on_hand, position
        if facts.on_hand < 0:
            self.negative_stock.append((position, facts.sku, facts.on_hand))

    def _received(self, position: int, item: str, e: dict[str, Any]) -> None:
        self._stock_moved(position, item, e["quantity"])

    def _written_off(self, position: int, item: str, e: dict[str, Any]) -> None:
        self._stock_moved(position, item, -e["quantity"])

    def _reserved(self, position: int, item: str, e: dict[str, Any]) -> None:
        self._stock_moved(position, item, -e["quantity"])
        sku = self.stock[item].sku
        order = self.orders.get(e["order_id"])
        if order is None:
            # One commit may store an item's reservation before the order it is for (several
            # orders decided together): it waits for the order's OrderPlaced.
            self._unplaced.setdefault(e["order_id"], []).append((sku, position))
        else:
            order.reserved.setdefault(sku, []).append(position)

    # ---- carts ------------------------------------------------------------------------------

    def _converted(self, position: int, cart: str, e: dict[str, Any]) -> None:
        self.conversions.setdefault(cart, []).append(position)

    # ---- orders -----------------------------------------------------------------------------

    def _placed(self, position: int, order_id: str, e: dict[str, Any]) -> None:
        order = self.orders[order_id] = OrderFacts(
            order_id=order_id,
            session_id=e["checkout_session_id"],
            currency=e["currency"],
            amount=e["amount_total"],
            lines={line["sku"]: line["quantity"] for line in e["lines"]},
            placed_at=position,
        )
        for sku, reserved_at in self._unplaced.pop(order_id, ()):
            order.reserved.setdefault(sku, []).append(reserved_at)

    def _confirmed(self, position: int, order_id: str, e: dict[str, Any]) -> None:
        order = self._order(position, order_id)
        if order is not None:
            order.confirmed.append((position, datetime.fromisoformat(e["timestamp"])))

    def _rejected(self, position: int, order_id: str, e: dict[str, Any]) -> None:
        order = self._order(position, order_id)
        if order is not None:
            order.rejected.append((position, datetime.fromisoformat(e["timestamp"])))

    def _refund_requested(self, position: int, order_id: str, e: dict[str, Any]) -> None:
        # The payment as Stripe charged it (all of it is owed back), which a session refunded
        # for an amount or currency other than priced makes differ from OrderPlaced's.
        _refund_pending(self, position, order_id, e)
        order = self.orders.get(order_id)  # a stray is recorded once, by the step
        if order is not None:
            order.amount, order.currency = e["amount"], e["currency"]

    def _payment_failed(self, position: int, order_id: str, e: dict[str, Any]) -> None:
        order = self._order(position, order_id)
        if order is not None:
            order.payment_failed = position

    def _outside_refund(self, position: int, order_id: str, e: dict[str, Any]) -> None:
        order = self._order(position, order_id)
        if order is not None:
            order.outside_refunds[e["refund_id"]] = (e["status"], e["amount"])

    def _dispute(self, position: int, order_id: str, e: dict[str, Any]) -> None:
        order = self._order(position, order_id)
        if order is not None:
            order.disputes[e["dispute_id"]] = e["status"]

    def _order(self, position: int, order_id: str) -> OrderFacts | None:
        order = self.orders.get(order_id)
        if order is None:
            self.strays.append((position, order_id))
        return order


_Handler = Callable[[Replay, int, str, dict[str, Any]], None]


def _refund_step(step: RefundStatus) -> _Handler:
    """The order's refund reached `step` (requested or taken by Stripe: pending)."""

    def record(replay: Replay, position: int, order_id: str, e: dict[str, Any]) -> None:
        order = replay._order(position, order_id)
        if order is not None:
            order.refund = step
            order.refund_positions.append(position)
            if step == RefundStatus.FAILED:
                order.refund_failure = e.get("code")

    return record


_refund_pending = _refund_step(RefundStatus.PENDING)

_HANDLERS: dict[tuple[str | None, str], _Handler] = {
    ("inventory", "ProductListed"): Replay._listed,
    ("inventory", "StockReceived"): Replay._received,
    ("inventory", "StockWrittenOff"): Replay._written_off,
    ("inventory", "StockReserved"): Replay._reserved,
    ("cart", "CartConverted"): Replay._converted,
    ("order", "OrderPlaced"): Replay._placed,
    ("order", "PaymentConfirmed"): Replay._confirmed,
    ("order", "OrderRejected"): Replay._rejected,
    ("order", "PaymentFailed"): Replay._payment_failed,
    ("order", "RefundRequested"): Replay._refund_requested,
    ("order", "RefundSubmitted"): _refund_pending,
    ("order", "RefundIssued"): _refund_step(RefundStatus.SUCCEEDED),
    ("order", "RefundFailed"): _refund_step(RefundStatus.FAILED),
    ("order", "OutsideRefundRecorded"): Replay._outside_refund,
    ("order", "DisputeOpened"): Replay._dispute,
    ("order", "DisputeClosed"): Replay._dispute,
}
