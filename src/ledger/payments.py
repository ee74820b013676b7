"""The payment provider port: what the ledger needs from Stripe, in the ledger's words."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ledger.domain.vocabulary import REQUIRES_CAPTURE, RefundStatus, StripeSessionStatus


class PaymentProviderUnavailable(Exception):
    """A failure worth retrying: the provider timed out, was unreachable, answered 5xx/429, or
    refused our key (a rotated or restricted key is fixed by a person, then retries succeed)."""


class PaymentProviderRefused(Exception):
    """The provider refused the request for good; `code` is its error code, when it gave one
    (e.g. `charge_already_refunded`, `charge_disputed`)."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


# A PaymentIntent's statuses that decide a delayed payment (Stripe's words).
PAYMENT_SUCCEEDED = "succeeded"
PAYMENT_FAILED_STATUSES = frozenset({"requires_payment_method", "canceled"})


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
    # When Stripe itself expires the session (unix seconds): with holds, at the hold's end or
    # 30 minutes ahead, Stripe's minimum. None: Stripe's default (24 hours).
    expires_at: int | None = None
    # Manual capture: the card payment is only authorized, and captured once the order is placed.
    capture_manually: bool = False


@dataclass(frozen=True)
class CreatedCheckout:
    session_id: str
    url: str
    held_until: str | None = None  # with holds: until when the cart's stock is held (ISO-8601)


@dataclass(frozen=True)
class CheckoutSession:
    """A checkout session as the provider reports it now, with its payment's status."""

    session_id: str
    status: str  # open | complete | expired
    payment_status: str  # paid | unpaid | no_payment_required
    amount_total: int | None
    currency: str | None
    payment_intent: str | None
    payment_intent_status: str | None  # processing | succeeded | requires_payment_method | ...
    cart_id: str | None
    # `customer_details.email`: recorded on the order sealed (ledger.personal_data).
    customer_email: str | None = None

    @property
    def is_paid(self) -> bool:
        if not self.is_complete:
            return False
        return self.payment_status in ("paid", "no_payment_required") or (
            self.payment_intent_status == PAYMENT_SUCCEEDED
        )

    @property
    def is_authorized(self) -> bool:
        """Manual capture: the customer paid, and the card payment waits to be captured."""
        return self.is_complete and self.payment_intent_status == REQUIRES_CAPTURE

    @property
    def is_expired(self) -> bool:
        """Expired unpaid: no payment can complete any more."""
        return self.status == StripeSessionStatus.EXPIRED

    @property
    def is_complete(self) -> bool:
        """The customer finished checkout (the payment may still be clearing)."""
        return self.status == StripeSessionStatus.COMPLETE

    @property
    def payment_failed(self) -> bool:
        """The payment was tried and failed: Stripe's PaymentIntent says so, not an event."""
        return self.is_complete and self.payment_intent_status in PAYMENT_FAILED_STATUSES


@dataclass(frozen=True)
class PaymentIntent:
    """A payment as the provider reports it now."""

    payment_intent: str
    status: str  # requires_capture | succeeded | canceled | processing | ...
    amount: int
    amount_received: int  # what was captured
    currency: str


@dataclass(frozen=True)
class Refund:
    """A refund as the provider reports it now."""

    refund_id: str
    status: str  # pending | requires_action | succeeded | failed | canceled
    amount: int
    currency: str
    payment_intent: str | None
    order_id: str | None  # our metadata, when the ledger asked for it
    failure_reason: str | None = None
    # Our metadata too: the merchant's refund this is (`refund_id` in the order's refunds).
    refund_ref: str | None = None

    @property
    def succeeded(self) -> bool:
        return RefundStatus.of(self.status) == RefundStatus.SUCCEEDED

    @property
    def failed(self) -> bool:
        return RefundStatus.of(self.status) == RefundStatus.FAILED


@dataclass(frozen=True)
class Charge:
    charge_id: str
    payment_intent: str | None


@dataclass(frozen=True)
class Dispute:
    dispute_id: str
    status: str  # warning_needs_response | needs_response | under_review | won | lost | ...
    amount: int
    currency: str
    reason: str
    payment_intent: str | None

    @property
    def closed(self) -> bool:
        return self.status in ("won", "lost", "warning_closed")


class PaymentGateway(Protocol):
    """Every `retrieve_*` answers None when the provider has no such object (its only
    permanent answer), and raises PaymentProviderUnavailable for any other failure."""

    def create_checkout(self, checkout: NewCheckout) -> CreatedCheckout: ...

    def retrieve_checkout(self, session_id: str) -> CheckoutSession | None: ...

    def expire_checkout(self, session_id: str) -> CheckoutSession | None:
        """Expires an open session, so that no payment can complete any more; raises
        PaymentProviderRefused when it is not open (the customer paid, or it expired)."""
        ...

    def capture(self, payment_intent: str, idempotency_key: str) -> PaymentIntent:
        """Captures all of an authorized payment."""
        ...

    def cancel_authorization(self, payment_intent: str, idempotency_key: str) -> PaymentIntent:
        """Cancels an authorized payment: nothing is charged."""
        ...

    def retrieve_payment_intent(self, payment_intent: str) -> PaymentIntent | None: ...

    def refund(
        self,
        payment_intent: str,
        order_id: str,
        idempotency_key: str,
        *,
        amount: int | None = None,
        refund_ref: str | None = None,
    ) -> Refund:
        """A refund of `amount` of the payment, or of all of it (whatever was actually
        charged) when None; `refund_ref`: the merchant's refund it makes."""
        ...

    def retrieve_refund(self, refund_id: str) -> Refund | None: ...

    def refunds_of(self, payment_intent: str) -> list[Refund]:
        """The payment's refunds, newest first."""
        ...

    def retrieve_charge(self, charge_id: str) -> Charge | None: ...

    def retrieve_dispute(self, dispute_id: str) -> Dispute | None: ...
