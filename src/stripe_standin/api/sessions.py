"""The checkout session endpoints: each validates its parameters as Stripe does and asks the
store (see `call` for what every endpoint may assume and return)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from stripe_standin.api.call import Call
from stripe_standin.api.session_params import line_items, payment_intent_data
from stripe_standin.clock import Clock
from stripe_standin.errors import StripeError, no_such
from stripe_standin.ids import new_id
from stripe_standin.objects.checkout import checkout_session
from stripe_standin.params import (
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
from stripe_standin.state.store import Store
from stripe_standin.state.views import session_view

# Parameters real Stripe accepts on these endpoints. Those the stand-in does not model are
# accepted and ignored; anything else is refused like Stripe does ("Received unknown parameter").
_CREATE_PARAMS = names(
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
_LIST_PARAMS = names("ending_before expand limit starting_after")
_EXPAND_ONLY = names("expand")
_EXPANDABLE = ["line_items", "payment_intent"]


class EndpointSettings(Protocol):
    public_base_url: str  # where the pay pages are, for a session's `url`


class SessionEndpoints:
    def __init__(
        self,
        store: Store,
        checkout: Checkout,
        settings: EndpointSettings,
        clock: Clock,
        on_session: Callable[[], None],
    ) -> None:
        self._store = store
        self._checkout = checkout
        self._settings = settings
        self._clock = clock
        # Sessions expire on the webhook thread's tick: the first session starts it.
        self._on_session = on_session

    def create(self, call: Call, params: dict[str, Any], _path: dict[str, str]) -> dict[str, Any]:
        check_known(params, _CREATE_PARAMS)
        mode = params.get("mode")
        if mode is None:
            raise StripeError(
                400, "Missing required param: mode.", param="mode", code="parameter_missing"
            )
        if mode != "payment":
            raise StripeError(
                400, f"The Stripe stand-in only supports mode=payment, not {mode!r}.", param="mode"
            )
        expand = expand_list(params, _EXPANDABLE)
        now = self._clock.now()
        items = line_items(params.get("line_items"), now)
        intent_data = payment_intent_data(params)
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
            amount=sum(int(it["amount_subtotal"]) for it in items),
            currency=items[0]["currency"],
            metadata=as_metadata(params.get("metadata")),
            client_reference_id=client_reference_id,
            success_url=success_url,
            cancel_url=cancel_url,
            created=now,
            expires_at=expires_at,
            url=f"{self._settings.public_base_url.rstrip('/')}/pay/{session_id}",
        )
        session = Session(
            obj,
            items,
            intent_data.metadata,
            intent_data.description,
            capture_method=intent_data.capture_method,
        )
        self._store.add_session(session)
        self._on_session()
        return session_view(self._store, session, expand=expand)

    def retrieve(self, call: Call, params: dict[str, Any], path: dict[str, str]) -> dict[str, Any]:
        check_known(params, _EXPAND_ONLY)
        expand = expand_list(params, _EXPANDABLE)
        return session_view(self._store, self._session(path["session_id"]), expand=expand)

    def list_line_items(
        self, call: Call, params: dict[str, Any], path: dict[str, str]
    ) -> dict[str, Any]:
        check_known(params, _LIST_PARAMS)
        expand_list(params, [])
        session = self._session(path["session_id"])
        page, has_more = list_page(session.items, params, "line item")
        return list_object(f"/v1/checkout/sessions/{session.id}/line_items", page, has_more)

    def expire(self, call: Call, params: dict[str, Any], path: dict[str, str]) -> dict[str, Any]:
        check_known(params, _EXPAND_ONLY)
        expand = expand_list(params, _EXPANDABLE)
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
        session = self._checkout.session(session_id)
        if session is None:
            raise no_such("checkout.session", session_id, param="session")
        return session
