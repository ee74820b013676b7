"""The hold timer: ends each stock hold whose time is up (`LEDGER_STOCK_HOLD`). A hold with a
session ends by expiring that session at Stripe (`Checkout.end_session`), whose answer settles
the race with a customer paying at the last second; a hold Stripe never made a session for is
released at once. The schedule is the log (`projections.holds`), so a restart loses none."""

from __future__ import annotations

import structlog

from ledger.checkout import Checkout
from ledger.domain.vocabulary import HoldEnd
from ledger.locks import ConcurrentModification
from ledger.payments import PaymentProviderUnavailable
from ledger.storage import StoreUnavailable
from projections.holds import DueHold, Holds

log = structlog.get_logger("ledger.holds")

# Holds ended per run, the longest overdue first: a backlog (after an outage) is worked off
# over a few runs rather than in one long burst of Stripe calls.
BATCH_LIMIT = 200


class HoldTimer:
    name = "stock_hold_timer"
    # Seconds between looks: a hold ends at most about this long after its time is up.
    interval = 1.0

    def __init__(self, checkout: Checkout, holds: Holds) -> None:
        self.checkout = checkout
        self.holds = holds

    def run(self) -> None:
        for hold in self.holds.due(BATCH_LIMIT):
            try:
                self.end(hold)
            except (PaymentProviderUnavailable, StoreUnavailable, ConcurrentModification) as error:
                # Still due: tried again on the next run. The hold stands meanwhile, which is
                # the safe side (no customer can be charged for a unit someone else took).
                log.warning("hold_end_failed", hold_id=hold.hold_id, error=str(error))

    def end(self, hold: DueHold, cause: str = "timer:stock_hold") -> None:
        if hold.session_id is None:
            self.checkout.ledger.release_hold(hold.cart_id, hold.hold_id, HoldEnd.TIME_UP, cause)
        else:
            self.checkout.end_session(hold.session_id, HoldEnd.TIME_UP, cause)


__all__ = ["HoldTimer"]
