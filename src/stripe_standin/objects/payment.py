"""A payment: the PaymentIntent, its error when a delayed payment fails, and its charge
(captured at once, or only authorized until the merchant captures it)."""

from __future__ import annotations

from typing import Any

from stripe_standin.ids import new_id, rand
from stripe_standin.params import list_object


def payment_intent(
    *,
    amount: int,
    currency: str,
    metadata: dict[str, str],
    description: str | None,
    method_type: str,
    capture_method: str,
    created: int,
) -> dict[str, Any]:
    """A PaymentIntent whose payment is under way (`processing`), paid by `method_type`."""
    pi_id = new_id("pi")
    return {
        "id": pi_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": 0,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": None,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": capture_method,
        "client_secret": f"{pi_id}_secret_{rand(25)}",
        "confirmation_method": "automatic",
        "created": created,
        "currency": currency,
        "customer": None,
        "customer_account": None,
        "description": description,
        "excluded_payment_method_types": None,
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "managed_payments": {"enabled": False},
        "metadata": metadata,
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": "pm_1" + rand(24),
        "payment_method_configuration_details": None,
        "payment_method_options": {},
        "payment_method_types": [method_type],
        "processing": None,
        "receipt_email": None,
        "review": None,
        "setup_future_usage": None,
        "shipping": None,
        "source": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "processing",
        "transfer_data": None,
        "transfer_group": None,
    }


def payment_error(payment_method: str | None, method_type: str) -> dict[str, Any]:
    """`last_payment_error` of a PaymentIntent whose (delayed) payment failed."""
    return {
        "code": "payment_intent_payment_attempt_failed",
        "doc_url": "https://stripe.com/docs/error-codes/payment-intent-payment-attempt-failed",
        "message": "The payment failed: the customer's bank declined the debit.",
        "payment_method": {
            "id": payment_method,
            "object": "payment_method",
            "type": method_type,
        },
        "type": "invalid_request_error",
    }


def _method_details(method_type: str, capture_before: int | None) -> dict[str, Any]:
    if method_type == "us_bank_account":
        details: dict[str, Any] = {
            "account_holder_type": "individual",
            "account_type": "checking",
            "bank_name": "STRIPE TEST BANK",
            "fingerprint": rand(16),
            "last4": "6789",
            "routing_number": "110000000",
        }
    else:
        details = {
            "amount_authorized": None,
            "brand": "visa",
            "capture_before": capture_before,
            "checks": {
                "address_line1_check": None,
                "address_postal_code_check": None,
                "cvc_check": "pass",
            },
            "country": "US",
            "exp_month": 12,
            "exp_year": 2034,
            "fingerprint": rand(16),
            "funding": "credit",
            "last4": "4242",
            "network": "visa",
            "three_d_secure": None,
            "wallet": None,
        }
    return {method_type: details, "type": method_type}


def charge(
    *, intent: dict[str, Any], created: int, capture_before: int | None = None
) -> dict[str, Any]:
    """The succeeded charge of `intent`, not refunded yet: captured, or with `capture_before`
    only authorized (Stripe's charge succeeds when the card is authorized; no money has moved,
    so there is no balance transaction until it is captured)."""
    method_type = intent["payment_method_types"][0]
    charge_id = new_id("ch")
    captured = capture_before is None
    return {
        "id": charge_id,
        "object": "charge",
        "amount": intent["amount"],
        "amount_captured": intent["amount"] if captured else 0,
        "amount_refunded": 0,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": "txn_1" + rand(24) if captured else None,
        "billing_details": {
            "address": {
                "city": None,
                "country": None,
                "line1": None,
                "line2": None,
                "postal_code": None,
                "state": None,
            },
            "email": "customer@example.com",
            "name": None,
            "phone": None,
            "tax_id": None,
        },
        "calculated_statement_descriptor": "STRIPE STAND-IN",
        "captured": captured,
        "created": created,
        "currency": intent["currency"],
        "customer": None,
        "description": intent["description"],
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "fraud_details": {},
        "livemode": False,
        "metadata": dict(intent["metadata"]),
        "on_behalf_of": None,
        "outcome": {
            "advice_code": None,
            "network_advice_code": None,
            "network_decline_code": None,
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "seller_message": "Payment complete.",
            "type": "authorized",
        },
        "paid": True,
        "payment_intent": intent["id"],
        "payment_method": intent["payment_method"],
        "payment_method_details": _method_details(method_type, capture_before),
        "receipt_email": None,
        "receipt_number": None,
        "receipt_url": None,
        "refunded": False,
        "refunds": list_object(f"/v1/charges/{charge_id}/refunds", [], False),
        "review": None,
        "shipping": None,
        "source": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "succeeded",
        "transfer_data": None,
        "transfer_group": None,
    }
