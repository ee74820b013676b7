"""The /v1 endpoints: each validates its parameters as Stripe does and asks the store.

Every handler runs with the stand-in's lock held and either returns the answer's JSON object
or raises :class:`StripeError`. An answer may be the store's own object, not a copy: the API
serialises it before it lets go of the lock, and a copy per retrieve would cost CPU for nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from stripe_standin.errors import StripeError, no_such
from stripe_standin.ids import new_id
from stripe_standin.objects.checkout import checkout_session, line_item
from stripe_standin.params import (
    MAX_AMOUNT,
    as_choice,
    as_int,
    as_metadata,
    as_str,
    as_url,
    check_known,
    expand_list,
    list_object,
    list_page,
    names,
)
from stripe_standin.state.checkout import Checkout
from stripe_standin.state.records import Session
from stripe_standin.state.refunds import Refunds
from stripe_standin.state.store import Store
from stripe_standin.state.views import intent_view, session_view
from stripe_standin.vocabulary import REFUND_REASONS
from stripe_standin.webhooks import RequestRef

MAX_LINE_ITEMS = 100  # Stripe Checkout's limit in payment mode

# Parameters real Stripe accepts on these endpoints. Those the stand-in does not model are
# accepted and ignored; anything else is refused like Stripe does ("Received unknown parameter").
_SESSION_CREATE_PARAMS = names(
    """adaptive_pricing after_expiration allow_promotion_codes automatic_tax
    billing_address_collection branding_settings cancel_url client_reference_id
    consent_collection currency custom_fields custom_text customer customer_account
    customer_creation customer_email customer_update discounts excluded_payment_method_types
    expand expires_at invoice_creation line_items locale metadata mode name_collection
    optional_items origin_context payment_intent_data payment_method_collection
    payment_method_configuration payment_method_data payment_method_options
    payment_method_types permissions phone_number_collection redirect_on_completion
    return_url saved_payment_method_options setup_intent_data shipping_address_collection
    shipping_options submit_type subscription_data success_url tax_id_collection ui_mode
    wallet_options"""
)
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
_REFUND_CREATE_PARAMS = names(
    """amount charge currency customer expand instructions_email metadata origin
    payment_intent reason refund_application_fee reverse_transfer"""
)
_LIST_PARAMS = names("ending_before expand limit starting_after")
_EXPAND_ONLY = names("expand")


@dataclass(frozen=True)
class Call:
    """One API request, as far as a handler needs it."""

    request_id: str
    idempotency_key: str | None

    @property
    def ref(self) -> RequestRef:
        return RequestRef(self.request_id, self.idempotency_key)


Handler = Callable[[Call, dict[str, Any], dict[str, str]], dict[str, Any]]


class EndpointSettings(Protocol):
    public_base_url: str  # where the pay pages are, for a session's `url`


class Endpoints:
    def __init__(
        self,
        store: Store,
        checkout: Checkout,
        refunds: Refunds,
        settings: EndpointSettings,
        on_session: Callable[[], None],
    ) -> None:
        self._store = store
        self._checkout = checkout
        self._refunds = refunds
        self._settings = settings
        # Sessions expire on the webhook thread's tick: the first session starts it.
        self._on_session = on_session

    # ------------------------------------------------------------------ checkout sessions

    def create_session(
        self, call: Call, params: dict[str, Any], _path: dict[str, str]
    ) -> dict[str, Any]:
        check_known(params, _SESSION_CREATE_PARAMS)
        mode = params.get("mode")
        if mode is None:
            raise StripeError(
                400, "Missing required param: mode.", param="mode", code="parameter_missing"
            )
        if mode != "payment":
            raise StripeError(
                400, f"The Stripe stand-in only supports mode=payment, not {mode!r}.", param="mode"
            )
        expand = expand_list(params, ["line_items", "payment_intent"])
        raw_items = params.get("line_items")
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
        now = int(time.time())
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
        assert currency is not None
        subtotal = sum(int(it["amount_subtotal"]) for it in items)
        if subtotal > MAX_AMOUNT:
            raise StripeError(
                400, "The total amount is too large.", param="line_items", code="amount_too_large"
            )
        intent_metadata, intent_description = _payment_intent_data(params)
        client_reference_id = params.get("client_reference_id")
        if client_reference_id is not None:
            client_reference_id = as_str(client_reference_id, "client_reference_id", max_len=200)
        success_url = params.get("success_url")
        if success_url is not None:
            success_url = as_url(success_url, "success_url")
        cancel_url = params.get("cancel_url")
        if cancel_url is not None:
            cancel_url = as_url(cancel_url, "cancel_url")
        expires_at = now + 24 * 3600
        if params.get("expires_at") is not None:
            expires_at = as_int(params["expires_at"], "expires_at", minimum=0, maximum=2**40)
            if not now + 30 * 60 - 5 <= expires_at <= now + 24 * 3600 + 5:
                raise StripeError(
                    400,
                    "The `expires_at` timestamp must be between 30 minutes and 24 hours from now.",
                    param="expires_at",
                )
        session_id = new_id("cs")
        obj = checkout_session(
            session_id=session_id,
            amount=subtotal,
            currency=currency,
            metadata=as_metadata(params.get("metadata")),
            client_reference_id=client_reference_id,
            success_url=success_url,
            cancel_url=cancel_url,
            created=now,
            expires_at=expires_at,
            url=f"{self._settings.public_base_url.rstrip('/')}/pay/{session_id}",
        )
        session = Session(obj, items, intent_metadata, intent_description)
        self._store.add_session(session)
        self._on_session()
        return session_view(self._store, session, expand=expand)

    def retrieve_session(
        self, call: Call, params: dict[str, Any], path: dict[str, str]
    ) -> dict[str, Any]:
        check_known(params, _EXPAND_ONLY)
        expand = expand_list(params, ["line_items", "payment_intent"])
        return session_view(self._store, self._session(path["session_id"]), expand=expand)

    def list_line_items(
        self, call: Call, params: dict[str, Any], path: dict[str, str]
    ) -> dict[str, Any]:
        check_known(params, _LIST_PARAMS)
        expand_list(params, [])
        session = self._session(path["session_id"])
        page, has_more = list_page(session.items, params, "line item")
        return list_object(f"/v1/checkout/sessions/{session.id}/line_items", page, has_more)

    def expire_session(
        self, call: Call, params: dict[str, Any], path: dict[str, str]
    ) -> dict[str, Any]:
        check_known(params, _EXPAND_ONLY)
        expand = expand_list(params, ["line_items", "payment_intent"])
        session = self._session(path["session_id"])
        if session.obj["status"] != "open":
            raise StripeError(
                400,
                'Only Checkout Sessions with a status in ["open"] can be expired.',
                saved=True,
            )
        self._checkout.apply_outcome(session.id, "expire", call.ref)
        return session_view(self._store, session, expand=expand)

    def _session(self, session_id: str) -> Session:
        session = self._store.session(session_id)
        if session is None:
            raise no_such("checkout.session", session_id, param="session")
        return session

    # ------------------------------------------------------------------ payment objects

    def retrieve_payment_intent(
        self, call: Call, params: dict[str, Any], path: dict[str, str]
    ) -> dict[str, Any]:
        check_known(params, names("client_secret expand"))
        expand = expand_list(params, ["latest_charge"])
        intent = self._store.intent(path["intent_id"])
        if intent is None:
            raise no_such("payment_intent", path["intent_id"], param="intent")
        return intent_view(self._store, intent, expand)

    def retrieve_charge(
        self, call: Call, params: dict[str, Any], path: dict[str, str]
    ) -> dict[str, Any]:
        check_known(params, _EXPAND_ONLY)
        expand_list(params, [])
        charge = self._store.charge(path["charge_id"])
        if charge is None:
            raise no_such("charge", path["charge_id"], param="charge")
        return charge

    def retrieve_dispute(
        self, call: Call, params: dict[str, Any], path: dict[str, str]
    ) -> dict[str, Any]:
        check_known(params, _EXPAND_ONLY)
        expand_list(params, [])
        dispute = self._store.dispute(path["dispute_id"])
        if dispute is None:
            raise no_such("dispute", path["dispute_id"], param="dispute")
        return dispute

    # ------------------------------------------------------------------ refunds

    def create_refund(
        self, call: Call, params: dict[str, Any], _path: dict[str, str]
    ) -> dict[str, Any]:
        check_known(params, _REFUND_CREATE_PARAMS)
        expand_list(params, [])
        if params.get("payment_intent") is None and params.get("charge") is None:
            raise StripeError(
                400,
                "One of the following params should be provided for this request: "
                "payment_intent or charge.",
                code="parameter_missing",
            )
        if params.get("payment_intent") is not None and params.get("charge") is not None:
            raise StripeError(400, "Provide only one of payment_intent or charge.", param="charge")
        session = self._payment_of(params)
        amount: int | None = None
        if params.get("amount") is not None:
            amount = as_int(params["amount"], "amount", minimum=1)
        reason = params.get("reason")
        if reason is not None:
            reason = as_choice(reason, "reason", REFUND_REASONS)
        return self._refunds.create(
            session,
            amount=amount,
            reason=reason,
            metadata=as_metadata(params.get("metadata")),
            idempotency_key=call.idempotency_key,
            ref=call.ref,
        )

    def retrieve_refund(
        self, call: Call, params: dict[str, Any], path: dict[str, str]
    ) -> dict[str, Any]:
        check_known(params, _EXPAND_ONLY)
        expand_list(params, [])
        refund = self._store.refund(path["refund_id"])
        if refund is None:
            raise no_such("refund", path["refund_id"])
        return refund

    def list_refunds(
        self, call: Call, params: dict[str, Any], _path: dict[str, str]
    ) -> dict[str, Any]:
        check_known(params, _LIST_PARAMS | {"charge", "payment_intent"})
        expand_list(params, [])
        filtered = params.get("payment_intent") is not None or params.get("charge") is not None
        session = self._payment_of(params) if filtered else None
        refunds = self._store.refunds_newest_first(session)
        page, has_more = list_page(refunds, params, "refund")
        return list_object("/v1/refunds", page, has_more)

    def _payment_of(self, params: dict[str, Any]) -> Session:
        """The session whose payment `payment_intent` (else `charge`) names."""
        param = "payment_intent" if params.get("payment_intent") is not None else "charge"
        object_id = as_str(params[param], param)
        session = self._store.session_owning(object_id)
        if session is None or object_id != (
            session.intent if param == "payment_intent" else session.charge
        ):
            raise no_such(param, object_id, param=param)
        return session

    # ------------------------------------------------------------------ the rest

    def unknown_url(
        self, call: Call, params: dict[str, Any], path: dict[str, str]
    ) -> dict[str, Any]:
        raise StripeError(
            404,
            f"Unrecognized request URL (/v1/{path.get('rest', '')}). The Stripe stand-in "
            "serves Checkout Sessions, PaymentIntents, Charges, Refunds and Disputes only.",
        )


def _payment_intent_data(params: dict[str, Any]) -> tuple[dict[str, str], str | None]:
    """`payment_intent_data`'s metadata and description, for the session's PaymentIntent."""
    data = params.get("payment_intent_data")
    if data is None or data == "":
        return {}, None
    if not isinstance(data, dict):
        raise StripeError(400, "Invalid hash", param="payment_intent_data")
    check_known(data, _PAYMENT_INTENT_DATA_PARAMS, "payment_intent_data")
    metadata = as_metadata(data.get("metadata"), "payment_intent_data[metadata]")
    description = data.get("description")
    if description is not None:
        description = as_str(description, "payment_intent_data[description]", max_len=1000)
    return metadata, description


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
