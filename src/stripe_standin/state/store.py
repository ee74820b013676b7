"""Where sessions and their payment objects are kept, found, and forgotten.

Memory is bounded by a cap on sessions (and on refunds, which a payment can gather without
limit): past it, the oldest settled session goes, with everything that belongs to it.
"""

from __future__ import annotations

from typing import Any

from stripe_standin.state.records import Refund, Session
from stripe_standin.vocabulary import DISPUTE_OPEN

# A payment in one of these has an outcome to come: a delayed debit, or a card held for capture.
_UNDER_WAY = frozenset({"processing", "requires_capture"})


class Store:
    def __init__(self, *, max_sessions: int, max_refunds: int) -> None:
        self._max_sessions = max_sessions
        self._max_refunds = max_refunds
        self._sessions: dict[str, Session] = {}
        self._intents: dict[str, dict[str, Any]] = {}
        self._charges: dict[str, dict[str, Any]] = {}
        self._refunds: dict[str, Refund] = {}
        self._disputes: dict[str, dict[str, Any]] = {}
        # Every payment object's id → its session's id: one index to keep consistent on eviction.
        self._owner: dict[str, str] = {}

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

    def owner_of(self, object_id: str) -> str:
        """The id of the session a payment object belongs to."""
        return self._owner[object_id]

    def refund_record(self, refund_id: str) -> Refund | None:
        return self._refunds.get(refund_id)

    def dispute(self, dispute_id: str) -> dict[str, Any] | None:
        return self._disputes.get(dispute_id)

    def refunds_newest_first(self, session: Session | None) -> list[dict[str, Any]]:
        """The refunds of one session's payment, or of all payments."""
        ids = session.refunds if session is not None else list(self._refunds)
        return [self._refunds[r].obj for r in reversed(ids)]

    def pending_refunds(self, session: Session) -> list[str]:
        return [r for r in session.refunds if self._refunds[r].obj["status"] == "pending"]

    # Everything, in creation order: the store's own objects, for views to copy.

    def all_sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def all_intents(self) -> list[dict[str, Any]]:
        return list(self._intents.values())

    def all_charges(self) -> list[dict[str, Any]]:
        return list(self._charges.values())

    def all_refunds(self) -> list[Refund]:
        return list(self._refunds.values())

    def all_disputes(self) -> list[dict[str, Any]]:
        return list(self._disputes.values())

    # ------------------------------------------------------------------ additions

    def add_session(self, session: Session) -> None:
        self._sessions[session.id] = session
        self.evict(keep=session.id)

    def add_intent(self, intent: dict[str, Any], session_id: str) -> None:
        self._intents[intent["id"]] = intent
        self._owner[intent["id"]] = session_id

    def add_charge(self, charge: dict[str, Any], session_id: str) -> None:
        self._charges[charge["id"]] = charge
        self._owner[charge["id"]] = session_id

    def add_refund(self, record: Refund) -> None:
        refund_id = record.obj["id"]
        self._refunds[refund_id] = record
        self._owner[refund_id] = record.session_id
        self._sessions[record.session_id].refunds.append(refund_id)

    def add_dispute(self, dispute: dict[str, Any], session_id: str) -> None:
        self._disputes[dispute["id"]] = dispute
        self._owner[dispute["id"]] = session_id

    # ------------------------------------------------------------------ bounds

    def evict(self, keep: str) -> None:
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
            (intent is None or intent["status"] not in _UNDER_WAY)
            and (dispute is None or dispute["status"] not in DISPUTE_OPEN)
            and not self.pending_refunds(session)
        )

    def _forget(self, session: Session) -> None:
        del self._sessions[session.id]
        intent = self._intents.get(session.intent) if session.intent else None
        # A card hold that was never captured has a charge the session does not name.
        held = intent["latest_charge"] if intent else None
        for object_id in (session.intent, session.charge, held, session.dispute, *session.refunds):
            if object_id is not None:
                self._owner.pop(object_id, None)
                self._intents.pop(object_id, None)
                self._charges.pop(object_id, None)
                self._disputes.pop(object_id, None)
                self._refunds.pop(object_id, None)
