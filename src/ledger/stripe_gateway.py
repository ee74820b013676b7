"""The payment gateway on Stripe, through the official SDK."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import stripe

from ledger.payments import (
    CheckoutSession,
    CreatedCheckout,
    IssuedRefund,
    NewCheckout,
    PaymentProviderRefused,
    PaymentProviderUnavailable,
)

# A webhook must be answered well within Stripe's budget: every call is short and retried once.
CONNECT_TIMEOUT_SECONDS = 1.0
READ_TIMEOUT_SECONDS = 1.5
NETWORK_RETRIES = 1

_TRANSIENT = (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError)


class StripeGateway:
    def __init__(self, api_key: str, api_base: str | None = None) -> None:
        self.client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else {},
            max_network_retries=NETWORK_RETRIES,
            http_client=stripe.RequestsClient(
                timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS)
            ),
        )

    def create_checkout(self, checkout: NewCheckout) -> CreatedCheckout:
        metadata = {"cart_id": checkout.cart_id}
        if checkout.user_id:
            metadata["user_id"] = checkout.user_id
        params: dict[str, Any] = {
            "mode": "payment",
            "line_items": [
                {
                    "price_data": {
                        "currency": line.currency,
                        "unit_amount": line.unit_amount,
                        "product_data": {"name": line.name},
                    },
                    "quantity": line.quantity,
                }
                for line in checkout.lines
            ],
            "metadata": metadata,
            "client_reference_id": checkout.cart_id,
            "success_url": checkout.success_url,
            "cancel_url": checkout.cancel_url,
        }
        with _translated_errors():
            session = self.client.v1.checkout.sessions.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": checkout.idempotency_key},
            )
        return CreatedCheckout(session_id=session.id, url=session.url or "")

    def retrieve_checkout(self, session_id: str) -> CheckoutSession | None:
        try:
            with _translated_errors():
                # No line items: the decision compares Stripe's amount with the snapshot of
                # what was priced, and parsing them is much of what a retrieve costs in CPU.
                session = self.client.v1.checkout.sessions.retrieve(session_id)
        except PaymentProviderRefused as refusal:
            if isinstance(refusal.__cause__, stripe.InvalidRequestError) and (
                refusal.__cause__.http_status == 404
            ):
                return None
            raise
        metadata = session.metadata.to_dict() if session.metadata else {}
        return CheckoutSession(
            session_id=session.id,
            status=session.status or "open",
            payment_status=session.payment_status,
            amount_total=session.amount_total,
            currency=session.currency,
            payment_intent=_id_of(session.payment_intent),
            cart_id=metadata.get("cart_id") or session.client_reference_id,
        )

    def refund(
        self, payment_intent: str, amount: int, order_id: str, idempotency_key: str
    ) -> IssuedRefund:
        with _translated_errors():
            refund = self.client.v1.refunds.create(
                params={
                    "payment_intent": payment_intent,
                    "amount": amount,
                    "reason": "requested_by_customer",
                    "metadata": {"order_id": order_id},
                },
                options={"idempotency_key": idempotency_key},
            )
        return IssuedRefund(refund_id=refund.id, status=refund.status or "pending")


def _id_of(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return getattr(value, "id", None)


@contextlib.contextmanager
def _translated_errors() -> Iterator[None]:
    """Maps the SDK's errors onto the port's two kinds: retry later, or give up."""
    try:
        yield
    except stripe.StripeError as error:
        if isinstance(error, _TRANSIENT) or (error.http_status or 0) >= 500:
            raise PaymentProviderUnavailable(f"Stripe is unavailable: {error}") from error
        raise PaymentProviderRefused(f"Stripe refused the request: {error}") from error
