"""How a checkout session moves on: paid at once, paid by a delayed method that then clears
or fails, or expired; and the events each step emits."""

from __future__ import annotations

import time
from typing import Any

from stripe_standin.objects.checkout import customer_details
from stripe_standin.objects.payment import charge, payment_error, payment_intent
from stripe_standin.state.records import Emit, Session
from stripe_standin.state.store import Store
from stripe_standin.vocabulary import CUSTOMER_EMAIL, OUTCOMES
from stripe_standin.webhooks import RequestRef


class Checkout:
    def __init__(self, store: Store, emit: Emit) -> None:
        self._store = store
        self._emit = emit

    def apply_outcome(
        self,
        session_id: str,
        outcome: str,
        ref: RequestRef | None,
        email: str = CUSTOMER_EMAIL,
    ) -> None:
        """Move the session on as the pay page button `outcome` does, and emit its events;
        `email` is the address the customer typed on the pay page."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
        session = self._store.control_session(session_id)
        obj = session.obj
        status, pay_status = obj["status"], obj["payment_status"]
        intent = self._store.intent(session.intent) if session.intent else None
        intent_status = intent["status"] if intent else None

        if (
            (outcome in ("pay", "pay_later", "expire") and status != "open")
            or (outcome == "async_succeed" and intent_status != "processing")
            or (outcome == "async_fail" and not (status == "open" or intent_status == "processing"))
        ):
            raise ValueError(
                f"cannot {outcome} checkout session {session_id}: it is {status} / {pay_status}"
                + (f" / payment {intent_status}" if intent_status else "")
            )

        if outcome == "expire":
            obj.update(status="expired", url=None)
            self._emit("checkout.session.expired", obj, session_id, ref)
            return
        if intent is None:  # pay, pay_later, or async_fail on an open session
            delayed = outcome != "pay"
            intent = payment_intent(
                amount=int(obj["amount_total"]),
                currency=str(obj["currency"]),
                metadata=dict(session.intent_metadata),
                description=session.intent_description,
                method_type="us_bank_account" if delayed else "card",
                created=int(time.time()),
            )
            self._store.add_intent(intent, session_id)
            obj.update(
                status="complete",
                url=None,
                payment_intent=intent["id"],
                customer_details=customer_details(email),
            )
            if delayed:
                obj["payment_method_types"] = ["card", "us_bank_account"]
            else:
                self._succeed(session, intent)
            self._emit("checkout.session.completed", obj, session_id, ref)
        if outcome == "async_succeed":
            self._succeed(session, intent)
            self._emit("checkout.session.async_payment_succeeded", obj, session_id, ref)
        elif outcome == "async_fail":
            intent.update(
                status="requires_payment_method",
                last_payment_error=payment_error(
                    intent["payment_method"], intent["payment_method_types"][0]
                ),
                payment_method=None,
            )
            self._emit("checkout.session.async_payment_failed", obj, session_id, ref)

    def _succeed(self, session: Session, intent: dict[str, Any]) -> None:
        paid = charge(intent=intent, created=int(time.time()))
        self._store.add_charge(paid, session.id)
        intent.update(
            status="succeeded", amount_received=intent["amount"], latest_charge=paid["id"]
        )
        session.charge = paid["id"]
        session.obj["payment_status"] = "paid"

    def expire_overdue(self) -> None:
        now = time.time()
        for session in self._store.all_sessions():
            if session.obj["status"] == "open" and session.obj["expires_at"] <= now:
                self.apply_outcome(session.id, "expire", None)
