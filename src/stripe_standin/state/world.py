"""Everything the stand-in knows and every way it changes, made once and shared by the API,
the pay page and the stand-in's controls: the store, the clock its deadlines are measured by,
and the parts that move sessions and payments on."""

from __future__ import annotations

from dataclasses import dataclass

from stripe_standin.clock import Clock
from stripe_standin.state.authorizations import Authorizations
from stripe_standin.state.checkout import Checkout
from stripe_standin.state.disputes import Disputes
from stripe_standin.state.records import Emit, Session
from stripe_standin.state.refunds import Refunds
from stripe_standin.state.store import Store


@dataclass(frozen=True)
class World:
    clock: Clock
    store: Store
    checkout: Checkout
    authorizations: Authorizations
    refunds: Refunds
    disputes: Disputes

    @classmethod
    def make(cls, clock: Clock, emit: Emit, *, max_sessions: int, max_refunds: int) -> World:
        store = Store(max_sessions=max_sessions, max_refunds=max_refunds)
        return cls(
            clock=clock,
            store=store,
            checkout=Checkout(store, emit, clock),
            authorizations=Authorizations(store, emit, clock),
            refunds=Refunds(store, emit, clock),
            disputes=Disputes(store, emit, clock),
        )

    def session(self, session_id: str) -> Session | None:
        """The session as it is now: expired if its `expires_at` has passed, its card hold
        lapsed if that has run out."""
        session = self.checkout.session(session_id)
        if session is not None and session.intent is not None:
            self.authorizations.intent(session.intent)
        return session

    def meet_deadlines(self) -> None:
        """Expire the open sessions whose `expires_at` has passed and lapse the card holds
        whose seven days have, each with its events, whether or not anyone is looking."""
        self.checkout.expire_overdue()
        self.authorizations.lapse_overdue()
