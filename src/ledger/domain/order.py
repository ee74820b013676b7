"""An order: what one paid (or paying) checkout session bought, and what became of it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from ledger.domain.after_sale import AfterSale
from ledger.domain.cart import Cart
from ledger.domain.errors import InvalidTransition
from ledger.domain.holds import release_hold
from ledger.domain.identity import order_id_for
from ledger.domain.inventory import InventoryItem
from ledger.domain.refund_book import RefundBook
from ledger.domain.vocabulary import (
    DISPUTE_CLOSED,
    WITH_ORDER,
    HoldEnd,
    OrderStatus,
    RefundStatus,
    Rejection,
    RestockReason,
)

_PAID_FROM = (OrderStatus.PROCESSING, OrderStatus.AWAITING_PAYMENT, OrderStatus.PAYMENT_FAILED)
_REFUNDING = (OrderStatus.REFUND_PENDING, OrderStatus.REFUNDED, OrderStatus.REFUND_FAILED)


@dataclass(frozen=True)
class PaidSession:
    """What Stripe says a checkout session charged, as the order decision needs it."""

    session_id: str
    cart_id: UUID
    amount_total: int
    currency: str
    payment_intent: str | None
    # Who paid, sealed (ledger.personal_data): recorded on the order, never in clear.
    customer: dict[str, str] | None = None
    # Manual capture: the card payment is only authorized (its PaymentIntent
    # `requires_capture`); it is captured once the order is placed, or released.
    authorized_only: bool = False


class Order(AfterSale):
    STREAM = "order"

    @staticmethod
    def create_id(checkout_session_id: str) -> UUID:
        return order_id_for(checkout_session_id)

    @event("OrderPlaced")
    def __init__(
        self,
        checkout_session_id: str,
        cart_id: UUID,
        lines: list[dict[str, Any]],
        amount_total: int,
        currency: str,
        payment_intent: str | None,
        cause: str,
        customer: dict[str, str] | None = None,
    ) -> None:
        self.checkout_session_id = checkout_session_id
        self.cart_id = cart_id
        self.lines = lines
        self.amount_total = amount_total
        self.currency = currency
        self.payment_intent = payment_intent
        # Who paid, sealed with the customer's own key (see ledger.personal_data): opaque
        # here, and unreadable for good once the customer is forgotten.
        self.customer = customer
        self.status = OrderStatus.PROCESSING
        self.rejection_reason: str | None = None
        self.refund_id: str | None = None
        # What Stripe charged, (amount, currency): as priced, unless a rejection recorded
        # otherwise (an amount or currency other than priced is never confirmed).
        self.charged = (amount_total, currency)
        self.refund_failure: str | None = None
        # Refunds made outside the ledger (Stripe's Dashboard) and disputes: id -> status.
        self.outside_refunds: dict[str, str] = {}
        self.disputes: dict[str, str] = {}
        # Manual capture: None (the payment was captured when made), then "requested",
        # "captured" or "failed"; and a released authorization: "requested", then "done".
        self.capture: str | None = None
        self.release: str | None = None
        # After the sale: what the merchant (or Stripe's Dashboard) gave back, and whether the
        # order's stock was taken (`placed`) and it was cancelled, by which request.
        self.book = RefundBook.of(lines)
        self.placed = False
        self.cancelled_by: str | None = None
        # The merchant refund that failed for good: a person must act (another refund, or
        # news that this one went through after all, clears it).
        self.flagged_by: str | None = None
        # Rejected: all of the payment is owed back, by the order's own refund.
        self.owes_refund = False

    @classmethod
    def open(
        cls,
        session_id: str,
        cart: Cart,
        payment_intent: str | None,
        customer: dict[str, str] | None,
        cause: str,
    ) -> Order:
        """The order of a session, holding exactly what the cart's session was priced at."""
        session = cart.session(session_id)
        return cls(
            checkout_session_id=session_id,
            cart_id=cart.id,
            lines=session["lines"],
            amount_total=session["amount_total"],
            currency=session["currency"],
            payment_intent=payment_intent,
            cause=cause,
            customer=customer,
        )

    @property
    def is_decided(self) -> bool:
        """True once the payment was decided: taken (an order or a refund owed) for good.
        A failed payment is not: a payment that clears later still becomes an order."""
        return self.status in WITH_ORDER

    def rejection(
        self,
        paid: PaidSession,
        cart: Cart,
        items: Sequence[InventoryItem],
        hold_id: str | None = None,
    ) -> Rejection | None:
        """Why this paid session cannot become the order, or None when it can. `items` are
        the inventory items of the order's lines, in the same order; `hold_id` the session's
        live hold, whose units are the order's to take."""
        if (paid.amount_total, paid.currency) != (self.amount_total, self.currency):
            return Rejection.AMOUNT_MISMATCH  # a currency other than priced too
        if cart.order_id is not None:
            return Rejection.CART_ALREADY_CONVERTED
        for item, line in zip(items, self.lines, strict=True):
            if not item.can_supply(line["quantity"], hold_id):
                return Rejection.OUT_OF_STOCK
        return None

    def fulfil(
        self, paid: PaidSession, cart: Cart, items: Sequence[InventoryItem], cause: str
    ) -> None:
        """The order decision for a paid (or authorized) session. Either the order is
        confirmed, stock is taken from every line's item (the session's hold, when it has one)
        and the cart is converted, and an authorized payment's capture is requested; or (see
        `rejection`) the order is rejected, its money owed back (a refund) or its authorization
        released, the session's hold ends and the cart's session is recorded as rejected. The
        caller saves the order, the items and the cart in one commit."""
        hold_id = cart.hold_of(paid.session_id)
        reason = self.rejection(paid, cart, items, hold_id)
        if reason is not None:
            charged = (paid.amount_total, paid.currency)
            if paid.authorized_only:
                self.release_authorization(reason, paid.payment_intent, cause, charged)
            else:
                self.reject(reason, paid.payment_intent, cause, charged)
            if hold_id is not None:
                release_hold(cart, hold_id, items, HoldEnd.REJECTED, cause)
            cart.record_rejected(paid.session_id, self.id, reason, cause)
            return
        self.confirm_payment(paid.payment_intent, cause)
        if paid.authorized_only:
            self._capture_requested(amount=self.amount_total, currency=self.currency, cause=cause)
        for item, line in zip(items, self.lines, strict=True):
            item.reserve(self.id, line["quantity"], cause, hold_id)
        cart.convert(paid.session_id, self.id, cause)

    @event("CaptureRequested")
    def _capture_requested(self, amount: int, currency: str, cause: str) -> None:
        """Placed on an authorization: its capture is a side effect, after this commit."""
        self.capture = "requested"

    def record_capture(self, amount: int, currency: str, cause: str) -> None:
        """Stripe captured the order's payment (the same news again records nothing)."""
        if self.capture == "requested":
            self._payment_captured(amount=amount, currency=currency, cause=cause)

    @event("PaymentCaptured")
    def _payment_captured(self, amount: int, currency: str, cause: str) -> None:
        self.capture = "captured"
        self.charged = (amount, currency)

    def capture_refused(
        self, code: str, cart: Cart, items: Sequence[InventoryItem], cause: str
    ) -> None:
        """Stripe refused to capture the order's payment for good (the authorization lapsed or
        was cancelled): the order's payment failed, its stock goes back to every line's item
        and its cart is open again. The caller saves all three in one commit."""
        if self.capture != "requested":
            return
        self._capture_failed(code=code, cause=cause)
        for item, line in zip(items, self.lines, strict=True):
            item.give_back(self.id, line["quantity"], RestockReason.PAYMENT_FAILED, cause)
        cart.reopen(self.checkout_session_id, self.id, OrderStatus.PAYMENT_FAILED, cause)

    @event("CaptureFailed")
    def _capture_failed(self, code: str, cause: str) -> None:
        self.capture = "failed"
        self.placed = False
        self.status = OrderStatus.PAYMENT_FAILED

    def release_authorization(
        self, reason: Rejection, payment_intent: str | None, cause: str, authorized: tuple[int, str]
    ) -> None:
        """Authorized, but not fulfillable: the order is rejected and its authorization is to
        be cancelled (`authorized`: amount and currency), so nothing is ever charged."""
        self._require(*_PAID_FROM)
        amount, currency = authorized
        self._rejected(reason=reason, payment_intent=payment_intent, cause=cause)
        self._release_requested(amount=amount, currency=currency, cause=cause)

    @event("ReleaseRequested")
    def _release_requested(self, amount: int, currency: str, cause: str) -> None:
        self.charged = (amount, currency)
        self.release = "requested"
        self.status = OrderStatus.RELEASED

    def record_release(self, status: str, cause: str) -> None:
        """Stripe cancelled the order's authorization (`status`: the PaymentIntent's now)."""
        if self.release == "requested":
            self._authorization_released(status=status, cause=cause)

    @event("AuthorizationReleased")
    def _authorization_released(self, status: str, cause: str) -> None:
        self.release = "done"

    def release_refused(
        self, code: str, payment_intent_status: str, captured: tuple[int, str], cause: str
    ) -> None:
        """Stripe refused to cancel the authorization because it was captured after all (by
        a person, in Stripe's Dashboard): the customer paid for an order the shop cannot
        serve, so the money Stripe `captured` (amount, currency) is owed back, as for any
        paid session that cannot be fulfilled."""
        if self.release != "requested":
            return
        amount, currency = captured
        self._release_failed(code=code, payment_intent_status=payment_intent_status, cause=cause)
        self._payment_captured(amount=amount, currency=currency, cause=cause)
        if self.cancelled_by is None:
            self._refund_requested(amount=amount, currency=currency, cause=cause)
        elif amount > 0:
            # The merchant cancelled it: what was captured goes back as the cancel's refund.
            self._merchant_refund_requested(
                refund_id=self.cancelled_by,
                amount=amount,
                currency=currency,
                lines=[],
                restocked=[],
                reason=None,
                cause=cause,
            )
            self._settle(cause)

    @event("ReleaseFailed")
    def _release_failed(self, code: str, payment_intent_status: str, cause: str) -> None:
        self.release = "failed"

    def owns_refund(
        self, refund_id: str, refund_order_ref: str | None, succeeded: bool, adopt: bool
    ) -> bool:
        """Whether a refund of this order's payment is the order's own refund (the one the
        ledger asked for, or `adopt`ed: found when Stripe says the charge is refunded already,
        or made by a person for an order whose refund failed), rather than one made outside
        the ledger. `refund_order_ref` is the order id the refund's metadata names."""
        if not self.owes_refund:
            return False  # a placed order owes nothing back by itself: the merchant decides
        if refund_id == self.refund_id or refund_order_ref == str(self.id):
            return True
        if self.status == OrderStatus.REFUND_FAILED:
            return succeeded  # a person refunded it by hand: the money is back
        return adopt and self.refund_id is None

    def await_payment(self, cause: str) -> None:
        self._require(OrderStatus.PROCESSING)
        self._awaiting_payment(cause=cause)

    @event("AwaitingPayment")
    def _awaiting_payment(self, cause: str) -> None:
        self.status = OrderStatus.AWAITING_PAYMENT

    def confirm_payment(self, payment_intent: str | None, cause: str) -> None:
        self._require(*_PAID_FROM)
        self._payment_confirmed(payment_intent=payment_intent, cause=cause)

    @event("PaymentConfirmed")
    def _payment_confirmed(self, payment_intent: str | None, cause: str) -> None:
        self.payment_intent = payment_intent or self.payment_intent
        self.status = OrderStatus.CONFIRMED
        self.placed = True

    def fail_payment(self, cause: str) -> None:
        self._require(OrderStatus.PROCESSING, OrderStatus.AWAITING_PAYMENT)
        self._payment_failed(cause=cause)

    @event("PaymentFailed")
    def _payment_failed(self, cause: str) -> None:
        self.status = OrderStatus.PAYMENT_FAILED

    def reject(
        self,
        reason: Rejection,
        payment_intent: str | None,
        cause: str,
        charged: tuple[int, str] | None = None,
    ) -> None:
        """Paid, but not fulfillable: the order is rejected and its money is owed back, as
        Stripe charged it (`charged`: amount and currency; as priced when not given)."""
        self._require(*_PAID_FROM)
        amount, currency = charged or self.charged
        self._rejected(reason=reason, payment_intent=payment_intent, cause=cause)
        self._refund_requested(amount=amount, currency=currency, cause=cause)

    @event("OrderRejected")
    def _rejected(self, reason: str, payment_intent: str | None, cause: str) -> None:
        self.payment_intent = payment_intent or self.payment_intent
        self.rejection_reason = reason

    @event("RefundRequested")
    def _refund_requested(self, amount: int, currency: str, cause: str) -> None:
        """`amount` and `currency`: what Stripe charged, all of which goes back."""
        self.charged = (amount, currency)
        self.owes_refund = True
        self.status = OrderStatus.REFUND_PENDING

    def follow_refund(
        self, refund_id: str, status: str, amount: int, failure: str | None, cause: str
    ) -> None:
        """What Stripe says of the refund of this order's payment (`status` in Stripe's words:
        pending, requires_action, succeeded, failed, canceled). Only news that changes
        something is recorded, so the same news any number of times records it once."""
        self._require(*_REFUNDING)
        state = RefundStatus.of(status)
        if state == RefundStatus.FAILED:
            if refund_id == self.refund_id and self.status != OrderStatus.REFUND_FAILED:
                self._refund_failed(refund_id=refund_id, code=failure or status, cause=cause)
            return
        if self.status == OrderStatus.REFUND_FAILED and state != RefundStatus.SUCCEEDED:
            return  # a new refund still under way: the order stays flagged until it succeeds
        if self.refund_id != refund_id:
            if self.status == OrderStatus.REFUNDED:
                return  # already refunded by another refund: that one is the order's
            self._refund_submitted(refund_id=refund_id, status=status, cause=cause)
        if state == RefundStatus.SUCCEEDED and self.status != OrderStatus.REFUNDED:
            self._refund_issued(refund_id=refund_id, amount=amount, cause=cause)

    def refuse_refund(self, code: str, cause: str) -> None:
        """Stripe refused to refund this order's payment for good: a person must act."""
        self._require(OrderStatus.REFUND_PENDING)
        self._refund_failed(refund_id=self.refund_id, code=code, cause=cause)

    @event("RefundSubmitted")
    def _refund_submitted(self, refund_id: str, status: str, cause: str) -> None:
        self.refund_id = refund_id
        self.refund_failure = None
        self.status = OrderStatus.REFUND_PENDING

    @event("RefundIssued")
    def _refund_issued(self, refund_id: str, amount: int, cause: str) -> None:
        """Stripe reports the refund succeeded: the money is back with the customer."""
        self.refund_id = refund_id
        self.status = OrderStatus.REFUNDED

    @event("RefundFailed")
    def _refund_failed(self, refund_id: str | None, code: str, cause: str) -> None:
        self.refund_failure = code
        self.status = OrderStatus.REFUND_FAILED

    def note_outside_refund(
        self, refund_id: str, status: str, amount: int, currency: str, cause: str
    ) -> None:
        """A refund of this order's payment that the ledger did not ask for (Stripe's
        Dashboard). It never restocks; on a placed order it counts as money back, so the
        order becomes `partially_refunded` or `refunded` (the merchant decides about stock)."""
        if self.outside_refunds.get(refund_id) != status:
            self._outside_refund(
                refund_id=refund_id, status=status, amount=amount, currency=currency, cause=cause
            )
            self._settle(cause)

    @event("OutsideRefundRecorded")
    def _outside_refund(
        self, refund_id: str, status: str, amount: int, currency: str, cause: str
    ) -> None:
        self.outside_refunds[refund_id] = status
        self.book.outside[refund_id] = (amount, RefundStatus.of(status))

    def note_dispute(
        self, dispute_id: str, status: str, amount: int, currency: str, reason: str, cause: str
    ) -> None:
        """A dispute (chargeback) of this order's payment, as Stripe reports it now. Recorded
        when it opens and when it closes; it never reverses stock by itself."""
        known = self.disputes.get(dispute_id)
        closed = status in DISPUTE_CLOSED
        if known is None:
            self._dispute_opened(
                dispute_id=dispute_id,
                status=status,
                amount=amount,
                currency=currency,
                reason=reason,
                cause=cause,
            )
        if closed and self.disputes.get(dispute_id) != status:
            self._dispute_closed(dispute_id=dispute_id, status=status, cause=cause)

    @event("DisputeOpened")
    def _dispute_opened(
        self, dispute_id: str, status: str, amount: int, currency: str, reason: str, cause: str
    ) -> None:
        self.disputes[dispute_id] = status

    @event("DisputeClosed")
    def _dispute_closed(self, dispute_id: str, status: str, cause: str) -> None:
        self.disputes[dispute_id] = status

    def _require(self, *states: OrderStatus) -> None:
        if self.status not in states:
            raise InvalidTransition(f"Order {self.id} is {self.status}.")
