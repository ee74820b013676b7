"""The refund worker: pays back every RefundRequested, exactly once in effect.

It follows the log at least once; Stripe's idempotency key, derived from the order id and the
same on every retry, makes a repeated call return the first refund instead of a second one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from eventsourcing.utils import get_topic

from ledger.application import Ledger
from ledger.domain import Order
from ledger.payments import PaymentGateway

log = structlog.get_logger("ledger.refunds")


def refund_idempotency_key(order_id: object) -> str:
    return f"refund-{order_id}"


class RefundWorker:
    name = "refunds"
    topics: Sequence[str] = (f"{get_topic(Order)}.RefundRequested",)

    def __init__(self, ledger: Ledger, gateway: PaymentGateway) -> None:
        self.ledger = ledger
        self.gateway = gateway

    def handle(self, event: Any, position: int) -> None:
        order = self.ledger.get_order(event.originator_id)
        if order is None or order.refund_id is not None:
            return
        if not order.payment_intent or order.amount_total == 0:
            # Nothing was charged (a free checkout): nothing to pay back.
            self.ledger.record_refund_issued(order.id, "no_charge", f"worker:{self.name}")
            return
        refund = self.gateway.refund(
            payment_intent=order.payment_intent,
            amount=order.amount_total,
            order_id=str(order.id),
            idempotency_key=refund_idempotency_key(order.id),
        )
        self.ledger.record_refund_issued(order.id, refund.refund_id, f"stripe:{refund.refund_id}")
        log.info("refund_issued", order_id=str(order.id), refund_id=refund.refund_id)
