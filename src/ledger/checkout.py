"""Checkout: starting Stripe checkout sessions for carts, and fulfilling them once paid.

`fulfill_checkout(session_id)` is the single idempotent entry point for every outcome. The
webhook only says *which* session changed: the decision comes from the session as Stripe
reports it now, which makes duplicates and out-of-order deliveries harmless.

The customer's address (Stripe's `customer_details.email`) is recorded on the order sealed
with the customer's own key (`PersonalData`), never in clear.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from uuid import UUID

import structlog

from ledger.application import Ledger
from ledger.domain.errors import (
    DomainError,
    UnknownCart,
    UnknownCheckoutSession,
)
from ledger.domain.order import PaidSession
from ledger.domain.pricing import Shortage
from ledger.domain.vocabulary import OrderStatus, Rejection
from ledger.payments import (
    CheckoutLine,
    CheckoutSession,
    CreatedCheckout,
    NewCheckout,
    PaymentGateway,
)
from ledger.personal_data import PersonalData

log = structlog.get_logger("ledger.checkout")

IGNORED = "ignored"  # the outcome of an event the ledger records nothing for


class OutOfStock(DomainError):
    code = "out_of_stock"

    def __init__(self, shortages: list[Shortage]) -> None:
        super().__init__("Some items are not in stock in the quantity asked for.")
        self.shortages = shortages


@dataclass(frozen=True)
class Outcome:
    """What fulfill_checkout decided: a status of the contract, or `ignored` for anomalies."""

    session_id: str
    status: str
    order_id: UUID | None = None
    anomaly: str | None = None


class Checkout:
    def __init__(
        self,
        ledger: Ledger,
        gateway: PaymentGateway,
        personal_data: PersonalData,
        public_url: str,
    ) -> None:
        self.ledger = ledger
        self.gateway = gateway
        self.personal_data = personal_data
        self.public_url = public_url.rstrip("/")

    def begin(self, cart_id: UUID, cause: str) -> CreatedCheckout:
        """Creates a Stripe checkout session for the cart as priced now, and records it."""
        cart = self.ledger.get_cart(cart_id)
        cart.check_checkout(cart.lines)
        priced = self.ledger.price(cart)
        currency = priced.checkout_currency()
        shortages = priced.shortages()
        if shortages:
            raise OutOfStock(shortages)
        created = self.gateway.create_checkout(
            NewCheckout(
                cart_id=str(cart.id),
                user_id=cart.user_id,
                lines=[
                    CheckoutLine(line.name, line.quantity, line.unit_amount, currency)
                    for line in priced.lines
                ],
                success_url=f"{self.public_url}/checkout/success?session_id={{CHECKOUT_SESSION_ID}}",
                cancel_url=f"{self.public_url}/?cart_id={cart.id}&checkout=cancelled",
                # The same cart at the same prices always asks for the same session, so a
                # retried request (ours or the SDK's) cannot open a second one; a price or
                # currency change makes a new key rather than an idempotency clash at Stripe.
                idempotency_key=(
                    f"checkout-{cart.id}-v{cart.version}-{_digest([currency, priced.snapshot()])}"
                ),
            )
        )
        self.ledger.start_checkout(priced, created.session_id, cause)
        log.info("checkout_started", cart_id=str(cart.id), session_id=created.session_id)
        return created

    def fulfill_checkout(self, session_id: str, cause: str) -> Outcome:
        """Records whatever Stripe says became of the session (and of its payment, for a
        delayed one): the event that brought us here is only a hint. Safe to call any number
        of times, in any order. A paid session is decided by `Order.fulfil`."""
        session = self.gateway.retrieve_checkout(session_id)
        if session is None:
            return self._anomaly(session_id, "unknown_to_stripe")
        cart_id = _uuid(session.cart_id)
        if cart_id is None:
            return self._anomaly(session_id, "no_cart_reference")
        try:
            return self._record(session, cart_id, cause)
        except (UnknownCart, UnknownCheckoutSession):  # not a session this ledger started
            return self._anomaly(session_id, "not_started_by_this_ledger")

    def _record(self, session: CheckoutSession, cart_id: UUID, cause: str) -> Outcome:
        session_id = session.session_id
        if session.is_paid:
            order = self.ledger.place_order(
                PaidSession(
                    session_id=session_id,
                    cart_id=cart_id,
                    amount_total=session.amount_total or 0,
                    currency=session.currency or "",
                    payment_intent=session.payment_intent,
                    customer=self.personal_data.seal(session.customer_email),
                ),
                cause,
            )
            if order.rejection_reason != Rejection.AMOUNT_MISMATCH:
                return Outcome(session_id, order.status, order.id)
            log.warning(
                "anomaly",
                kind=Rejection.AMOUNT_MISMATCH,
                session_id=session_id,
                charged=session.amount_total,
                priced=order.amount_total,
            )
            return Outcome(session_id, order.status, order.id, anomaly=Rejection.AMOUNT_MISMATCH)
        if session.is_expired:
            self.ledger.record_expired(session_id, cart_id, cause)
            return Outcome(session_id, OrderStatus.EXPIRED)
        if session.payment_failed:
            order = self.ledger.record_payment_failed(
                session_id, cart_id, cause, self.personal_data.seal(session.customer_email)
            )
            return Outcome(session_id, order.status, order.id)
        if session.is_complete:
            order = self.ledger.record_awaiting_payment(
                session_id,
                cart_id,
                session.payment_intent,
                cause,
                self.personal_data.seal(session.customer_email),
            )
            return Outcome(session_id, order.status, order.id)
        self.ledger.get_cart(cart_id).session(session_id)  # one of ours, still open?
        return Outcome(session_id, OrderStatus.PROCESSING)

    def _anomaly(self, session_id: str, kind: str) -> Outcome:
        log.warning("anomaly", kind=kind, session_id=session_id)
        return Outcome(session_id, IGNORED, anomaly=kind)


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _uuid(value: str | None) -> UUID | None:
    try:
        return UUID(value) if value else None
    except ValueError:
        return None
