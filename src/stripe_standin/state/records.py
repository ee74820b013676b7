"""How the store keeps a checkout session and a refund: the Stripe object, plus what Stripe
knows about it that its object does not show."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stripe_standin.webhooks import RequestRef

# Records an event about an object as it is now: (type, object, session id, request).
Emit = Callable[[str, dict[str, Any], str | None, RequestRef | None], None]


@dataclass
class Session:
    obj: dict[str, Any]  # the checkout.session object, without line_items
    items: list[dict[str, Any]]  # line item objects
    intent_metadata: dict[str, str]  # payment_intent_data[metadata], for its PaymentIntent
    intent_description: str | None
    capture_method: str = "automatic_async"  # payment_intent_data[capture_method]
    charge: str | None = None  # set once the payment succeeded (for a card held: captured)
    refunds: list[str] = field(default_factory=list)  # ids, oldest first
    dispute: str | None = None
    hold_refunds: bool = False  # this payment's new refunds stay pending

    @property
    def id(self) -> str:
        return str(self.obj["id"])

    @property
    def intent(self) -> str | None:
        pi: str | None = self.obj["payment_intent"]
        return pi


@dataclass
class Refund:
    obj: dict[str, Any]
    idempotency_key: str | None
    session_id: str
