"""The refund worker: for each order that owes a refund (`Order.RefundRequested`) and each
refund the merchant decided (`AfterSale.MerchantRefundRequested`), asks Stripe to make it.
What a refund is, and what Stripe's news of it means, is `ledger.refunds.Refunds`:
the same object the webhook's `refund.*` events and the resync go through."""

from __future__ import annotations

from collections.abc import Sequence

from ledger.domain import Order
from ledger.domain.after_sale import AfterSale
from ledger.refunds import Refunds
from projections.base import DomainEvent
from side_effects.base import reacts_to


class RefundWorker:
    """Follows the log for RefundRequested and issues each refund, several at once (the
    workers' default `concurrency`), so one refund Stripe hangs on holds back no other. Each
    failed event (an attempt that raised, or ran past its deadline) gets its own retry
    schedule; the idempotency key derived from the order makes every retry the same refund."""

    name = "refunds"
    topics: Sequence[str] = reacts_to(
        Order.RefundRequested,  # type: ignore[attr-defined]
        AfterSale.MerchantRefundRequested,  # type: ignore[attr-defined]
    )

    def __init__(self, refunds: Refunds) -> None:
        self.refunds = refunds

    def handle(self, event: DomainEvent, position: int) -> None:
        cause = f"worker:{self.name}"
        if isinstance(event, AfterSale.MerchantRefundRequested):  # type: ignore[attr-defined]
            self.refunds.issue_merchant(event.originator_id, event.refund_id, cause)
        else:
            self.refunds.issue(event.originator_id, cause)


__all__ = ["RefundWorker"]
