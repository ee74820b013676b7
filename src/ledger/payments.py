"""The payment provider port: what the ledger needs from Stripe, in the ledger's words."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class PaymentProviderUnavailable(Exception):
    """A failure worth retrying: the provider timed out, was unreachable or answered 5xx/429."""


class PaymentProviderRefused(Exception):
    """The provider refused the request for good (bad parameters, auth, idempotency clash)."""


@dataclass(frozen=True)
class CheckoutLine:
    name: str
    quantity: int
    unit_amount: int
    currency: str


@dataclass(frozen=True)
class NewCheckout:
    """What a checkout session is created with; `lines` are priced in the cart's currency."""

    cart_id: str
    user_id: str | None
    lines: list[CheckoutLine]
    success_url: str
    cancel_url: str
    idempotency_key: str


@dataclass(frozen=True)
class CreatedCheckout:
    session_id: str
    url: str


@dataclass(frozen=True)
class CheckoutSession:
    """A checkout session as the provider reports it now."""

    session_id: str
    status: str  # open | complete | expired
    payment_status: str  # paid | unpaid | no_payment_required
    amount_total: int | None
    currency: str | None
    payment_intent: str | None
    cart_id: str | None

    @property
    def is_paid(self) -> bool:
        return self.status == "complete" and self.payment_status in ("paid", "no_payment_required")


@dataclass(frozen=True)
class IssuedRefund:
    refund_id: str
    status: str


class PaymentGateway(Protocol):
    def create_checkout(self, checkout: NewCheckout) -> CreatedCheckout: ...

    def retrieve_checkout(self, session_id: str) -> CheckoutSession | None:
        """The session, or None when the provider has no such session."""
        ...

    def refund(
        self, payment_intent: str, amount: int, order_id: str, idempotency_key: str
    ) -> IssuedRefund: ...
