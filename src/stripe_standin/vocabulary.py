"""The words the stand-in shares with Stripe: the API version it speaks, the outcomes a
checkout can have, how and how long a card payment is held before it is captured, and the
reasons and statuses of refunds and disputes."""

from __future__ import annotations

API_VERSION = "2026-07-29.dahlia"
# Who pays on the pay page, unless a test says otherwise (`StripeStandIn.complete(email=...)`).
CUSTOMER_EMAIL = "customer@example.com"

# What a customer can do on the pay page (and what may happen to a delayed payment afterwards).
OUTCOMES = ("pay", "pay_later", "async_succeed", "async_fail", "expire")

# `payment_intent_data[capture_method]`; Checkout's PaymentIntents default to the last one.
CAPTURE_METHODS = ("automatic", "manual", "automatic_async")
# Stripe cancels a card authorization left uncaptured this long (the default for online cards).
AUTHORIZATION_SECONDS = 7 * 24 * 3600
# What a merchant may say when canceling a PaymentIntent; Stripe's own lapse says "automatic".
CANCELLATION_REASONS = ("abandoned", "duplicate", "fraudulent", "requested_by_customer")
LAPSED = "automatic"
# The statuses a merchant may cancel from. Stripe adds `processing` "in rare cases"; a bank
# debit under way, the stand-in's one kind of `processing` payment, is not one of them.
CANCELABLE_STATUSES = (
    "requires_payment_method",
    "requires_capture",
    "requires_confirmation",
    "requires_action",
)

REFUND_STATUSES = ("succeeded", "pending")
# Refunds that take money back from the charge: a failed one gave it back.
COUNTED_REFUND_STATUSES = frozenset({"pending", "succeeded"})
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
REFUND_FAILURE_REASONS = (
    "lost_or_stolen_card",
    "expired_or_canceled_card",
    "charge_for_pending_refund_disputed",
    "insufficient_funds",
    "declined",
    "merchant_request",
    "unknown",
)

DISPUTE_REASONS = (
    "bank_cannot_process",
    "check_returned",
    "credit_not_processed",
    "customer_initiated",
    "debit_not_authorized",
    "duplicate",
    "fraudulent",
    "general",
    "incorrect_account_details",
    "insufficient_funds",
    "product_not_received",
    "product_unacceptable",
    "subscription_canceled",
    "unrecognized",
)
# A dispute in one of these blocks refunds: the money was already charged back, or may be.
DISPUTE_BLOCKS_REFUNDS = frozenset(
    {"needs_response", "under_review", "warning_needs_response", "warning_under_review", "lost"}
)
DISPUTE_OPEN = frozenset(
    {"needs_response", "under_review", "warning_needs_response", "warning_under_review"}
)
