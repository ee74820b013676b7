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
    ) -> None:
        self.checkout_session_id = checkout_session_id
        self.cart_id = cart_id
        self.lines = lines
        self.amount_total = amount_total
        self.currency = currency
        self.payment_intent = payment_intent
        self.status = PLACED
        self.rejection_reason: str | None = None
        self.refund_id: str | None = None

    @property
    def is_settled(self) -> bool:
        """True once the order reached an outcome no later payment news can change."""
        return self.status in {CONFIRMED, PAYMENT_FAILED, REFUND_PENDING, REFUNDED}

    def await_payment(self, cause: str) -> None:
        self._require(PLACED)
        self._awaiting_payment(cause=cause)

    @event("AwaitingPayment")
    def _awaiting_payment(self, cause: str) -> None:
        self.status = AWAITING_PAYMENT

    def confirm_payment(self, payment_intent: str | None, cause: str) -> None:
        self._require(PLACED, AWAITING_PAYMENT)
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
        self._require(PLACED, AWAITING_PAYMENT)
        self._rejected(reason=reason, payment_intent=payment_intent, cause=cause)
        self._refund_requested(amount=self.amount_total, currency=self.currency, cause=cause)

    @event("OrderRejected")
    def _rejected(self, reason: str, payment_intent: str | None, cause: str) -> None:
        self.payment_intent = payment_intent or self.payment_intent
        self.rejection_reason = reason

    @event("RefundRequested")
    def _refund_requested(self, amount: int, currency: str, cause: str) -> None:
        self.status = REFUND_PENDING

    def record_refund(self, refund_id: str, cause: str) -> None:
        self._require(REFUND_PENDING)
        self._refund_issued(refund_id=refund_id, amount=self.amount_total, cause=cause)

    @event("RefundIssued")
    def _refund_issued(self, refund_id: str, amount: int, cause: str) -> None:
        self.refund_id = refund_id
        self.status = REFUNDED

    def _require(self, *states: str) -> None:
        if self.status not in states:
            raise InvalidTransition(f"Order {self.id} is {self.status}.")
