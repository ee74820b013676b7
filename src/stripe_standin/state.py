"""What the stand-in knows: checkout sessions and the payment objects they lead to
(PaymentIntents, charges, refunds, disputes), how they change, and the events each change emits.

Nothing here locks: the stand-in calls every method with its one lock held. Lookups the API
makes return None for an unknown id (the API answers 404); control operations raise KeyError
for an unknown id and ValueError for a change the object's state does not allow.

Memory is bounded by a cap on sessions (and on refunds, which a payment can gather without
limit): past it, the oldest settled session goes, with everything that belongs to it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stripe_standin.errors import StripeError
from stripe_standin.ids import rand
from stripe_standin.money import format_amount
from stripe_standin.objects.checkout import customer_details
from stripe_standin.objects.dispute import dispute as dispute_object
from stripe_standin.objects.payment import charge as charge_object
from stripe_standin.objects.payment import payment_error, payment_intent
from stripe_standin.objects.refund import refund as refund_object
from stripe_standin.params import DEFAULT_PAGE, list_object
from stripe_standin.vocabulary import (
    COUNTED_REFUND_STATUSES,
    CUSTOMER_EMAIL,
    DISPUTE_BLOCKS_REFUNDS,
    DISPUTE_OPEN,
    DISPUTE_REASONS,
    OUTCOMES,
    REFUND_FAILURE_REASONS,
    REFUND_STATUSES,
)
from stripe_standin.webhooks import RequestRef

Emit = Callable[[str, dict[str, Any], str | None, RequestRef | None], None]


@dataclass
class Session:
    obj: dict[str, Any]  # the checkout.session object, without line_items
    items: list[dict[str, Any]]  # line item objects
    intent_metadata: dict[str, str]  # payment_intent_data[metadata], for its PaymentIntent
    intent_description: str | None
    charge: str | None = None  # set once the payment succeeded
    refunds: list[str] = field(default_factory=list)  # ids, oldest first
    dispute: str | None = None
    hold_refunds: bool = False  # this payment's new refunds stay pending

    @property
    def id(self) -> str:
        return str(self.obj["id"])

    @property
    def intent(self) -> str | None:
        pi: str | None = self.obj["payment_intent"]
        return pi


@dataclass
class Refund:
    obj: dict[str, Any]
    idempotency_key: str | None
    session_id: str


class Store:
    def __init__(self, emit: Emit, *, max_sessions: int, max_refunds: int) -> None:
        self._emit = emit
        self._max_sessions = max_sessions
        self._max_refunds = max_refunds
        self._refund_status = "succeeded"
        self._sessions: dict[str, Session] = {}
        self._intents: dict[str, dict[str, Any]] = {}
        self._charges: dict[str, dict[str, Any]] = {}
        self._refunds: dict[str, Refund] = {}
        self._disputes: dict[str, dict[str, Any]] = {}
        # Every payment object's id → its session's id: one index to keep consistent on eviction.
        self._owner: dict[str, str] = {}

    @property
    def refund_status(self) -> str:
        """The status of new refunds: "succeeded", or "pending" until `settle_refund`."""
        return self._refund_status

    @refund_status.setter
    def refund_status(self, status: str) -> None:
        if status not in REFUND_STATUSES:
            raise ValueError(f"refund_status must be one of {REFUND_STATUSES}, not {status!r}")
        self._refund_status = status

    # ------------------------------------------------------------------ lookups

    def session(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def session_owning(self, object_id: str) -> Session | None:
        """The session a PaymentIntent, charge, refund or dispute belongs to."""
        owner = self._owner.get(object_id)
        return None if owner is None else self._sessions[owner]

    def control_session(self, session_id: str) -> Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise KeyError(session_id)
        return session

    def intent(self, pi_id: str) -> dict[str, Any] | None:
        return self._intents.get(pi_id)

    def charge(self, charge_id: str) -> dict[str, Any] | None:
        return self._charges.get(charge_id)

    def refund(self, refund_id: str) -> dict[str, Any] | None:
        record = self._refunds.get(refund_id)
        return None if record is None else record.obj

    def dispute(self, dispute_id: str) -> dict[str, Any] | None:
        return self._disputes.get(dispute_id)

    def refunds_newest_first(self, session: Session | None) -> list[dict[str, Any]]:
        """The refunds of one session's payment, or of all payments."""
        ids = session.refunds if session is not None else list(self._refunds)
        return [self._refunds[r].obj for r in reversed(ids)]

    # ------------------------------------------------------------------ views (copies)

    def session_view(
        self, session: Session, *, expand: Sequence[str] = (), expand_all: bool = False
    ) -> dict[str, Any]:
        view = copy.deepcopy(session.obj)
        url = f"/v1/checkout/sessions/{session.id}/line_items"
        if expand_all:
            view["line_items"] = list_object(url, copy.deepcopy(session.items), False)
        elif "line_items" in expand:
            page = copy.deepcopy(session.items[:DEFAULT_PAGE])
            view["line_items"] = list_object(url, page, len(session.items) > DEFAULT_PAGE)
        if "payment_intent" in expand and session.intent is not None:
            view["payment_intent"] = copy.deepcopy(self._intents[session.intent])
        return view

    def intent_view(self, intent: dict[str, Any], expand: Sequence[str] = ()) -> dict[str, Any]:
        view = copy.deepcopy(intent)
        if "latest_charge" in expand and intent["latest_charge"] is not None:
            view["latest_charge"] = copy.deepcopy(self._charges[intent["latest_charge"]])
        return view

    def sessions(self) -> list[dict[str, Any]]:
        return [self.session_view(s, expand_all=True) for s in self._sessions.values()]

    def intents(self) -> list[dict[str, Any]]:
        return copy.deepcopy(list(self._intents.values()))

    def charges(self) -> list[dict[str, Any]]:
        return copy.deepcopy(list(self._charges.values()))

    def refunds(self) -> list[dict[str, Any]]:
        return [
            {**copy.deepcopy(r.obj), "idempotency_key": r.idempotency_key}
            for r in self._refunds.values()
        ]

    def disputes(self) -> list[dict[str, Any]]:
        return copy.deepcopy(list(self._disputes.values()))

    # ------------------------------------------------------------------ checkout

    def add_session(
        self,
        obj: dict[str, Any],
        items: list[dict[str, Any]],
        intent_metadata: dict[str, str],
        intent_description: str | None,
    ) -> Session:
        session = Session(obj, items, intent_metadata, intent_description)
        self._sessions[session.id] = session
        self._evict(keep=session.id)
        return session

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
        session = self.control_session(session_id)
        obj = session.obj
        status, pay_status = obj["status"], obj["payment_status"]
        intent = self._intents[session.intent] if session.intent else None
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
            self._intents[intent["id"]] = intent
            self._owner[intent["id"]] = session_id
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
        charge = charge_object(intent=intent, created=int(time.time()))
        self._charges[charge["id"]] = charge
        self._owner[charge["id"]] = session.id
        intent.update(
            status="succeeded", amount_received=intent["amount"], latest_charge=charge["id"]
        )
        session.charge = charge["id"]
        session.obj["payment_status"] = "paid"

    def expire_overdue(self) -> None:
        now = time.time()
        for session_id, session in self._sessions.items():
            if session.obj["status"] == "open" and session.obj["expires_at"] <= now:
                self.apply_outcome(session_id, "expire", None)

    # ------------------------------------------------------------------ refunds

    def create_refund(
        self,
        session: Session,
        *,
        amount: int | None,
        reason: str | None,
        metadata: dict[str, str],
        idempotency_key: str | None,
        ref: RequestRef | None,
    ) -> dict[str, Any]:
        """Refund `amount` (all that is left when None) of the session's payment, as
        `POST /v1/refunds` does; the refusals are Stripe's, saved for the Idempotency-Key."""
        if session.obj["payment_status"] != "paid" or session.charge is None:
            raise StripeError(
                400,
                f"This PaymentIntent ({session.intent}) does not have a successful charge to "
                "refund.",
                code="payment_intent_unexpected_state",
                saved=True,
            )
        charge = self._charges[session.charge]
        dispute = self._disputes[session.dispute] if session.dispute else None
        if dispute is not None and dispute["status"] in DISPUTE_BLOCKS_REFUNDS:
            raise StripeError(
                400,
                f"Charge {charge['id']} has been charged back; cannot issue a refund.",
                code="charge_disputed",
                saved=True,
            )
        remaining = int(charge["amount"]) - int(charge["amount_refunded"])
        if remaining <= 0:
            raise StripeError(
                400,
                f"Charge {charge['id']} has already been refunded.",
                code="charge_already_refunded",
                saved=True,
            )
        if amount is None:
            amount = remaining
        elif amount > remaining:
            currency = str(charge["currency"])
            raise StripeError(
                400,
                f"Refund amount ({format_amount(amount, currency)}) is greater than "
                f"unrefunded amount on charge ({format_amount(remaining, currency)})",
                param="amount",
                code="charge_already_refunded",
                saved=True,
            )
        refund = refund_object(
            charge=charge,
            amount=amount,
            reason=reason,
            metadata=metadata,
            status="pending" if session.hold_refunds else self._refund_status,
            created=int(time.time()),
        )
        self._refunds[refund["id"]] = Refund(refund, idempotency_key, session.id)
        self._owner[refund["id"]] = session.id
        session.refunds.append(refund["id"])
        self._refresh_charge(session)
        self._emit("refund.created", refund, session.id, ref)
        self._emit("charge.refunded", charge, session.id, ref)
        self._evict(keep=session.id)
        return copy.deepcopy(refund)

    def dashboard_refund(self, session_id: str) -> dict[str, Any]:
        """A full refund made in Stripe's Dashboard: no metadata, no idempotency key."""
        session = self.control_session(session_id)
        try:
            return self.create_refund(
                session, amount=None, reason=None, metadata={}, idempotency_key=None, ref=None
            )
        except StripeError as refused:
            raise ValueError(refused.message) from refused

    def hold_refunds(self, session_id: str, hold: bool) -> None:
        self.control_session(session_id).hold_refunds = hold

    def settle_refund(self, refund_id: str, outcome: str, failure_reason: str) -> dict[str, Any]:
        record = self._refunds.get(refund_id)
        if record is None:
            raise KeyError(refund_id)
        if outcome not in ("succeeded", "failed"):
            raise ValueError(f"outcome must be 'succeeded' or 'failed', not {outcome!r}")
        if failure_reason not in REFUND_FAILURE_REASONS:
            raise ValueError(f"failure_reason must be one of {REFUND_FAILURE_REASONS}")
        refund = record.obj
        # As at Stripe, a refund that succeeded can still fail later (a closed card account).
        settleable = ("pending",) if outcome == "succeeded" else ("pending", "succeeded")
        if refund["status"] not in settleable:
            raise ValueError(f"refund {refund_id} is {refund['status']}: it cannot be {outcome}")
        if outcome == "succeeded":
            refund["status"] = "succeeded"
        else:
            refund.update(
                status="failed",
                failure_reason=failure_reason,
                failure_balance_transaction="txn_1" + rand(24),
            )
        session = self._sessions[record.session_id]
        self._refresh_charge(session)
        if outcome == "failed":
            self._emit("refund.failed", refund, session.id, None)
        self._emit("refund.updated", refund, session.id, None)
        return copy.deepcopy(refund)

    def pending_refunds(self, session: Session) -> list[str]:
        return [r for r in session.refunds if self._refunds[r].obj["status"] == "pending"]

    def _refresh_charge(self, session: Session) -> None:
        """Bring the charge's refund fields in line with its refunds (the one place they
        change, so every view and event of the charge agrees)."""
        assert session.charge is not None
        charge = self._charges[session.charge]
        newest_first = self.refunds_newest_first(session)
        refunded = sum(
            int(r["amount"]) for r in newest_first if r["status"] in COUNTED_REFUND_STATUSES
        )
        charge.update(
            amount_refunded=refunded,
            refunded=refunded >= int(charge["amount"]),
            refunds=list_object(
                f"/v1/charges/{charge['id']}/refunds",
                copy.deepcopy(newest_first[:DEFAULT_PAGE]),
                len(newest_first) > DEFAULT_PAGE,
            ),
        )

    # ------------------------------------------------------------------ disputes

    def open_dispute(self, session_id: str, reason: str) -> dict[str, Any]:
        session = self.control_session(session_id)
        if reason not in DISPUTE_REASONS:
            raise ValueError(f"reason must be one of {DISPUTE_REASONS}, not {reason!r}")
        if session.charge is None:
            raise ValueError(f"checkout session {session_id} has no successful payment to dispute")
        if session.dispute is not None:
            raise ValueError(f"charge {session.charge} is already disputed ({session.dispute})")
        charge = self._charges[session.charge]
        dispute = dispute_object(charge=charge, reason=reason, created=int(time.time()))
        self._disputes[dispute["id"]] = dispute
        self._owner[dispute["id"]] = session_id
        session.dispute = dispute["id"]
        charge["disputed"] = True
        self._emit("charge.dispute.created", dispute, session_id, None)
        return copy.deepcopy(dispute)

    def close_dispute(self, dispute_id: str, outcome: str) -> dict[str, Any]:
        dispute = self._disputes.get(dispute_id)
        if dispute is None:
            raise KeyError(dispute_id)
        if outcome not in ("won", "lost"):
            raise ValueError(f"outcome must be 'won' or 'lost', not {outcome!r}")
        if dispute["status"] not in DISPUTE_OPEN:
            raise ValueError(f"dispute {dispute_id} is already closed ({dispute['status']})")
        # Won: the funds come back and the payment may be refunded again; lost: they stay gone.
        dispute.update(status=outcome, is_charge_refundable=outcome == "won")
        self._emit("charge.dispute.closed", dispute, self._owner[dispute_id], None)
        return copy.deepcopy(dispute)

    # ------------------------------------------------------------------ bounds

    def _evict(self, keep: str) -> None:
        """Forget the oldest settled sessions (never `keep`) while over a cap."""
        while True:
            over_refunds = len(self._refunds) > self._max_refunds
            if not over_refunds and len(self._sessions) <= self._max_sessions:
                return
            victim = self._eviction_candidate(keep, with_refunds=over_refunds)
            if victim is None:
                return
            self._forget(victim)

    def _eviction_candidate(self, keep: str, *, with_refunds: bool) -> Session | None:
        # Prefer one nothing can happen to any more; else the oldest of all, since the cap is
        # what bounds memory and a session that old was abandoned.
        oldest: Session | None = None
        for session in self._sessions.values():
            if session.id == keep or (with_refunds and not session.refunds):
                continue
            if self._settled(session):
                return session
            oldest = oldest or session
        return oldest

    def _settled(self, session: Session) -> bool:
        status = session.obj["status"]
        if status == "expired":
            return True
        if status != "complete":
            return False
        intent = self._intents[session.intent] if session.intent else None
        dispute = self._disputes[session.dispute] if session.dispute else None
        return (
            (intent is None or intent["status"] != "processing")
            and (dispute is None or dispute["status"] not in DISPUTE_OPEN)
            and not self.pending_refunds(session)
        )

    def _forget(self, session: Session) -> None:
        del self._sessions[session.id]
        for object_id in (session.intent, session.charge, session.dispute, *session.refunds):
            if object_id is not None:
                self._owner.pop(object_id, None)
                self._intents.pop(object_id, None)
                self._charges.pop(object_id, None)
                self._disputes.pop(object_id, None)
                self._refunds.pop(object_id, None)
