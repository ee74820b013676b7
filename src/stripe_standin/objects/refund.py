"""A refund of a charge."""

from __future__ import annotations

from typing import Any

from stripe_standin.ids import new_id, rand


def refund(
    *,
    charge: dict[str, Any],
    amount: int,
    reason: str | None,
    metadata: dict[str, str],
    status: str,
    created: int,
) -> dict[str, Any]:
    return {
        "id": new_id("re"),
        "object": "refund",
        "amount": amount,
        "balance_transaction": "txn_1" + rand(24),
        "charge": charge["id"],
        "created": created,
        "currency": charge["currency"],
        "customer": None,
        "customer_account": None,
        "destination_details": {
            "card": {
                "reference": None,
                "reference_status": "pending",
                "reference_type": "acquirer_reference_number",
                "type": "refund",
            },
            "type": "card",
        },
        "metadata": metadata,
        "payment_intent": charge["payment_intent"],
        "payment_method": charge["payment_method"],
        "reason": reason,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": status,
        "transfer_reversal": None,
    }
