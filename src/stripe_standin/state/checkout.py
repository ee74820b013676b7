"""How a checkout session moves on: paid at once, paid by a card held for the merchant to
capture later, paid by a delayed method that then clears or fails, or expired (by the
customer, by the merchant, or because its `expires_at` passed); and the events each step emits."""

from __future__ import annotations

from typing import Any

from stripe_standin.clock import Clock
from stripe_standin.objects.checkout import customer_details
from stripe_standin.objects.payment import charge, payment_error, payment_intent
from stripe_standin.state.records import Emit, Session
from stripe_standin.state.store import Store
from stripe_standin.vocabulary import AUTHORIZATION_SECONDS, CUSTOMER_EMAIL, OUTCOMES
from stripe_standin.webhooks import RequestRef

# Delayed payment methods (bank debits) cannot be held for capture, so Stripe offers only
# cards on a session with capture_method=manual.
_DELAYED_OUTCOMES = ("pay_later", "async_fail")


class Checkout:
    def __init__(self, store: Store, emit: Emit, clock: Clock) -> None:
        self._store = store
        self._emit = emit
        self._clock = clock

    def session(self, session_id: str) -> Session | None:
        """The session as it is now: expired first if its `expires_at` has passed."""
        session = self._store.session(session_id)
        if session is not None:
            self._expire_if_overdue(session)
        return session

    def expire_overdue(self) -> None:
        """Expire every open session whose `expires_at` has passed, with its event, so that
        the event goes out even if nobody looks at the session again."""
        for session in self._store.all_sessions():
            self._expire_if_overdue(session)

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
        self._expire_if_overdue(session)
        obj = session.obj
        status, pay_status = obj["status"], obj["payment_status"]
        intent = self._store.intent(session.intent) if session.intent else None
        intent_status = intent["status"] if intent else None
        held = session.capture_method == "manual"

        if (
            (outcome in ("pay", "pay_later", "expire") and status != "open")
            or (outcome == "async_succeed" and intent_status != "processing")
            or (outcome == "async_fail" and not (status == "open" or intent_status == "processing"))
        ):
            raise ValueError(
                f"cannot {outcome} checkout session {session_id}: it is {status} / {pay_status}"
                + (f" / payment {intent_status}" if intent_status else "")
            )
        if held and outcome in _DELAYED_OUTCOMES:
            raise ValueError(
                f"cannot {outcome} checkout session {session_id}: its payment is held for "
                "capture (capture_method=manual), which only cards allow"
            )

        if outcome == "expire":
            self._expire(session, ref)
            return
        if intent is None:  # pay, pay_later, or async_fail on an open session
            delayed = outcome != "pay"
            intent = payment_intent(
                amount=int(obj["amount_total"]),
                currency=str(obj["currency"]),
                metadata=dict(session.intent_metadata),
                description=session.intent_description,
                method_type="us_bank_account" if delayed else "card",
                capture_method=session.capture_method,
                created=self._clock.now(),
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
            elif held:
                self._authorize(session, intent)
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
        paid = charge(intent=intent, created=self._clock.now())
        self._store.add_charge(paid, session.id)
        intent.update(
            status="succeeded", amount_received=intent["amount"], latest_charge=paid["id"]
        )
        session.charge = paid["id"]
        session.obj["payment_status"] = "paid"

    def _authorize(self, session: Session, intent: dict[str, Any]) -> None:
        """The card is authorized for the whole amount; the session stays unpaid until the
        merchant captures (see `authorizations`)."""
        now = self._clock.now()
        held = charge(intent=intent, created=now, capture_before=now + AUTHORIZATION_SECONDS)
        self._store.add_charge(held, session.id)
        intent.update(
            status="requires_capture",
            amount_capturable=intent["amount"],
            latest_charge=held["id"],
        )
        self._emit("payment_intent.amount_capturable_updated", intent, session.id, None)

    def _expire(self, session: Session, ref: RequestRef | None) -> None:
        session.obj.update(status="expired", url=None)
        self._emit("checkout.session.expired", session.obj, session.id, ref)

    def _expire_if_overdue(self, session: Session) -> None:
        obj = session.obj
        if obj["status"] == "open" and obj["expires_at"] <= self._clock.now():
            self._expire(session, None)
