"""A dispute of a charge: a chargeback, with Stripe's (empty) evidence fields."""

from __future__ import annotations

from typing import Any

from stripe_standin.ids import new_id

_EVIDENCE_FIELDS = (
    "access_activity_log",
    "billing_address",
    "cancellation_policy",
    "cancellation_policy_disclosure",
    "cancellation_rebuttal",
    "customer_communication",
    "customer_email_address",
    "customer_name",
    "customer_purchase_ip",
    "customer_signature",
    "duplicate_charge_documentation",
    "duplicate_charge_explanation",
    "duplicate_charge_id",
    "product_description",
    "receipt",
    "refund_policy",
    "refund_policy_disclosure",
    "refund_refusal_explanation",
    "service_date",
    "service_documentation",
    "shipping_address",
    "shipping_carrier",
    "shipping_date",
    "shipping_documentation",
    "shipping_tracking_number",
    "uncategorized_file",
    "uncategorized_text",
)


def dispute(*, charge: dict[str, Any], reason: str, created: int) -> dict[str, Any]:
    """A chargeback (not an inquiry): the funds are withdrawn and a response is due."""
    method_type = charge["payment_method_details"]["type"]
    method_details: dict[str, Any] = {"type": method_type, method_type: {}}
    if method_type == "card":
        method_details["card"] = {
            "brand": "visa",
            "case_type": "chargeback",
            "network_reason_code": "10.4",
            "network": "visa",
        }
    return {
        "id": new_id("dp"),
        "object": "dispute",
        "amount": charge["amount"],
        "balance_transactions": [],
        "charge": charge["id"],
        "created": created,
        "currency": charge["currency"],
        "enhanced_eligibility_types": [],
        "evidence": {**dict.fromkeys(_EVIDENCE_FIELDS), "enhanced_evidence": {}},
        "evidence_details": {
            "due_by": created + 7 * 24 * 3600,
            "enhanced_eligibility": {},
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": charge["payment_intent"],
        "payment_method_details": method_details,
        "reason": reason,
        "status": "needs_response",
    }
