"""The payment gateway on Stripe, through the official SDK."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import quote_plus

import stripe

from ledger.domain.vocabulary import RefundStatus
from ledger.payments import (
    Charge,
    CheckoutSession,
    CreatedCheckout,
    Dispute,
    NewCheckout,
    PaymentIntent,
    PaymentProviderRefused,
    PaymentProviderUnavailable,
    Refund,
)
from ledger.stripe_transport import POOL_SIZE, Urllib3Client

T = TypeVar("T")

# A webhook must be answered well within Stripe's budget: every call is short and retried once.
CONNECT_TIMEOUT_SECONDS = 1.0
READ_TIMEOUT_SECONDS = 1.5
NETWORK_RETRIES = 1

_TRANSIENT = (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError)
# Refusals that only say "not now": another request with the same idempotency key is under way
# (a worker and a request making the same refund), or an object was locked.
_BUSY_CODES = frozenset({"idempotency_key_in_use", "lock_timeout"})


class StripeGateway:
    def __init__(
        self, api_key: str, api_base: str | None = None, connections: int = POOL_SIZE
    ) -> None:
        """`connections`: how many are kept alive between calls (as many as the threads that
        call Stripe at once)."""
        self.transport = Urllib3Client(
            api_base or stripe.DEFAULT_API_BASE,
            CONNECT_TIMEOUT_SECONDS,
            READ_TIMEOUT_SECONDS,
            connections,
        )
        self.client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else {},
            max_network_retries=NETWORK_RETRIES,
            http_client=self.transport,
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
            # So that the payment in Stripe's Dashboard names its cart.
            "payment_intent_data": {"metadata": {"cart_id": checkout.cart_id}},
            "client_reference_id": checkout.cart_id,
            "success_url": checkout.success_url,
            "cancel_url": checkout.cancel_url,
        }
        if checkout.expires_at is not None:
            params["expires_at"] = checkout.expires_at
        if checkout.capture_manually:
            params["payment_intent_data"]["capture_method"] = "manual"
        with _translated_errors():
            session = self.client.v1.checkout.sessions.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": checkout.idempotency_key},
            )
        return CreatedCheckout(session_id=session.id, url=session.url or "")

    def retrieve_checkout(self, session_id: str) -> CheckoutSession | None:
        # No line items: the decision compares Stripe's amount with the snapshot of what was
        # priced. And no StripeObject tree: the SDK's raw request (same client, retries, errors
        # and telemetry) hands back the parsed JSON, and the decision reads a few fields of it;
        # building the typed object cost more CPU than the rest of the fetch.
        session = self._retrieve(self._get_json, f"/v1/checkout/sessions/{quote_plus(session_id)}")
        return None if session is None else self._checkout_session(session)

    def _get_json(self, path: str) -> dict[str, Any]:
        data: dict[str, Any] = self.client.raw_request("get", path).data
        return data

    def expire_checkout(self, session_id: str) -> CheckoutSession | None:
        try:
            with _translated_errors():
                session = self.client.v1.checkout.sessions.expire(session_id)
        except PaymentProviderRefused as refusal:
            if refusal.code == "resource_missing":
                return None
            raise
        return self._checkout_session(session.to_dict())

    def capture(self, payment_intent: str, idempotency_key: str) -> PaymentIntent:
        with _translated_errors():
            intent = self.client.v1.payment_intents.capture(
                payment_intent, options={"idempotency_key": idempotency_key}
            )
        return _payment_intent(intent)

    def cancel_authorization(self, payment_intent: str, idempotency_key: str) -> PaymentIntent:
        with _translated_errors():
            intent = self.client.v1.payment_intents.cancel(
                payment_intent, options={"idempotency_key": idempotency_key}
            )
        return _payment_intent(intent)

    def retrieve_payment_intent(self, payment_intent: str) -> PaymentIntent | None:
        intent = self._retrieve(self.client.v1.payment_intents.retrieve, payment_intent)
        return None if intent is None else _payment_intent(intent)

    def _checkout_session(self, session: Mapping[str, Any]) -> CheckoutSession:
        """From the session's JSON (a dict), as Stripe's API sends it."""
        metadata = session.get("metadata") or {}
        payment_intent = _id_of(session.get("payment_intent"))
        status = session.get("status")
        payment_status: str = session["payment_status"]
        intent_status = None
        if status == "complete" and payment_status == "unpaid" and payment_intent:
            # A delayed payment, or one authorized for manual capture: its fate is the
            # PaymentIntent's status, asked for only here (a paid session, the common case,
            # needs no second call).
            intent = self._retrieve(self.client.v1.payment_intents.retrieve, payment_intent)
            intent_status = None if intent is None else intent.status
        details = session.get("customer_details")
        return CheckoutSession(
            session_id=session["id"],
            status=status or "open",
            payment_status=payment_status,
            amount_total=session.get("amount_total"),
            currency=session.get("currency"),
            payment_intent=payment_intent,
            payment_intent_status=intent_status,
            cart_id=metadata.get("cart_id") or session.get("client_reference_id"),
            customer_email=details.get("email") if details else None,
        )

    def refund(
        self,
        payment_intent: str,
        order_id: str,
        idempotency_key: str,
        *,
        amount: int | None = None,
        refund_ref: str | None = None,
    ) -> Refund:
        params: dict[str, Any] = {
            "payment_intent": payment_intent,
            "reason": "requested_by_customer",
            "metadata": {"order_id": order_id},
        }
        if amount is not None:
            params["amount"] = amount
        if refund_ref is not None:
            params["metadata"]["refund_id"] = refund_ref
        with _translated_errors():
            refund = self.client.v1.refunds.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            )
        return _refund(refund)

    def retrieve_refund(self, refund_id: str) -> Refund | None:
        refund = self._retrieve(self.client.v1.refunds.retrieve, refund_id)
        return None if refund is None else _refund(refund)

    def refunds_of(self, payment_intent: str) -> list[Refund]:
        with _translated_errors(fetching=True):
            page = self.client.v1.refunds.list(
                params={"payment_intent": payment_intent, "limit": 100}
            )
        return [_refund(r) for r in page.data]

    def retrieve_charge(self, charge_id: str) -> Charge | None:
        charge = self._retrieve(self.client.v1.charges.retrieve, charge_id)
        if charge is None:
            return None
        return Charge(charge_id=charge.id, payment_intent=_id_of(charge.payment_intent))

    def retrieve_dispute(self, dispute_id: str) -> Dispute | None:
        dispute = self._retrieve(self.client.v1.disputes.retrieve, dispute_id)
        if dispute is None:
            return None
        return Dispute(
            dispute_id=dispute.id,
            status=dispute.status,
            amount=dispute.amount,
            currency=dispute.currency,
            reason=dispute.reason,
            payment_intent=_id_of(dispute.payment_intent),
        )

    @staticmethod
    def _retrieve(fetch: Callable[[str], T], object_id: str) -> T | None:
        """The object, or None when Stripe has no such object: the only permanent answer.
        Any other failure (a rejected or restricted key included) is worth retrying."""
        try:
            with _translated_errors(fetching=True):
                return fetch(object_id)
        except PaymentProviderRefused as refusal:
            if refusal.code == "resource_missing":
                return None
            raise PaymentProviderUnavailable(str(refusal)) from refusal


def _payment_intent(intent: Any) -> PaymentIntent:
    return PaymentIntent(
        payment_intent=intent.id,
        status=intent.status,
        amount=intent.amount,
        amount_received=intent.amount_received or 0,
        currency=intent.currency,
    )


def _refund(refund: Any) -> Refund:
    metadata = refund.metadata.to_dict() if refund.metadata else {}
    return Refund(
        refund_id=refund.id,
        status=refund.status or RefundStatus.PENDING,
        amount=refund.amount,
        currency=refund.currency,
        payment_intent=_id_of(refund.payment_intent),
        order_id=metadata.get("order_id"),
        failure_reason=getattr(refund, "failure_reason", None),
        refund_ref=metadata.get("refund_id"),
    )


def _id_of(value: object) -> str | None:
    """The id of a field that is an id, or an expanded object (a StripeObject or JSON)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        found = value.get("id")
        return found if isinstance(found, str) else None
    return getattr(value, "id", None)


@contextlib.contextmanager
def _translated_errors(*, fetching: bool = False) -> Iterator[None]:
    """Maps the SDK's errors onto the port's two kinds: retry later, or given up for good.

    A rejected or restricted key is a retry: a person fixes the configuration, and the
    payment it was about must not be lost meanwhile. Reading, only "no such object" is
    permanent (it arrives as a refusal with code `resource_missing`).
    """
    try:
        yield
    except stripe.StripeError as error:
        status = error.http_status or 0
        code = error.code or ("resource_missing" if status == 404 else None)
        if (
            isinstance(error, _TRANSIENT)
            or code in _BUSY_CODES
            or status >= 500
            or status in (401, 403)
            or (fetching and code != "resource_missing")
        ):
            raise PaymentProviderUnavailable(f"Stripe is unavailable: {error}") from error
        raise PaymentProviderRefused(f"Stripe refused the request: {error}", code) from error
