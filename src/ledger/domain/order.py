"""An order: what one paid (or paying) checkout session bought, and what became of it."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.domain.errors import InvalidTransition
from ledger.domain.identity import order_id_for

PLACED = "placed"
AWAITING_PAYMENT = "awaiting_payment"
CONFIRMED = "confirmed"
PAYMENT_FAILED = "payment_failed"
REFUND_PENDING = "refund_pending"
REFUNDED = "refunded"
REFUND_FAILED = "refund_failed"
# Outcomes no later news about the payment can change: the money went one way or the other.
_FINAL = {CONFIRMED, REFUND_PENDING, REFUNDED, REFUND_FAILED}


class Order(Aggregate):
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
        self.status = PLACED
        self.rejection_reason: str | None = None
        self.refund_id: str | None = None
        self.refund_failure: str | None = None
        # Refunds made outside the ledger (Stripe's Dashboard) and disputes: id -> status.
        self.outside_refunds: dict[str, str] = {}
        self.disputes: dict[str, str] = {}

    @property
    def is_decided(self) -> bool:
        """True once the payment was decided: taken (an order or a refund owed) for good.
        A failed payment is not: a payment that clears later still becomes an order."""
        return self.status in _FINAL

    def await_payment(self, cause: str) -> None:
        self._require(PLACED)
        self._awaiting_payment(cause=cause)

    @event("AwaitingPayment")
    def _awaiting_payment(self, cause: str) -> None:
        self.status = AWAITING_PAYMENT

    def confirm_payment(self, payment_intent: str | None, cause: str) -> None:
        self._require(PLACED, AWAITING_PAYMENT, PAYMENT_FAILED)
        self._payment_confirmed(payment_intent=payment_intent, cause=cause)

    @event("PaymentConfirmed")
    def _payment_confirmed(self, payment_intent: str | None, cause: str) -> None:
        self.payment_intent = payment_intent or self.payment_intent
        self.status = CONFIRMED

    def fail_payment(self, cause: str) -> None:
        self._require(PLACED, AWAITING_PAYMENT)
        self._payment_failed(cause=cause)

    @event("PaymentFailed")
    def _payment_failed(self, cause: str) -> None:
        self.status = PAYMENT_FAILED

    def reject(self, reason: str, payment_intent: str | None, cause: str) -> None:
        """Paid, but not fulfillable: the order is rejected and its money is owed back."""
        self._require(PLACED, AWAITING_PAYMENT, PAYMENT_FAILED)
        self._rejected(reason=reason, payment_intent=payment_intent, cause=cause)
        self._refund_requested(amount=self.amount_total, currency=self.currency, cause=cause)

    @event("OrderRejected")
    def _rejected(self, reason: str, payment_intent: str | None, cause: str) -> None:
        self.payment_intent = payment_intent or self.payment_intent
        self.rejection_reason = reason

    @event("RefundRequested")
    def _refund_requested(self, amount: int, currency: str, cause: str) -> None:
        self.status = REFUND_PENDING

    def follow_refund(
        self, refund_id: str, status: str, amount: int, failure: str | None, cause: str
    ) -> None:
        """What Stripe says of the refund of this order's payment (`status` in Stripe's words:
        pending, requires_action, succeeded, failed, canceled). Only news that changes
        something is recorded, so the same news any number of times records it once."""
        self._require(REFUND_PENDING, REFUNDED, REFUND_FAILED)
        if status in ("failed", "canceled"):
            if refund_id == self.refund_id and self.status != REFUND_FAILED:
                self._refund_failed(refund_id=refund_id, code=failure or status, cause=cause)
            return
        if self.status == REFUND_FAILED and status != "succeeded":
            return  # a new refund still under way: the order stays flagged until it succeeds
        if self.refund_id != refund_id:
            if self.status == REFUNDED:
                return  # already refunded by another refund: that one is the order's
            self._refund_submitted(refund_id=refund_id, status=status, cause=cause)
        if status == "succeeded" and self.status != REFUNDED:
            self._refund_issued(refund_id=refund_id, amount=amount, cause=cause)

    def refuse_refund(self, code: str, cause: str) -> None:
        """Stripe refused to refund this order's payment for good: a person must act."""
        self._require(REFUND_PENDING)
        self._refund_failed(refund_id=self.refund_id, code=code, cause=cause)

    @event("RefundSubmitted")
    def _refund_submitted(self, refund_id: str, status: str, cause: str) -> None:
        self.refund_id = refund_id
        self.refund_failure = None
        self.status = REFUND_PENDING

    @event("RefundIssued")
    def _refund_issued(self, refund_id: str, amount: int, cause: str) -> None:
        """Stripe reports the refund succeeded: the money is back with the customer."""
        self.refund_id = refund_id
        self.status = REFUNDED

    @event("RefundFailed")
    def _refund_failed(self, refund_id: str | None, code: str, cause: str) -> None:
        self.refund_failure = code
        self.status = REFUND_FAILED

    def note_outside_refund(
        self, refund_id: str, status: str, amount: int, currency: str, cause: str
    ) -> None:
        """A refund of this order's payment that the ledger did not ask for (Stripe's
        Dashboard). Recorded for the history; it changes neither the order nor stock."""
        if self.outside_refunds.get(refund_id) != status:
            self._outside_refund(
                refund_id=refund_id, status=status, amount=amount, currency=currency, cause=cause
            )

    @event("OutsideRefundRecorded")
    def _outside_refund(
        self, refund_id: str, status: str, amount: int, currency: str, cause: str
    ) -> None:
        self.outside_refunds[refund_id] = status

    def note_dispute(
        self, dispute_id: str, status: str, amount: int, currency: str, reason: str, cause: str
    ) -> None:
        """A dispute (chargeback) of this order's payment, as Stripe reports it now. Recorded
        when it opens and when it closes; it never reverses stock by itself."""
        known = self.disputes.get(dispute_id)
        closed = status in ("won", "lost", "warning_closed")
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

    def _require(self, *states: str) -> None:
        if self.status not in states:
            raise InvalidTransition(f"Order {self.id} is {self.status}.")
