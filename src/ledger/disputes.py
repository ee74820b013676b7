"""Disputes (chargebacks) of the ledger's payments: recorded on the order, as Stripe reports
them. A dispute never reverses stock or changes the order's status by itself: a person decides
what a lost dispute means for the goods."""

from __future__ import annotations

import structlog

from ledger.application import Ledger
from ledger.checkout import IGNORED, Outcome
from ledger.metrics import DISPUTES
from ledger.payments import PaymentGateway
from ledger.refunds import PaymentIndex

log = structlog.get_logger("ledger.disputes")


class Disputes:
    def __init__(self, ledger: Ledger, gateway: PaymentGateway, payments: PaymentIndex) -> None:
        self.ledger = ledger
        self.gateway = gateway
        self.payments = payments

    def follow(self, dispute_id: str, cause: str) -> Outcome:
        """Records what Stripe says of the dispute now (its events, and the resync)."""
        dispute = self.gateway.retrieve_dispute(dispute_id)
        if dispute is None or dispute.payment_intent is None:
            return _anomaly("unknown_to_stripe", dispute_id)
        order_id = self.payments.order_for(dispute.payment_intent)
        order = None if order_id is None else self.ledger.get_order(order_id)
        if order is None:
            return _anomaly("not_a_payment_of_this_ledger", dispute_id)
        news = self.ledger.record_dispute(order.id, dispute, cause)
        order = news.order
        if news.events:
            DISPUTES.labels(status=dispute.status).inc()
            log.warning(
                "dispute",
                order_id=str(order.id),
                dispute_id=dispute_id,
                status=dispute.status,
                reason=dispute.reason,
            )
        return Outcome(order.checkout_session_id, order.status, order.id)


def _anomaly(kind: str, dispute_id: str) -> Outcome:
    log.warning("anomaly", kind=kind, dispute_id=dispute_id)
    return Outcome("", IGNORED, anomaly=kind)
