"""Which decision each Stripe event asks for. An event is only a hint: each decision re-fetches
the object from Stripe and records what Stripe says now."""

from __future__ import annotations

from ledger.checkout import Checkout, Outcome
from ledger.disputes import Disputes
from ledger.refunds import Refunds

CHECKOUT_EVENTS = frozenset(
    {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "checkout.session.expired",
    }
)
REFUND_EVENTS = frozenset({"refund.created", "refund.updated", "refund.failed"})
CHARGE_REFUNDED = "charge.refunded"
DISPUTE_EVENTS = frozenset({"charge.dispute.created", "charge.dispute.closed"})
HANDLED = CHECKOUT_EVENTS | REFUND_EVENTS | DISPUTE_EVENTS | {CHARGE_REFUNDED}


class StripeEvents:
    def __init__(self, checkout: Checkout, refunds: Refunds, disputes: Disputes) -> None:
        self.checkout = checkout
        self.refunds = refunds
        self.disputes = disputes

    def handle(self, event_type: str, object_id: str, cause: str) -> Outcome:
        """Decides what the event's object means now. `event_type` must be in HANDLED."""
        if event_type in CHECKOUT_EVENTS:
            return self.checkout.fulfill_checkout(object_id, cause)
        if event_type in REFUND_EVENTS:
            return self.refunds.follow(object_id, cause)
        if event_type == CHARGE_REFUNDED:
            return self.refunds.follow_charge(object_id, cause)
        if event_type in DISPUTE_EVENTS:
            return self.disputes.follow(object_id, cause)
        raise ValueError(f"not a handled Stripe event type: {event_type}")
