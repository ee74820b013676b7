"""A checkout session, its line items, and the customer who completed it."""

from __future__ import annotations

from typing import Any

from stripe_standin.ids import rand
from stripe_standin.vocabulary import CUSTOMER_EMAIL


def line_item(
    *, name: str, quantity: int, unit_amount: int, currency: str, metadata: dict[str, str], now: int
) -> dict[str, Any]:
    amount = unit_amount * quantity
    return {
        "id": "li_1" + rand(24),
        "object": "item",
        "adjustable_quantity": None,
        "amount_discount": 0,
        "amount_subtotal": amount,
        "amount_tax": 0,
        "amount_total": amount,
        "currency": currency,
        "description": name,
        "metadata": metadata,
        "price": {
            "id": "price_1" + rand(24),
            "object": "price",
            "active": False,
            "billing_scheme": "per_unit",
            "created": now,
            "currency": currency,
            "custom_unit_amount": None,
            "livemode": False,
            "lookup_key": None,
            "metadata": {},
            "nickname": None,
            "product": "prod_" + rand(14),
            "recurring": None,
            "tax_behavior": "unspecified",
            "tiers_mode": None,
            "transform_quantity": None,
            "type": "one_time",
            "unit_amount": unit_amount,
            "unit_amount_decimal": str(unit_amount),
        },
        "quantity": quantity,
    }


def checkout_session(
    *,
    session_id: str,
    amount: int,
    currency: str,
    metadata: dict[str, str],
    client_reference_id: str | None,
    success_url: str | None,
    cancel_url: str | None,
    created: int,
    expires_at: int,
    url: str,
) -> dict[str, Any]:
    """An open, unpaid checkout.session in payment mode, without `line_items`."""
    return {
        "id": session_id,
        "object": "checkout.session",
        "adaptive_pricing": {"enabled": False},
        "after_expiration": None,
        "allow_promotion_codes": None,
        "amount_subtotal": amount,
        "amount_total": amount,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": None,
        "cancel_url": cancel_url,
        "client_reference_id": client_reference_id,
        "client_secret": None,
        "collected_information": None,
        "consent": None,
        "consent_collection": None,
        "created": created,
        "currency": currency,
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": None,
        "customer_account": None,
        "customer_creation": "if_required",
        "customer_details": None,
        "customer_email": None,
        "discounts": [],
        "expires_at": expires_at,
        "integration_identifier": None,
        "invoice": None,
        "invoice_creation": {
            "enabled": False,
            "invoice_data": {
                "account_tax_ids": None,
                "custom_fields": None,
                "description": None,
                "footer": None,
                "issuer": None,
                "metadata": {},
                "rendering_options": None,
            },
        },
        "livemode": False,
        "locale": None,
        "managed_payments": {"enabled": False},
        "metadata": metadata,
        "mode": "payment",
        "origin_context": None,
        "payment_intent": None,
        "payment_link": None,
        "payment_method_collection": "if_required",
        "payment_method_configuration_details": None,
        "payment_method_options": {},
        "payment_method_types": ["card"],
        "payment_status": "unpaid",
        "permissions": None,
        "phone_number_collection": {"enabled": False},
        "recovered_from": None,
        "saved_payment_method_options": None,
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": "open",
        "submit_type": None,
        "subscription": None,
        "success_url": success_url,
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted_page",
        "url": url,
        "wallet_options": None,
    }


def customer_details(email: str = CUSTOMER_EMAIL) -> dict[str, Any]:
    return {
        "address": None,
        "business_name": None,
        "email": email,
        "individual_name": None,
        "name": None,
        "phone": None,
        "tax_exempt": "none",
        "tax_ids": [],
    }
