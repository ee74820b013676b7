"""Manual capture (`LEDGER_CAPTURE=manual`): an authorized payment is captured once its order
is placed, or its authorization is cancelled (released) when the order cannot be served.

Both are side effects after the commit that decided them (`side_effects.captures`), each asked
of Stripe with an idempotency key derived from the order, the same on every retry, so that a
redelivery, a retry or a restart never captures or cancels twice. A capture Stripe refuses for
good (the authorization lapsed, or was cancelled) turns the order `payment_failed` and returns
its stock (`OrderCommands.refuse_capture`).
"""

from __future__ import annotations

from uuid import UUID

import structlog

from ledger.application import Ledger
from ledger.domain import Order
from ledger.domain.vocabulary import REQUIRES_CAPTURE
from ledger.metrics import AUTHORIZATIONS
from ledger.payments import (
    PaymentGateway,
    PaymentIntent,
    PaymentProviderRefused,
    PaymentProviderUnavailable,
)

log = structlog.get_logger("ledger.captures")

CAPTURED = "succeeded"  # a PaymentIntent's status once captured
CANCELED = "canceled"


def capture_idempotency_key(order_id: object) -> str:
    return f"capture-{order_id}"


def release_idempotency_key(order_id: object) -> str:
    return f"release-{order_id}"


class Captures:
    def __init__(self, ledger: Ledger, gateway: PaymentGateway) -> None:
        self.ledger = ledger
        self.gateway = gateway

    def capture(self, order_id: UUID, cause: str) -> Order | None:
        """Captures the order's authorized payment, once in effect however often called.
        Raises PaymentProviderUnavailable when Stripe cannot answer now: try again later."""
        order = self.ledger.get_order(order_id)
        if order is None or order.capture != "requested" or not order.payment_intent:
            return order
        try:
            intent = self.gateway.capture(order.payment_intent, capture_idempotency_key(order.id))
        except PaymentProviderRefused as refusal:
            intent = self._after_refusal(order.payment_intent, refusal)
            if intent.status != CAPTURED:
                return self._capture_refused(order, refusal.code or "refused", intent, cause)
        news = self.ledger.record_capture(order.id, intent.amount_received, intent.currency, cause)
        if news.events:
            AUTHORIZATIONS.labels(outcome="captured").inc()
            log.info("payment_captured", order_id=str(order.id), amount=intent.amount_received)
        return news.order

    def release(self, order_id: UUID, cause: str) -> Order | None:
        """Cancels the order's authorization, once in effect however often called."""
        order = self.ledger.get_order(order_id)
        if order is None or order.release != "requested" or not order.payment_intent:
            return order
        try:
            intent = self.gateway.cancel_authorization(
                order.payment_intent, release_idempotency_key(order.id)
            )
        except PaymentProviderRefused as refusal:
            intent = self._after_refusal(order.payment_intent, refusal)
            if intent.status != CANCELED:
                return self._release_refused(order, refusal.code or "refused", intent, cause)
        news = self.ledger.record_release(order.id, intent.status, cause)
        if news.events:
            AUTHORIZATIONS.labels(outcome="released").inc()
            log.info("authorization_released", order_id=str(order.id))
        return news.order

    def _after_refusal(self, payment_intent: str, refusal: PaymentProviderRefused) -> PaymentIntent:
        """The payment as it stands after Stripe refused to capture or cancel it: the refusal
        may answer a retry whose first attempt succeeded (its idempotency key forgotten)."""
        intent = self.gateway.retrieve_payment_intent(payment_intent)
        if intent is None:
            raise PaymentProviderUnavailable(f"Stripe refused, and has no {payment_intent}")
        if intent.status == REQUIRES_CAPTURE:
            # Still authorized: the refusal was about something else. Tried again later.
            raise PaymentProviderUnavailable(f"Stripe refused: {refusal}") from refusal
        return intent

    def _release_refused(self, order: Order, code: str, intent: PaymentIntent, cause: str) -> Order:
        """Captured after all (by a person, in Stripe's Dashboard): the customer was charged
        for an order the shop cannot serve. When the money was taken, it is refunded (the
        refund worker follows the order's RefundRequested); anything else needs a person."""
        AUTHORIZATIONS.labels(outcome="release_failed").inc()
        log.error(
            "release_failed", order_id=str(order.id), code=code, payment_intent_status=intent.status
        )
        if intent.status != CAPTURED:
            return order
        return self.ledger.record_release_refused(order.id, code, intent, cause).order

    def _capture_refused(self, order: Order, code: str, intent: PaymentIntent, cause: str) -> Order:
        order = self.ledger.refuse_capture(order.id, code, cause)
        AUTHORIZATIONS.labels(outcome="capture_failed").inc()
        log.error(
            "capture_failed",
            order_id=str(order.id),
            code=code,
            payment_intent_status=intent.status,
        )
        return order


__all__ = ["Captures", "capture_idempotency_key", "release_idempotency_key"]
