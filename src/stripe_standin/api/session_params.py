"""The parameters of `POST /v1/checkout/sessions` that need more than one helper: the line
items (each with its `price_data`, all in one currency) and `payment_intent_data`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from stripe_standin.errors import StripeError
from stripe_standin.objects.checkout import line_item
from stripe_standin.params import (
    MAX_AMOUNT,
    as_choice,
    as_int,
    as_metadata,
    as_str,
    check_known,
    names,
)
from stripe_standin.vocabulary import CAPTURE_METHODS

MAX_LINE_ITEMS = 100  # Stripe Checkout's limit in payment mode

# Parameters real Stripe accepts here. Those the stand-in does not model are accepted and
# ignored; anything else is refused like Stripe does ("Received unknown parameter").
_PAYMENT_INTENT_DATA_PARAMS = names(
    """application_fee_amount capture_method description metadata on_behalf_of receipt_email
    setup_future_usage shipping statement_descriptor statement_descriptor_suffix
    transfer_data transfer_group"""
)
_LINE_ITEM_PARAMS = names(
    "adjustable_quantity dynamic_tax_rates metadata price price_data quantity tax_rates"
)
_PRICE_DATA_PARAMS = names(
    "currency product product_data recurring tax_behavior unit_amount unit_amount_decimal"
)
_PRODUCT_DATA_PARAMS = names("description images metadata name tax_code")


def line_items(raw_items: Any, now: int) -> list[dict[str, Any]]:
    """The line item objects of `line_items`: at least one, all in one currency, their total
    within Stripe's limit."""
    if not raw_items:
        raise StripeError(
            400,
            "line_items is required in payment mode.",
            param="line_items",
            code="parameter_missing",
        )
    if not isinstance(raw_items, list):
        raise StripeError(400, "Invalid array", param="line_items")
    if len(raw_items) > MAX_LINE_ITEMS:
        raise StripeError(
            400,
            f"A Checkout Session in payment mode can have at most {MAX_LINE_ITEMS} line items.",
            param="line_items",
        )
    currency: str | None = None
    items: list[dict[str, Any]] = []
    for i, raw in enumerate(raw_items):
        item = _line_item(raw, i, now)
        if currency is not None and item["currency"] != currency:
            raise StripeError(
                400,
                "All line items must use the same currency.",
                param=f"line_items[{i}][price_data][currency]",
            )
        currency = item["currency"]
        items.append(item)
    if sum(int(it["amount_subtotal"]) for it in items) > MAX_AMOUNT:
        raise StripeError(
            400, "The total amount is too large.", param="line_items", code="amount_too_large"
        )
    return items


@dataclass(frozen=True)
class IntentData:
    """What `payment_intent_data` says the session's PaymentIntent will be."""

    metadata: dict[str, str]
    description: str | None
    capture_method: str


def payment_intent_data(params: dict[str, Any]) -> IntentData:
    data = params.get("payment_intent_data")
    if data is None or data == "":
        data = {}
    if not isinstance(data, dict):
        raise StripeError(400, "Invalid hash", param="payment_intent_data")
    check_known(data, _PAYMENT_INTENT_DATA_PARAMS, "payment_intent_data")
    metadata = as_metadata(data.get("metadata"), "payment_intent_data[metadata]")
    description = data.get("description")
    if description is not None:
        description = as_str(description, "payment_intent_data[description]", max_len=1000)
    capture_method = "automatic_async"
    if data.get("capture_method") is not None:
        param = "payment_intent_data[capture_method]"
        capture_method = as_choice(data["capture_method"], param, CAPTURE_METHODS)
    return IntentData(metadata, description, capture_method)


def _line_item(raw: Any, i: int, now: int) -> dict[str, Any]:
    base = f"line_items[{i}]"
    if not isinstance(raw, dict):
        raise StripeError(400, "Invalid object", param=base)
    check_known(raw, _LINE_ITEM_PARAMS, base)
    if raw.get("price") is not None:
        raise StripeError(
            400,
            f"No such price: '{raw['price']}' (the Stripe stand-in supports price_data only)",
            param=f"{base}[price]",
            code="resource_missing",
        )
    price_data = raw.get("price_data")
    if not isinstance(price_data, dict):
        raise StripeError(
            400,
            f"Missing required param: {base}[price_data].",
            param=f"{base}[price_data]",
            code="parameter_missing",
        )
    pbase = f"{base}[price_data]"
    check_known(price_data, _PRICE_DATA_PARAMS, pbase)
    if price_data.get("recurring") is not None:
        raise StripeError(
            400,
            "You must provide at least one recurring price in `subscription` mode when using "
            "prices.",
            param=f"{pbase}[recurring]",
        )
    currency = price_data.get("currency")
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Za-z]{3}", currency):
        raise StripeError(400, f"Invalid currency: {currency}", param=f"{pbase}[currency]")
    if price_data.get("unit_amount") is None:
        raise StripeError(
            400,
            f"Missing required param: {pbase}[unit_amount].",
            param=f"{pbase}[unit_amount]",
            code="parameter_missing",
        )
    unit_amount = as_int(price_data["unit_amount"], f"{pbase}[unit_amount]", minimum=0)
    product_data = price_data.get("product_data")
    if not isinstance(product_data, dict):
        raise StripeError(
            400,
            f"You must specify either `product` or `product_data` in {pbase}.",
            param=f"{pbase}[product_data]",
            code="parameter_missing",
        )
    check_known(product_data, _PRODUCT_DATA_PARAMS, f"{pbase}[product_data]")
    name = as_str(product_data.get("name"), f"{pbase}[product_data][name]")
    if not name.strip():
        raise StripeError(
            400, "A product name cannot be empty.", param=f"{pbase}[product_data][name]"
        )
    if raw.get("quantity") is None:
        raise StripeError(
            400,
            f"Quantity is required. Add `quantity` to `{base}`.",
            param=f"{base}[quantity]",
            code="parameter_missing",
        )
    quantity = as_int(raw["quantity"], f"{base}[quantity]", minimum=1, maximum=999_999)
    return line_item(
        name=name,
        quantity=quantity,
        unit_amount=unit_amount,
        currency=currency.lower(),
        metadata=as_metadata(raw.get("metadata"), f"{base}[metadata]"),
        now=now,
    )
