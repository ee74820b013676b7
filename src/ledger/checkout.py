"""Checkout: starting Stripe checkout sessions for carts, and fulfilling them once paid.

`fulfill_checkout(session_id)` is the single idempotent entry point for every outcome. The
webhook only says *which* session changed: the decision comes from the session as Stripe
reports it now, which makes duplicates and out-of-order deliveries harmless.

With holds (`LEDGER_STOCK_HOLD`), a checkout holds the cart's stock before Stripe is asked for
a session, and `end_session` ends a session early (its hold's time is up, or its cart checks
out again): Stripe's answer to the expire call settles the race with a paying customer.

The customer's address (Stripe's `customer_details.email`) is recorded on the order sealed
with the customer's own key (`PersonalData`), never in clear.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

import structlog

from ledger.application import Ledger
from ledger.domain import Cart
from ledger.domain.errors import UnknownCart, UnknownCheckoutSession
from ledger.domain.order import PaidSession
from ledger.domain.pricing import PricedCart
from ledger.domain.vocabulary import CaptureMode, HoldEnd, OrderStatus, Rejection, SessionState
from ledger.payments import (
    CheckoutLine,
    CheckoutSession,
    CreatedCheckout,
    NewCheckout,
    PaymentGateway,
    PaymentProviderRefused,
    PaymentProviderUnavailable,
)
from ledger.personal_data import PersonalData

log = structlog.get_logger("ledger.checkout")

IGNORED = "ignored"  # the outcome of an event the ledger records nothing for


# Stripe's shortest life for a checkout session; a shorter hold is ended by the ledger itself.
# The minute's margin keeps the request valid however long it takes to reach Stripe.
STRIPE_MIN_SESSION = timedelta(minutes=31)


@dataclass
class CheckoutAttempt:
    """What one request's checkout did before it failed, so that running it again (a commit
    left in doubt by a failover) ends with what one run would have: one hold, taken once, and
    one Stripe session, made once and recorded once. Made by the caller before the first run;
    `begin` fills it in as it goes."""

    hold_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    held_until: str | None = None  # set before the hold is taken, with the session's end
    expires_at: datetime | None = None
    created: CreatedCheckout | None = None  # the session Stripe made, before it is recorded


class CheckoutAbandoned(Exception):
    """The caller of `Checkout.begin` gave up waiting; what was held for it was let go."""

    def __init__(self, cart_id: UUID) -> None:
        super().__init__(f"The checkout of cart {cart_id} was abandoned by its caller.")


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
        *,
        stock_hold: timedelta | None = None,
        capture: CaptureMode = CaptureMode.AUTOMATIC,
    ) -> None:
        """`stock_hold`: how long a checkout holds its cart's stock (None: nothing is held);
        `capture`: whether card payments are captured at once or once the order is placed."""
        self.ledger = ledger
        self.gateway = gateway
        self.personal_data = personal_data
        self.public_url = public_url.rstrip("/")
        self.stock_hold = stock_hold
        self.capture = capture

    def begin(
        self,
        cart_id: UUID,
        cause: str,
        abandoned: Callable[[], bool] = lambda: False,
        attempt: CheckoutAttempt | None = None,
    ) -> CreatedCheckout:
        """Creates a Stripe checkout session for the cart as priced now, and records it. With
        holds, the cart's stock is held first, in the commit that checks it, after the cart's
        earlier sessions were ended, so a cart never has two payable sessions.

        `abandoned()` says whether the caller gave up waiting (its request answered already):
        then no customer will ever see the session, and what is held for it is let go.

        `attempt`: the same one when the caller runs it again after a failure (see
        `CheckoutAttempt`); what that run recorded is found and not done twice."""
        attempt = attempt or CheckoutAttempt()
        cart = self.ledger.get_cart(cart_id)
        if attempt.created is not None and attempt.created.session_id in cart.sessions:
            return attempt.created  # recorded by the run that failed after all
        cart.check_checkout(cart.lines)
        if self.stock_hold is None:
            priced = self.ledger.price(cart)
            priced.checkout_currency()
            priced.require_stock()
            # The same cart at the same prices always asks for the same session, so a retried
            # request (ours or the SDK's) cannot open a second one; a price or currency change
            # makes a new key rather than an idempotency clash at Stripe.
            key = f"{cart.id}-v{cart.version}-{_digest([priced.currency, priced.snapshot()])}"
            return self._start(priced, key, None, cause, attempt=attempt)
        if attempt.hold_id in cart.holds and attempt.held_until and attempt.expires_at:
            # Taken by the run that failed: the same hold, priced as then, asks Stripe again
            # with the same key and the same parameters (the same session, if Stripe made one).
            hold_id, held_until, expires_at = (
                attempt.hold_id,
                attempt.held_until,
                attempt.expires_at,
            )
            priced = self.ledger.price(cart)
        else:
            if attempt.held_until is not None:
                # A run before may have placed its hold and released it since: a hold id is
                # placed once, so this one is new.
                attempt.hold_id = str(uuid.uuid4())
            hold_id = attempt.hold_id
            for earlier in _open_sessions(cart):
                self.end_session(earlier, HoldEnd.CHECKED_OUT_AGAIN, cause)
            now = datetime.now(UTC)
            held_until = (now + self.stock_hold).isoformat(timespec="seconds")
            expires_at = max(now + self.stock_hold, now + STRIPE_MIN_SESSION)
            attempt.held_until, attempt.expires_at = held_until, expires_at
            priced = self.ledger.hold_stock(cart_id, hold_id, held_until, cause)
        if abandoned():
            self.ledger.release_hold(cart_id, hold_id, HoldEnd.ABANDONED, cause)
            raise CheckoutAbandoned(cart_id)
        try:
            created = self._start(
                priced, hold_id, hold_id, cause, expires_at, held_until, attempt=attempt
            )
        except (PaymentProviderRefused, PaymentProviderUnavailable):
            # No session: nobody can pay for what is held (if Stripe made one after all, the
            # session is never recorded, and it cannot become an order).
            self.ledger.release_hold(cart_id, hold_id, HoldEnd.CHECKOUT_FAILED, cause)
            raise
        if abandoned():
            # Nobody has its URL: a session held for no one would keep the units from every
            # other customer until the hold ends.
            self.end_session(created.session_id, HoldEnd.ABANDONED, cause)
            raise CheckoutAbandoned(cart_id)
        return created

    def _start(
        self,
        priced: PricedCart,
        key: str,
        hold_id: str | None,
        cause: str,
        expires_at: datetime | None = None,
        held_until: str | None = None,
        *,
        attempt: CheckoutAttempt,
    ) -> CreatedCheckout:
        cart = priced.cart
        currency = priced.checkout_currency()
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
                idempotency_key=f"checkout-{key}",
                expires_at=None if expires_at is None else int(expires_at.timestamp()),
                capture_manually=self.capture == CaptureMode.MANUAL,
            )
        )
        attempt.created = CreatedCheckout(created.session_id, created.url, held_until)
        recorded = self.ledger.start_checkout(priced, created.session_id, cause, hold_id)
        if hold_id is not None:
            if recorded.hold_of(created.session_id) is None:
                # The hold ended while Stripe made the session: a session nothing is held for
                # must not stay payable.
                self.end_session(created.session_id, HoldEnd.TIME_UP, cause)
                raise PaymentProviderUnavailable("The checkout took too long; please try again.")
            # A checkout of the same cart at the same moment may have recorded a session since
            # `begin` ended the earlier ones: the newest stays payable, each ends those before.
            for earlier in _open_sessions(recorded, before=created.session_id):
                self.end_session(earlier, HoldEnd.CHECKED_OUT_AGAIN, cause)
        log.info("checkout_started", cart_id=str(cart.id), session_id=created.session_id)
        return attempt.created

    def end_session(self, session_id: str, reason: HoldEnd, cause: str) -> Outcome:
        """Ends a session before Stripe would (its hold's time is up, or its cart checks out
        again) and records what became of it. Stripe's answer settles the race with the
        customer: expired means no payment can complete any more (the hold ends); a session
        that is no longer open was paid (or expired) in time, and is decided as it stands."""
        try:
            session = self.gateway.expire_checkout(session_id)
        except PaymentProviderRefused:
            session = self.gateway.retrieve_checkout(session_id)
        if session is None:
            return self._anomaly(session_id, "unknown_to_stripe")
        log.info("session_ended", session_id=session_id, reason=reason, status=session.status)
        return self._decide(session, cause, reason)

    def fulfill_checkout(self, session_id: str, cause: str) -> Outcome:
        """Records whatever Stripe says became of the session (and of its payment, for a
        delayed one): the event that brought us here is only a hint. Safe to call any number
        of times, in any order. A paid session is decided by `Order.fulfil`."""
        session = self.gateway.retrieve_checkout(session_id)
        if session is None:
            return self._anomaly(session_id, "unknown_to_stripe")
        return self._decide(session, cause)

    def _decide(
        self, session: CheckoutSession, cause: str, ended: HoldEnd = HoldEnd.EXPIRED
    ) -> Outcome:
        """Records what became of the session; `ended`: why its hold ends if it expired."""
        session_id = session.session_id
        cart_id = _uuid(session.cart_id)
        if cart_id is None:
            return self._anomaly(session_id, "no_cart_reference")
        try:
            return self._record(session, cart_id, cause, ended)
        except (UnknownCart, UnknownCheckoutSession):  # not a session this ledger started
            return self._anomaly(session_id, "not_started_by_this_ledger")

    def _record(
        self, session: CheckoutSession, cart_id: UUID, cause: str, ended: HoldEnd
    ) -> Outcome:
        session_id = session.session_id
        if session.is_paid or session.is_authorized:
            order = self.ledger.place_order(
                PaidSession(
                    session_id=session_id,
                    cart_id=cart_id,
                    amount_total=session.amount_total or 0,
                    currency=session.currency or "",
                    payment_intent=session.payment_intent,
                    customer=self.personal_data.seal(session.customer_email),
                    authorized_only=not session.is_paid,
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
            self.ledger.record_expired(session_id, cart_id, cause, ended)
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


def _open_sessions(cart: Cart, before: str | None = None) -> list[str]:
    """The cart's sessions a customer may still pay (all, or those recorded before `before`)."""
    found = []
    for session_id, session in cart.sessions.items():
        if session_id == before:
            break
        if session["state"] == SessionState.PROCESSING:
            found.append(session_id)
    return found


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _uuid(value: str | None) -> UUID | None:
    try:
        return UUID(value) if value else None
    except ValueError:
        return None
