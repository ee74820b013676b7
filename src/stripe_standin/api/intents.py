"""The PaymentIntent endpoints: retrieve one, and capture or cancel a card payment held for
capture (see `call` for what every endpoint may assume and return)."""

from __future__ import annotations

from typing import Any

from stripe_standin.api.call import Call
from stripe_standin.errors import no_such
from stripe_standin.params import as_choice, as_int, check_known, expand_list, names
from stripe_standin.state.authorizations import Authorizations
from stripe_standin.state.store import Store
from stripe_standin.state.views import intent_view
from stripe_standin.vocabulary import CANCELLATION_REASONS

# Parameters real Stripe accepts on these endpoints. Those the stand-in does not model are
# accepted and ignored; anything else is refused like Stripe does ("Received unknown parameter").
_CAPTURE_PARAMS = names(
    """amount_to_capture application_fee_amount expand final_capture metadata
    statement_descriptor statement_descriptor_suffix transfer_data"""
)
_CANCEL_PARAMS = names("cancellation_reason expand")
_EXPANDABLE = ["latest_charge"]


class IntentEndpoints:
    def __init__(self, store: Store, authorizations: Authorizations) -> None:
        self._store = store
        self._authorizations = authorizations

    def retrieve(self, call: Call, params: dict[str, Any], path: dict[str, str]) -> dict[str, Any]:
        check_known(params, names("client_secret expand"))
        expand = expand_list(params, _EXPANDABLE)
        return intent_view(self._store, self._intent(path), expand)

    def capture(self, call: Call, params: dict[str, Any], path: dict[str, str]) -> dict[str, Any]:
        check_known(params, _CAPTURE_PARAMS)
        expand = expand_list(params, _EXPANDABLE)
        amount: int | None = None
        if params.get("amount_to_capture") is not None:
            amount = as_int(params["amount_to_capture"], "amount_to_capture", minimum=1)
        intent = self._intent(path)
        self._authorizations.capture(intent, amount, call.ref)
        return intent_view(self._store, intent, expand)

    def cancel(self, call: Call, params: dict[str, Any], path: dict[str, str]) -> dict[str, Any]:
        check_known(params, _CANCEL_PARAMS)
        expand = expand_list(params, _EXPANDABLE)
        reason = params.get("cancellation_reason")
        if reason is not None:
            reason = as_choice(reason, "cancellation_reason", CANCELLATION_REASONS)
        intent = self._intent(path)
        self._authorizations.cancel(intent, reason, call.ref)
        return intent_view(self._store, intent, expand)

    def _intent(self, path: dict[str, str]) -> dict[str, Any]:
        intent = self._authorizations.intent(path["intent_id"])
        if intent is None:
            raise no_such("payment_intent", path["intent_id"], param="intent")
        return intent
