"""The capture worker (manual capture): for each order placed on an authorization
(`Order.CaptureRequested`) it has Stripe capture the payment, and for each authorization the
order could not use (`Order.ReleaseRequested`, or the merchant cancelled the order before its
capture: `AfterSale.OrderCancelled`) it has Stripe cancel it. What each means is
`ledger.captures.Captures`."""

from __future__ import annotations

from collections.abc import Sequence

from ledger.captures import Captures
from ledger.domain import Order
from ledger.domain.after_sale import AfterSale
from projections.base import DomainEvent
from side_effects.base import reacts_to


class CaptureWorker:
    """Follows the log for captures and releases to make, several at once (the workers'
    default `concurrency`). Each failed event gets its own retry schedule, so one payment
    Stripe cannot take now (or hangs on) holds back no other; the idempotency keys derived
    from the order make every retry the same capture or cancellation."""

    name = "captures"
    topics: Sequence[str] = reacts_to(
        Order.CaptureRequested,  # type: ignore[attr-defined]
        Order.ReleaseRequested,  # type: ignore[attr-defined]
        AfterSale.OrderCancelled,  # type: ignore[attr-defined]
    )

    def __init__(self, captures: Captures) -> None:
        self.captures = captures

    def handle(self, event: DomainEvent, position: int) -> None:
        cause = f"worker:{self.name}"
        if isinstance(event, AfterSale.OrderCancelled):  # type: ignore[attr-defined]
            if event.release:  # cancelled before its capture: the authorization goes
                self.captures.release(event.originator_id, cause)
        elif isinstance(event, Order.ReleaseRequested):  # type: ignore[attr-defined]
            self.captures.release(event.originator_id, cause)
        else:
            self.captures.capture(event.originator_id, cause)


__all__ = ["CaptureWorker"]
