"""The endpoints of what a paid checkout leads to: charges, refunds and disputes (see `call`
for what every endpoint may assume and return; PaymentIntents are in `intents`)."""

from __future__ import annotations

from typing import Any

from stripe_standin.api.call import Call
from stripe_standin.errors import StripeError, no_such
from stripe_standin.params import (
    as_choice,
    as_int,
    as_metadata,
    as_str,
    check_known,
    expand_list,
    list_object,
    list_page,
    names,
)
from stripe_standin.state.records import Session
from stripe_standin.state.refunds import Refunds
from stripe_standin.state.store import Store
from stripe_standin.vocabulary import REFUND_REASONS

# Parameters real Stripe accepts on these endpoints. Those the stand-in does not model are
# accepted and ignored; anything else is refused like Stripe does ("Received unknown parameter").
_REFUND_CREATE_PARAMS = names(
    """amount charge currency customer expand instructions_email metadata origin
    payment_intent reason refund_application_fee reverse_transfer"""
)
_LIST_PARAMS = names("ending_before expand limit starting_after")
_EXPAND_ONLY = names("expand")


class PaymentEndpoints:
    def __init__(self, store: Store, refunds: Refunds) -> None:
        self._store = store
        self._refunds = refunds

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
