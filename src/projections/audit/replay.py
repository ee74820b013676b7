"""One pass over the whole log, as stored, gathering what the ledger's invariants and the
auditors' report are about (the records of `projections.audit.facts`): stock per product at
every point (on hand, and the live holds of open checkouts), and per order what it was paid or
authorized, how it ended, its capture or release, its refund and its disputes.

It reads the stored records (not the aggregates, not the read models): what it finds is what
the log says, whatever any code that wrote it believed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ledger.domain.vocabulary import RefundStatus
from projections.audit.facts import (
    CancelFacts,
    HoldFacts,
    HoldProblem,
    MerchantRefundFacts,
    OrderFacts,
    OverHold,
    StockFacts,
)
from projections.audit.records import STREAMS, Row, fields_of

Progress = Callable[[int, int], None]  # (events read, position): called now and then


@dataclass
class Replay:
    """Feed it every record in position order (`read`), then ask it."""

    events: int = 0
    head: int = 0
    stock: dict[str, StockFacts] = field(default_factory=dict)  # by inventory item id
    orders: dict[str, OrderFacts] = field(default_factory=dict)  # by order id
    conversions: dict[str, list[int]] = field(default_factory=dict)  # cart id -> positions
    negative_stock: list[tuple[int, str, int]] = field(default_factory=list)
    over_held: list[OverHold] = field(default_factory=list)
    hold_problems: list[HoldProblem] = field(default_factory=list)
    strays: list[tuple[int, str]] = field(default_factory=list)  # events about no known order
    # Carts whose order failed to capture and that were opened again (CartReopened):
    # (position, cart id, order id), checked against the order once the log is read.
    reopened: list[tuple[int, str, str]] = field(default_factory=list)
    # Holds taken by an order: (position, sku, hold's cart id, order id), checked against
    # the order's cart once the log is read (the order may be stored after the take).
    hold_takes: list[tuple[int, str, str | None, str]] = field(default_factory=list)
    # Reservations stored before their order's OrderPlaced (in the same commit): order id ->
    # (sku, position, quantity).
    _unplaced: dict[str, list[tuple[str, int, int]]] = field(default_factory=dict)
    # Which half of the facts to gather: `ledger audit verify` replays stock and orders in
    # two passes (projections.audit.streamed), so that an order's facts need living only
    # while its own events are read. StockReserved and StockReturned feed both halves.
    track_stock: bool = True
    track_orders: bool = True

    def read(self, rows: Iterable[Row], progress: Progress | None = None) -> Replay:
        for row in rows:
            self._apply(row)
            if progress is not None and self.events % 10_000 == 0:
                progress(self.events, self.head)
        for order_id, reservations in self._unplaced.items():  # never placed, after all
            self.strays.extend((position, order_id) for _, position, _ in reservations)
        self._unplaced.clear()
        self._check_hold_takes()
        return self

    def _check_hold_takes(self) -> None:
        """An order takes only its own cart's hold: another cart's would hand one customer's
        units to someone else while the holder's checkout still counts on them."""
        for position, sku, cart_id, order_id in self.hold_takes:
            order = self.orders.get(order_id)
            if order is not None and cart_id is not None and order.cart_id != cart_id:
                self.hold_problems.append(
                    HoldProblem(
                        position,
                        sku,
                        f"order {order_id} (cart {order.cart_id}) took a hold of cart {cart_id}",
                    )
                )
        self.hold_takes.clear()

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

    def _sku(self, item: str) -> str:
        """The item's sku as listed (its id if never listed, as `_stock_moved` names it)."""
        facts = self.stock.get(item)
        return item if facts is None else facts.sku

    def _stock_moved(self, position: int, item: str, delta: int) -> None:
        facts = self.stock.setdefault(item, StockFacts(item))
        facts.on_hand += delta
        if facts.on_hand < facts.lowest:
            facts.lowest, facts.lowest_at = facts.on_hand, position
        if facts.on_hand < 0:
            self.negative_stock.append((position, facts.sku, facts.on_hand))

    def _check_held(self, position: int, facts: StockFacts) -> None:
        """Called after every event that changes on hand or the holds: the invariant holds at
        every position, not only at the end. (With nothing held, stock below zero is the
        other check's to report.)"""
        if facts.held > 0 and facts.held > facts.on_hand:
            self.over_held.append(OverHold(position, facts.sku, facts.held, facts.on_hand))

    def _end_hold(
        self, position: int, facts: StockFacts, hold_id: str, what: str
    ) -> HoldFacts | None:
        """Ends a live hold; a hold that is not live is a problem (`what` happened to it)."""
        hold = facts.holds.pop(hold_id, None)
        if hold is None:
            ended_at = facts.ended.get(hold_id)
            why = "never placed" if ended_at is None else f"already ended at position {ended_at}"
            self.hold_problems.append(
                HoldProblem(position, facts.sku, f"hold {hold_id} {what}, {why}")
            )
            return None
        facts.held -= hold.quantity
        facts.ended[hold_id] = position
        return hold

    def _received(self, position: int, item: str, e: dict[str, Any]) -> None:
        self._stock_moved(position, item, e["quantity"])

    def _written_off(self, position: int, item: str, e: dict[str, Any]) -> None:
        self._stock_moved(position, item, -e["quantity"])
        self._check_held(position, self.stock[item])

    def _reserved(self, position: int, item: str, e: dict[str, Any]) -> None:
        if self.track_stock:
            self._stock_moved(position, item, -e["quantity"])
            facts = self.stock[item]
            # Version 1 reservations carry no hold_id: they took free stock.
            hold_id = e.get("hold_id")
            if hold_id is not None:
                # The hold becomes the order's stock: it ends here, and on hand went down once.
                hold = self._end_hold(position, facts, hold_id, "taken by an order")
                if hold is not None:
                    self.hold_takes.append((position, facts.sku, hold.cart_id, e["order_id"]))
            self._check_held(position, facts)
        if not self.track_orders:
            return
        sku = self._sku(item)
        order = self.orders.get(e["order_id"])
        if order is None:
            # One commit may store an item's reservation before the order it is for (several
            # orders decided together): it waits for the order's OrderPlaced.
            self._unplaced.setdefault(e["order_id"], []).append((sku, position, e["quantity"]))
        else:
            _took(order, sku, position, e["quantity"])

    def _held(self, position: int, item: str, e: dict[str, Any]) -> None:
        facts = self.stock.setdefault(item, StockFacts(item))
        hold_id = e["hold_id"]
        if hold_id in facts.holds:
            # Counting it twice would overstate what is held; the first stands.
            self.hold_problems.append(
                HoldProblem(
                    position,
                    facts.sku,
                    f"hold {hold_id} placed again (live since position"
                    f" {facts.holds[hold_id].placed_at})",
                )
            )
        else:
            facts.holds[hold_id] = HoldFacts(hold_id, e["quantity"], position, e.get("cart_id"))
            facts.held += e["quantity"]
        self._check_held(position, facts)

    def _hold_released(self, position: int, item: str, e: dict[str, Any]) -> None:
        facts = self.stock.setdefault(item, StockFacts(item))
        hold = self._end_hold(position, facts, e["hold_id"], "released")
        if hold is not None and hold.quantity != e["quantity"]:
            self.hold_problems.append(
                HoldProblem(
                    position,
                    facts.sku,
                    f"hold {hold.hold_id} of {hold.quantity} released as {e['quantity']}",
                )
            )

    def _returned(self, position: int, item: str, e: dict[str, Any]) -> None:
        if self.track_stock:
            self._stock_moved(position, item, e["quantity"])
        if not self.track_orders:
            return
        order = self._order(position, e["order_id"])
        if order is not None:
            sku = self._sku(item)
            # Put back by the merchant's refund or cancellation, or by a failed capture (its
            # own check: every line back once).
            back = order.restocked if e.get("reason") in _AFTER_SALE else order.returned
            back.setdefault(sku, []).append((position, e["quantity"]))

    # ---- carts ------------------------------------------------------------------------------

    def _converted(self, position: int, cart: str, e: dict[str, Any]) -> None:
        self.conversions.setdefault(cart, []).append(position)

    def _reopened(self, position: int, cart: str, e: dict[str, Any]) -> None:
        # The cart's order failed to capture: the cart may be converted again, by another
        # session, so its earlier conversion no longer counts against the next.
        self.conversions.pop(cart, None)
        self.reopened.append((position, cart, e["order_id"]))

    # ---- orders -----------------------------------------------------------------------------

    def _placed(self, position: int, order_id: str, e: dict[str, Any]) -> None:
        order = self.orders[order_id] = OrderFacts(
            order_id=order_id,
            session_id=e["checkout_session_id"],
            currency=e["currency"],
            amount=e["amount_total"],
            lines={line["sku"]: line["quantity"] for line in e["lines"]},
            placed_at=position,
            cart_id=e.get("cart_id"),
        )
        for sku, reserved_at, quantity in self._unplaced.pop(order_id, ()):
            _took(order, sku, reserved_at, quantity)

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

    def _capture_requested(self, position: int, order_id: str, e: dict[str, Any]) -> None:
        order = self._order(position, order_id)
        if order is not None:
            order.capture_requested.append(position)
            self._authorized(order, e)

    def _release_requested(self, position: int, order_id: str, e: dict[str, Any]) -> None:
        order = self._order(position, order_id)
        if order is not None:
            order.release_requested.append(position)
            self._authorized(order, e)

    @staticmethod
    def _authorized(order: OrderFacts, e: dict[str, Any]) -> None:
        # What Stripe authorized, in its currency: the money the order is counted in from
        # now on (as RefundRequested does for a charge), not what the cart was priced at.
        order.authorization = (e["amount"], e["currency"])
        order.amount, order.currency = e["amount"], e["currency"]

    def _captured(self, position: int, order_id: str, e: dict[str, Any]) -> None:
        order = self._order(position, order_id)
        if order is not None:
            order.captures.append((position, e["amount"], e["currency"]))

    def _capture_failed(self, position: int, order_id: str, e: dict[str, Any]) -> None:
        order = self._order(position, order_id)
        if order is not None:
            order.capture_failed.append(position)
            order.capture_failure = e.get("code")

    def _authorization_released(self, position: int, order_id: str, e: dict[str, Any]) -> None:
        order = self._order(position, order_id)
        if order is not None:
            order.released.append(position)

    def _release_failed(self, position: int, order_id: str, e: dict[str, Any]) -> None:
        order = self._order(position, order_id)
        if order is not None:
            order.release_failed.append(position)

    def _outside_refund(self, position: int, order_id: str, e: dict[str, Any]) -> None:
        order = self._order(position, order_id)
        if order is not None:
            order.outside_refunds[e["refund_id"]] = (e["status"], e["amount"])
            order.outside_refunded_at.setdefault(e["refund_id"], position)

    # ---- after the sale: the merchant's refunds and cancellation ----------------------------

    def _merchant_refund_requested(self, position: int, order_id: str, e: dict[str, Any]) -> None:
        order = self._order(position, order_id)
        if order is not None:
            order.merchant_refunds[e["refund_id"]] = MerchantRefundFacts(
                e["refund_id"], position, e["amount"], e["currency"], e.get("reason")
            )

    def _merchant_refund_succeeded(self, position: int, order_id: str, e: dict[str, Any]) -> None:
        refund = self._merchant_refund(position, order_id, e)
        if refund is not None:
            refund.status = RefundStatus.SUCCEEDED

    def _merchant_refund_failed(self, position: int, order_id: str, e: dict[str, Any]) -> None:
        refund = self._merchant_refund(position, order_id, e)
        if refund is not None:
            refund.status, refund.code = RefundStatus.FAILED, e.get("code")

    def _merchant_refund(
        self, position: int, order_id: str, e: dict[str, Any]
    ) -> MerchantRefundFacts | None:
        order = self._order(position, order_id)
        return None if order is None else order.merchant_refunds.get(e["refund_id"])

    def _cancelled(self, position: int, order_id: str, e: dict[str, Any]) -> None:
        order = self._order(position, order_id)
        if order is not None:
            order.cancellations.append(CancelFacts(position, e.get("reason"), bool(e["release"])))

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

# StockReturned's reasons for stock the merchant put back (RestockReason), as recorded.
_AFTER_SALE = frozenset({"refunded", "cancelled"})


def _took(order: OrderFacts, sku: str, position: int, quantity: int) -> None:
    order.reserved.setdefault(sku, []).append(position)
    order.taken[sku] = order.taken.get(sku, 0) + quantity


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
    ("inventory", "StockHeld"): Replay._held,
    ("inventory", "StockReleased"): Replay._hold_released,
    ("inventory", "StockReturned"): Replay._returned,
    ("cart", "CartConverted"): Replay._converted,
    ("cart", "CartReopened"): Replay._reopened,
    ("order", "OrderPlaced"): Replay._placed,
    ("order", "PaymentConfirmed"): Replay._confirmed,
    ("order", "OrderRejected"): Replay._rejected,
    ("order", "PaymentFailed"): Replay._payment_failed,
    ("order", "RefundRequested"): Replay._refund_requested,
    ("order", "RefundSubmitted"): _refund_pending,
    ("order", "RefundIssued"): _refund_step(RefundStatus.SUCCEEDED),
    ("order", "RefundFailed"): _refund_step(RefundStatus.FAILED),
    ("order", "CaptureRequested"): Replay._capture_requested,
    ("order", "PaymentCaptured"): Replay._captured,
    ("order", "CaptureFailed"): Replay._capture_failed,
    ("order", "ReleaseRequested"): Replay._release_requested,
    ("order", "AuthorizationReleased"): Replay._authorization_released,
    ("order", "ReleaseFailed"): Replay._release_failed,
    ("order", "OutsideRefundRecorded"): Replay._outside_refund,
    ("order", "DisputeOpened"): Replay._dispute,
    ("order", "DisputeClosed"): Replay._dispute,
    # After the sale (stored under AfterSale's topics: records.STREAMS names them the order's).
    ("order", "MerchantRefundRequested"): Replay._merchant_refund_requested,
    ("order", "MerchantRefundSucceeded"): Replay._merchant_refund_succeeded,
    ("order", "MerchantRefundFailed"): Replay._merchant_refund_failed,
    ("order", "OrderCancelled"): Replay._cancelled,
}
