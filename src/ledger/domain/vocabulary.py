"""The ledger's words for where things stand, defined once.

Everything that names a status (the aggregates, the read models, the HTTP answers, the success
page and its script, metrics labels, the audit report) takes it from here. A new status is
added here first, with the named sets it belongs to; the type checker then shows every place
that must decide what it means.
"""

from __future__ import annotations

from enum import StrEnum


class OrderStatus(StrEnum):
    """What became of a checkout session's payment, in the contract's words."""

    PROCESSING = "processing"  # checkout started, no outcome recorded yet
    AWAITING_PAYMENT = "awaiting_payment"  # completed, a delayed payment not cleared yet
    CONFIRMED = "confirmed"  # paid, order placed, stock taken, cart converted
    PAYMENT_FAILED = "payment_failed"  # the delayed payment failed
    REFUND_PENDING = "refund_pending"  # paid but not fulfillable: refund under way
    REFUNDED = "refunded"  # Stripe reports the refund succeeded
    REFUND_FAILED = "refund_failed"  # Stripe refused or failed the refund for good
    EXPIRED = "expired"  # the session expired unpaid
    # Manual capture: authorized but not fulfillable; the authorization is cancelled, so the
    # customer is never charged and nothing is refunded.
    RELEASED = "released"
    # The merchant's later decisions on a placed order (`Order.refund`, `Order.cancel`); a
    # refund made in Stripe's Dashboard moves a placed order through them too.
    PARTIALLY_REFUNDED = "partially_refunded"  # part of what was captured is refunded
    CANCELLED = "cancelled"  # the rest refunded (or the authorization released)


# An outcome was recorded for a paid session: the payment was taken for good (an order kept or
# a refund owed), and the status shows the order id. No later news about the payment changes
# it. A failed payment is not among them: a payment that clears later still becomes an order.
WITH_ORDER: frozenset[OrderStatus] = frozenset(
    {
        OrderStatus.CONFIRMED,
        OrderStatus.REFUND_PENDING,
        OrderStatus.REFUNDED,
        OrderStatus.REFUND_FAILED,
        OrderStatus.RELEASED,
        OrderStatus.PARTIALLY_REFUNDED,
        OrderStatus.CANCELLED,
    }
)
# News of the checkout session can still change these: only for them is Stripe asked.
IN_FLIGHT: frozenset[OrderStatus] = frozenset(
    {OrderStatus.PROCESSING, OrderStatus.AWAITING_PAYMENT}
)
# Nothing more happens by itself: the success page stops polling. (A pending refund still
# moves on, through the refund worker.)
FINAL: frozenset[OrderStatus] = frozenset(
    {
        OrderStatus.CONFIRMED,
        OrderStatus.PAYMENT_FAILED,
        OrderStatus.REFUNDED,
        OrderStatus.REFUND_FAILED,
        OrderStatus.EXPIRED,
        OrderStatus.RELEASED,
        OrderStatus.PARTIALLY_REFUNDED,
        OrderStatus.CANCELLED,
    }
)


class RestockReason(StrEnum):
    """Why an order's stock went back on hand (`StockReturned`)."""

    PAYMENT_FAILED = "payment_failed"  # its capture was refused: the order is void
    REFUNDED = "refunded"  # the merchant refunded lines and put them back
    CANCELLED = "cancelled"  # the merchant cancelled the order


class RefundStatus(StrEnum):
    """Where a refund stands, in Stripe's words. (Its success is recorded on the order as the
    event `RefundIssued`: an event's name is part of the log and is never renamed.)"""

    PENDING = "pending"  # Stripe took it (Stripe's `pending` and `requires_action`)
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # Stripe's `failed` and `canceled`, or a refusal to make it at all

    @classmethod
    def of(cls, stripe_status: str) -> RefundStatus:
        """Stripe's refund status in the ledger's three words."""
        if stripe_status == "succeeded":
            return cls.SUCCEEDED
        if stripe_status in ("failed", "canceled"):
            return cls.FAILED
        return cls.PENDING


class CartStatus(StrEnum):
    OPEN = "open"
    CHECKING_OUT = "checking_out"  # a session of it may still be paid
    CONVERTED = "converted"  # it became an order


class SessionState(StrEnum):
    """What became of one checkout session started from a cart (the cart's `sessions`)."""

    PROCESSING = "processing"
    AWAITING_PAYMENT = "awaiting_payment"
    PAYMENT_FAILED = "payment_failed"
    EXPIRED = "expired"
    REJECTED = "rejected"  # paid, but it will not become the order: its money goes back
    CONVERTED = "converted"  # it became the order


# Sessions whose payment is still to come.
SESSION_PENDING: frozenset[SessionState] = frozenset(
    {SessionState.PROCESSING, SessionState.AWAITING_PAYMENT}
)
# Sessions a payment may still decide: a payment Stripe reported failed may still clear (the
# customer tried again), and is decided like any other paid session then.
SESSION_PAYABLE: frozenset[SessionState] = SESSION_PENDING | {SessionState.PAYMENT_FAILED}


class HoldEnd(StrEnum):
    """Why stock held for a checkout was released (`LEDGER_STOCK_HOLD`). A hold that became
    an order's stock is not released: it was taken."""

    TIME_UP = "time_up"  # the hold's time ran out and its session was expired at Stripe
    EXPIRED = "expired"  # the session expired at Stripe
    PAYMENT_FAILED = "payment_failed"  # the delayed payment failed
    CHECKED_OUT_AGAIN = "checked_out_again"  # the cart checked out again
    REJECTED = "rejected"  # paid, but not fulfillable (refunded or released)
    CHECKOUT_FAILED = "checkout_failed"  # Stripe never made its session
    ABANDONED = "abandoned"  # the checkout's request gave up waiting: nobody has its session


class CaptureMode(StrEnum):
    """When a card payment is taken (`LEDGER_CAPTURE`)."""

    AUTOMATIC = "automatic"  # when the customer pays
    MANUAL = "manual"  # authorized when the customer pays; captured once the order is placed


class Rejection(StrEnum):
    """Why a paid session cannot become an order (its money goes back)."""

    AMOUNT_MISMATCH = "amount_mismatch"
    CART_ALREADY_CONVERTED = "cart_already_converted"
    OUT_OF_STOCK = "out_of_stock"


# Stripe's own words that the ledger decides on.


# A PaymentIntent's status once its card payment is authorized and waits to be captured.
REQUIRES_CAPTURE = "requires_capture"


class StripeSessionStatus(StrEnum):
    """A Checkout Session's `status` at Stripe."""

    OPEN = "open"
    COMPLETE = "complete"  # the customer finished checkout; the payment may still be clearing
    EXPIRED = "expired"  # no payment can complete any more


# Stripe's statuses of a dispute that is over (won, lost, or an inquiry closed).
DISPUTE_CLOSED: frozenset[str] = frozenset({"won", "lost", "warning_closed"})
