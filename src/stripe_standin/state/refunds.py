"""Refunds of a session's payment: made through the API or in the Dashboard, held pending,
and settled later (succeeded, or failed even after succeeding, as Stripe's may)."""

from __future__ import annotations

import copy
from typing import Any

from stripe_standin.clock import Clock
from stripe_standin.errors import StripeError
from stripe_standin.ids import rand
from stripe_standin.money import format_amount
from stripe_standin.objects.refund import refund as refund_object
from stripe_standin.params import DEFAULT_PAGE, list_object
from stripe_standin.state.records import Emit, Refund, Session
from stripe_standin.state.store import Store
from stripe_standin.vocabulary import (
    COUNTED_REFUND_STATUSES,
    DISPUTE_BLOCKS_REFUNDS,
    REFUND_FAILURE_REASONS,
    REFUND_STATUSES,
)
from stripe_standin.webhooks import RequestRef


class Refunds:
    def __init__(self, store: Store, emit: Emit, clock: Clock) -> None:
        self._store = store
        self._emit = emit
        self._clock = clock
        self._status = "succeeded"

    @property
    def status(self) -> str:
        """The status of new refunds: "succeeded", or "pending" until `settle`."""
        return self._status

    @status.setter
    def status(self, status: str) -> None:
        if status not in REFUND_STATUSES:
            raise ValueError(f"refund_status must be one of {REFUND_STATUSES}, not {status!r}")
        self._status = status

    def create(
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
        store = self._store
        if session.obj["payment_status"] != "paid" or session.charge is None:
            raise StripeError(
                400,
                f"This PaymentIntent ({session.intent}) does not have a successful charge to "
                "refund.",
                code="payment_intent_unexpected_state",
                saved=True,
            )
        charge = store.charge(session.charge)
        assert charge is not None
        dispute = store.dispute(session.dispute) if session.dispute else None
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
            status="pending" if session.hold_refunds else self._status,
            created=self._clock.now(),
        )
        store.add_refund(Refund(refund, idempotency_key, session.id))
        self._refresh_charge(session)
        self._emit("refund.created", refund, session.id, ref)
        self._emit("charge.refunded", charge, session.id, ref)
        store.evict(keep=session.id)
        return copy.deepcopy(refund)

    def dashboard_refund(self, session_id: str, amount: int | None = None) -> dict[str, Any]:
        """A refund made in Stripe's Dashboard (of all that is left when `amount` is None): no
        metadata, no idempotency key."""
        session = self._store.control_session(session_id)
        try:
            return self.create(
                session, amount=amount, reason=None, metadata={}, idempotency_key=None, ref=None
            )
        except StripeError as refused:
            raise ValueError(refused.message) from refused

    def hold(self, session_id: str, hold: bool) -> None:
        self._store.control_session(session_id).hold_refunds = hold

    def settle(self, refund_id: str, outcome: str, failure_reason: str) -> dict[str, Any]:
        record = self._store.refund_record(refund_id)
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
        session = self._store.control_session(record.session_id)
        self._refresh_charge(session)
        if outcome == "failed":
            self._emit("refund.failed", refund, session.id, None)
        self._emit("refund.updated", refund, session.id, None)
        return copy.deepcopy(refund)

    def _refresh_charge(self, session: Session) -> None:
        """Bring the charge's refund fields in line with its refunds (the one place they
        change, so every view and event of the charge agrees)."""
        assert session.charge is not None
        charge = self._store.charge(session.charge)
        assert charge is not None
        newest_first = self._store.refunds_newest_first(session)
        # What a partial capture left uncaptured counts as refunded, as at Stripe.
        released = int(charge["amount"]) - int(charge["amount_captured"])
        refunded = released + sum(
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
