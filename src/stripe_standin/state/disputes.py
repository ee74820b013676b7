"""Disputes of a session's payment: opened by the customer's bank, then won or lost."""

from __future__ import annotations

import copy
from typing import Any

from stripe_standin.clock import Clock
from stripe_standin.objects.dispute import dispute as dispute_object
from stripe_standin.state.records import Emit
from stripe_standin.state.store import Store
from stripe_standin.vocabulary import DISPUTE_OPEN, DISPUTE_REASONS


class Disputes:
    def __init__(self, store: Store, emit: Emit, clock: Clock) -> None:
        self._store = store
        self._emit = emit
        self._clock = clock

    def open(self, session_id: str, reason: str) -> dict[str, Any]:
        session = self._store.control_session(session_id)
        if reason not in DISPUTE_REASONS:
            raise ValueError(f"reason must be one of {DISPUTE_REASONS}, not {reason!r}")
        if session.charge is None:
            raise ValueError(f"checkout session {session_id} has no successful payment to dispute")
        if session.dispute is not None:
            raise ValueError(f"charge {session.charge} is already disputed ({session.dispute})")
        charge = self._store.charge(session.charge)
        assert charge is not None
        dispute = dispute_object(charge=charge, reason=reason, created=self._clock.now())
        self._store.add_dispute(dispute, session_id)
        session.dispute = dispute["id"]
        charge["disputed"] = True
        self._emit("charge.dispute.created", dispute, session_id, None)
        return copy.deepcopy(dispute)

    def close(self, dispute_id: str, outcome: str) -> dict[str, Any]:
        dispute = self._store.dispute(dispute_id)
        if dispute is None:
            raise KeyError(dispute_id)
        if outcome not in ("won", "lost"):
            raise ValueError(f"outcome must be 'won' or 'lost', not {outcome!r}")
        if dispute["status"] not in DISPUTE_OPEN:
            raise ValueError(f"dispute {dispute_id} is already closed ({dispute['status']})")
        # Won: the funds come back and the payment may be refunded again; lost: they stay gone.
        dispute.update(status=outcome, is_charge_refundable=outcome == "won")
        self._emit("charge.dispute.closed", dispute, self._store.owner_of(dispute_id), None)
        return copy.deepcopy(dispute)
