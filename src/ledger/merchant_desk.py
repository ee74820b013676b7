"""What the merchant does with an order after the sale, whoever asks (the API, the demo page):
the decision committed (`ledger.commands.after_sale`), then its refund asked of Stripe at once,
so an answer can show Stripe's word on it. When Stripe cannot answer now, the refund worker asks
again later with the same idempotency key, and the refund stays `pending` meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping
from uuid import UUID

import structlog

from ledger.application import Ledger
from ledger.payments import PaymentProviderUnavailable
from ledger.refunds import Refunds

log = structlog.get_logger("ledger.merchant_desk")


class MerchantDesk:
    def __init__(self, ledger: Ledger, refunds: Refunds) -> None:
        self.ledger = ledger
        self.refunds = refunds

    def refund(
        self,
        order_id: UUID,
        request_id: str,
        *,
        lines: Mapping[str, int] | None,
        amount: int | None,
        restock: bool,
        reason: str | None,
        cause: str,
    ) -> None:
        self.ledger.refund_order(
            order_id,
            request_id,
            lines=lines,
            amount=amount,
            restock=restock,
            reason=reason,
            cause=cause,
        )
        self._send(order_id, request_id, cause)

    def cancel(
        self, order_id: UUID, request_id: str, *, restock: bool, reason: str | None, cause: str
    ) -> None:
        order = self.ledger.cancel_order(
            order_id, request_id, restock=restock, reason=reason, cause=cause
        )
        if request_id in order.book.merchant:  # else nothing to refund, or released instead
            self._send(order_id, request_id, cause)

    def _send(self, order_id: UUID, refund_id: str, cause: str) -> None:
        try:
            self.refunds.issue_merchant(order_id, refund_id, cause)
        except PaymentProviderUnavailable as unavailable:
            log.warning("merchant_refund_deferred", order_id=str(order_id), error=str(unavailable))
