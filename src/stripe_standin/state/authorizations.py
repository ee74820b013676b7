"""Card payments held for capture (`capture_method=manual`): captured by the merchant, whole
or in part, canceled by the merchant, or lapsed when Stripe gives the hold up after seven
days; and the events each step emits."""

from __future__ import annotations

from typing import Any

from stripe_standin.clock import Clock
from stripe_standin.errors import StripeError
from stripe_standin.ids import rand
from stripe_standin.state.records import Emit
from stripe_standin.state.store import Store
from stripe_standin.vocabulary import CANCELABLE_STATUSES, LAPSED
from stripe_standin.webhooks import RequestRef


class Authorizations:
    def __init__(self, store: Store, emit: Emit, clock: Clock) -> None:
        self._store = store
        self._emit = emit
        self._clock = clock

    def capture(self, intent: dict[str, Any], amount: int | None, ref: RequestRef) -> None:
        """Capture `amount` (all that is capturable when None) as `POST .../capture` does;
        the rest of the hold goes back to the customer. Refusals are Stripe's, saved for the
        Idempotency-Key, so a retry learns what the first call did."""
        if intent["status"] != "requires_capture":
            raise StripeError(
                400,
                "This PaymentIntent could not be captured because it has a status of "
                f"{intent['status']}. Only a PaymentIntent with one of the following statuses "
                "may be captured: requires_capture.",
                code="payment_intent_unexpected_state",
                saved=True,
                payment_intent=intent,
            )
        capturable = int(intent["amount_capturable"])
        if amount is None:
            amount = capturable
        elif amount > capturable:
            raise StripeError(
                400,
                "The payment could not be captured because the requested capture amount is "
                "greater than the amount you can capture for this charge.",
                param="amount_to_capture",
                code="amount_too_large",
                saved=True,
            )
        session = self._store.session_owning(intent["id"])
        charge = self._store.charge(intent["latest_charge"])
        assert session is not None and charge is not None
        # What is not captured is released: Stripe counts it as refunded on the charge.
        charge.update(
            captured=True,
            amount_captured=amount,
            amount_refunded=int(charge["amount"]) - amount,
            balance_transaction="txn_1" + rand(24),
        )
        intent.update(status="succeeded", amount_capturable=0, amount_received=amount)
        session.charge = charge["id"]
        session.obj["payment_status"] = "paid"
        self._emit("charge.captured", charge, session.id, ref)
        self._emit("payment_intent.succeeded", intent, session.id, ref)

    def cancel(self, intent: dict[str, Any], reason: str | None, ref: RequestRef) -> None:
        """Cancel as `POST .../cancel` does: a hold is released, nothing is charged."""
        if intent["status"] not in CANCELABLE_STATUSES:
            raise StripeError(
                400,
                "You cannot cancel this PaymentIntent because it has a status of "
                f"{intent['status']}. Only a PaymentIntent with one of the following statuses "
                f"may be canceled: {', '.join(CANCELABLE_STATUSES)}.",
                code="payment_intent_unexpected_state",
                saved=True,
                payment_intent=intent,
            )
        self._cancel(intent, reason, ref)

    def lapse(self, session_id: str) -> None:
        """Stripe gives up the session's uncaptured hold, as it does after seven days."""
        session = self._store.control_session(session_id)
        intent = self._store.intent(session.intent) if session.intent else None
        if intent is None or intent["status"] != "requires_capture":
            status = intent["status"] if intent else "not paid yet"
            raise ValueError(
                f"checkout session {session_id} has no card payment held for capture ({status})"
            )
        self._cancel(intent, LAPSED, None)
        charge = self._store.charge(intent["latest_charge"])
        assert charge is not None
        self._emit("charge.expired", charge, session_id, None)

    def intent(self, intent_id: str) -> dict[str, Any] | None:
        """The PaymentIntent as it is now: lapsed first if its hold has run out."""
        intent = self._store.intent(intent_id)
        if intent is not None:
            self._lapse_if_overdue(intent)
        return intent

    def lapse_overdue(self) -> None:
        """Lapse every hold whose `capture_before` has passed on the stand-in's clock."""
        for session in self._store.all_sessions():
            intent = self._store.intent(session.intent) if session.intent else None
            if intent is not None:
                self._lapse_if_overdue(intent)

    def _lapse_if_overdue(self, intent: dict[str, Any]) -> None:
        if intent["status"] != "requires_capture":
            return
        charge = self._store.charge(intent["latest_charge"])
        assert charge is not None
        if charge["payment_method_details"]["card"]["capture_before"] <= self._clock.now():
            self.lapse(self._store.owner_of(intent["id"]))

    def _cancel(self, intent: dict[str, Any], reason: str | None, ref: RequestRef | None) -> None:
        if intent["status"] == "requires_capture":
            charge = self._store.charge(intent["latest_charge"])
            assert charge is not None
            self._release(charge)
        intent.update(
            status="canceled",
            amount_capturable=0,
            canceled_at=self._clock.now(),
            cancellation_reason=reason,
        )
        self._emit("payment_intent.canceled", intent, self._store.owner_of(intent["id"]), ref)

    @staticmethod
    def _release(charge: dict[str, Any]) -> None:
        # Stripe's docs: the remaining `amount_capturable` "will automatically be refunded".
        charge.update(amount_refunded=charge["amount"], refunded=True)
