"""Refunds: where a refund is decided, issued and followed until Stripe says how it ended.

An order that was paid but cannot be fulfilled owes a refund (`RefundRequested`). The refund
worker (`side_effects.refunds`) has `Refunds.issue` ask Stripe for a full refund of the payment
(no amount: whatever Stripe actually charged), with an idempotency key derived from the order,
the same on every retry. The order stays `refund_pending` until Stripe reports the refund
`succeeded` (a refund event, or the periodic resync), and becomes `refund_failed` when Stripe
refuses it for good or it fails later.
"""

from __future__ import annotations

from typing import Protocol
from uuid import UUID

import structlog

from ledger.application import Ledger
from ledger.checkout import IGNORED, Outcome
from ledger.domain import Order
from ledger.domain.vocabulary import OrderStatus, RefundStatus
from ledger.metrics import OUTSIDE_REFUNDS, REFUNDS
from ledger.payments import PaymentGateway, PaymentProviderRefused, Refund

log = structlog.get_logger("ledger.refunds")

# Stripe's answer when the charge has no money left to refund: it is back with the customer
# already (a refund in the Dashboard, or an earlier one of ours whose answer was lost).
ALREADY_REFUNDED = "charge_already_refunded"
NO_CHARGE = "no_charge"  # the refund of an order nothing was charged for


def refund_idempotency_key(order_id: object) -> str:
    return f"refund-{order_id}"


def merchant_refund_idempotency_key(refund_id: str) -> str:
    """The merchant's refund's key at Stripe: derived from the merchant's own idempotency key
    (`refund_id` is), so every retry of it, by a request or the worker, is the same refund."""
    return f"merchant-refund-{refund_id}"


class PaymentIndex(Protocol):
    """Which order a payment (a PaymentIntent id) belongs to: kept by a read model."""

    def order_for(self, payment_intent: str) -> UUID | None: ...


class Refunds:
    def __init__(self, ledger: Ledger, gateway: PaymentGateway, payments: PaymentIndex) -> None:
        self.ledger = ledger
        self.gateway = gateway
        self.payments = payments

    def issue(self, order_id: UUID, cause: str) -> Order | None:
        """Asks Stripe to refund the order's payment, once in effect however often called.
        Raises PaymentProviderUnavailable when Stripe cannot answer now: try again later."""
        order = self.ledger.get_order(order_id)
        if (
            order is None
            or order.status != OrderStatus.REFUND_PENDING
            or order.refund_id is not None
        ):
            return order
        charged, currency = order.charged
        if not order.payment_intent or charged == 0:
            free = Refund(NO_CHARGE, RefundStatus.SUCCEEDED, 0, currency, None, str(order.id))
            return self._record(order, free, cause)
        try:
            refund = self.gateway.refund(
                payment_intent=order.payment_intent,
                order_id=str(order.id),
                idempotency_key=refund_idempotency_key(order.id),
            )
        except PaymentProviderRefused as refusal:
            if refusal.code == ALREADY_REFUNDED:
                made = self._refund_already_made(order.payment_intent, order.id)
                if made is not None:
                    log.info("refund_found", order_id=str(order.id), refund_id=made.refund_id)
                    return self._record(order, made, cause, adopt=True)
            return self._refused(order, refusal.code or "refused", str(refusal), cause)
        return self._record(order, refund, f"stripe:{refund.refund_id}")

    def issue_merchant(self, order_id: UUID, refund_id: str, cause: str) -> Order | None:
        """Asks Stripe for one of the merchant's refunds (`Order.refund`, `Order.cancel`),
        once in effect however often called. Raises PaymentProviderUnavailable when Stripe
        cannot answer now: try again later."""
        order = self.ledger.get_order(order_id)
        wanted = None if order is None else order.book.merchant.get(refund_id)
        if order is None or wanted is None or wanted.stripe_refund_id is not None:
            return order
        if wanted.status != RefundStatus.PENDING or not order.payment_intent:
            return order
        try:
            refund = self.gateway.refund(
                payment_intent=order.payment_intent,
                order_id=str(order.id),
                idempotency_key=merchant_refund_idempotency_key(refund_id),
                amount=wanted.amount,
                refund_ref=refund_id,
            )
        except PaymentProviderRefused as refusal:
            # The refund may exist after all (an earlier attempt whose answer was lost, its
            # idempotency key since forgotten): Stripe's list names it by our metadata.
            found = self.gateway.refunds_of(order.payment_intent)
            made = [r for r in found if r.refund_ref == refund_id]
            if made:
                return self._record(order, made[0], cause)
            code = refusal.code or "refused"
            news = self.ledger.refuse_merchant_refund(order.id, refund_id, code, cause)
            if news.events:
                REFUNDS.labels(outcome=RefundStatus.FAILED).inc()
                log.error(
                    "merchant_refund_failed",
                    order_id=str(order.id),
                    refund_id=refund_id,
                    code=code,
                    error=str(refusal),
                )
            return news.order
        return self._record(order, refund, f"stripe:{refund.refund_id}")

    def follow_merchant(self, order_id: UUID, refund_id: str, cause: str) -> Outcome:
        """Asks Stripe how one of the merchant's refunds stands (the resync): made, it is
        followed; not made yet (Stripe could not answer), it is asked for again."""
        order = self.ledger.get_order(order_id)
        wanted = None if order is None else order.book.merchant.get(refund_id)
        if wanted is not None and wanted.stripe_refund_id is not None:
            return self.follow(wanted.stripe_refund_id, cause)
        order = self.issue_merchant(order_id, refund_id, cause)
        if order is None:
            return _anomaly("unknown_order", order_id=str(order_id))
        return Outcome(order.checkout_session_id, order.status, order.id)

    def follow(self, refund_id: str, cause: str) -> Outcome:
        """Records what Stripe says of the refund now (its events, and the resync)."""
        refund = self.gateway.retrieve_refund(refund_id)
        if refund is None:
            return _anomaly("unknown_to_stripe", refund_id=refund_id)
        order = self._order_of(refund.order_id, refund.payment_intent)
        if order is None:
            return _anomaly("not_a_payment_of_this_ledger", refund_id=refund_id)
        order = self._record(order, refund, cause)
        return Outcome(order.checkout_session_id, order.status, order.id)

    def follow_charge(self, charge_id: str, cause: str) -> Outcome:
        """A charge was refunded (`charge.refunded`): records each refund of its payment."""
        charge = self.gateway.retrieve_charge(charge_id)
        if charge is None or charge.payment_intent is None:
            return _anomaly("unknown_to_stripe", charge_id=charge_id)
        order = self._order_of(None, charge.payment_intent)
        if order is None:
            return _anomaly("not_a_payment_of_this_ledger", charge_id=charge_id)
        for refund in reversed(self.gateway.refunds_of(charge.payment_intent)):  # oldest first
            order = self._record(order, refund, cause)
        return Outcome(order.checkout_session_id, order.status, order.id)

    def _refund_already_made(self, payment_intent: str, order_id: UUID) -> Refund | None:
        """The refund that emptied the charge: ours if Stripe holds one (its answer was lost),
        else the newest one that has not failed."""
        made = [r for r in self.gateway.refunds_of(payment_intent) if not r.failed]
        ours = [r for r in made if r.order_id == str(order_id)]
        return next(iter(ours or made), None)

    def _order_of(self, order_ref: str | None, payment_intent: str | None) -> Order | None:
        order_id: UUID | None = None
        if order_ref:
            try:
                order_id = UUID(order_ref)
            except ValueError:
                order_id = None
        if order_id is None and payment_intent:
            order_id = self.payments.order_for(payment_intent)
        return None if order_id is None else self.ledger.get_order(order_id)

    def _record(self, order: Order, refund: Refund, cause: str, *, adopt: bool = False) -> Order:
        news = self.ledger.record_refund(order.id, refund, cause, adopt=adopt)
        order = news.order
        if "OutsideRefundRecorded" in news.events:
            OUTSIDE_REFUNDS.labels(status=refund.status).inc()
            log.warning(
                "outside_refund",
                order_id=str(order.id),
                refund_id=refund.refund_id,
                status=refund.status,
            )
        outcome = _outcome(news.events)
        if outcome is not None:
            REFUNDS.labels(outcome=outcome).inc()
            report = log.error if outcome == RefundStatus.FAILED else log.info
            report(
                f"refund_{outcome}",
                order_id=str(order.id),
                refund_id=refund.refund_id,
                code=order.refund_failure or refund.failure_reason,
            )
        return order

    def _refused(self, order: Order, code: str, message: str, cause: str) -> Order:
        news = self.ledger.refuse_refund(order.id, code, cause)
        if news.events:
            REFUNDS.labels(outcome=RefundStatus.FAILED).inc()
            log.error(OrderStatus.REFUND_FAILED, order_id=str(order.id), code=code, error=message)
        return news.order


def _outcome(events: tuple[str, ...]) -> RefundStatus | None:
    """The step of a refund (the order's own, or the merchant's) that these events record,
    counted in the metrics: Stripe took it (and it has not settled yet), it succeeded, or it
    failed."""
    named = {e.removeprefix("Merchant") for e in events}
    if "RefundFailed" in named:
        return RefundStatus.FAILED
    if named & {"RefundIssued", "RefundSucceeded"}:
        return RefundStatus.SUCCEEDED
    if "RefundSubmitted" in named:
        return RefundStatus.PENDING
    return None


def _anomaly(kind: str, **about: str) -> Outcome:
    log.warning("anomaly", kind=kind, **about)
    return Outcome("", IGNORED, anomaly=kind)


__all__ = ["PaymentIndex", "Refunds", "refund_idempotency_key"]
