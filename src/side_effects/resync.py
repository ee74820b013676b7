"""The resync: what Stripe never told us, asked for. Sessions still processing or awaiting
payment, refunds (the orders' own and the merchant's) still pending and disputes still open
are re-fetched from Stripe and decided exactly as their webhooks would have been, so an event
Stripe never delivered (or gave up on after three days of retries) still settles."""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Protocol
from uuid import UUID

import structlog

from ledger.checkout import Checkout, Outcome
from ledger.disputes import Disputes
from ledger.locks import ConcurrentModification
from ledger.payments import PaymentProviderUnavailable
from ledger.refunds import Refunds
from ledger.storage import StoreUnavailable

# Every log line's `logger` field: kept across the move out of ledger, for searches on it.
log = structlog.get_logger("ledger.resync")

# At most this many of each kind per run, the longest-waiting first: a backlog is worked off
# over several runs rather than in one long burst of Stripe calls.
BATCH_LIMIT = 500


class Unsettled(Protocol):
    """What is still waiting for news from Stripe, unchanged for `older_than` (a read model)."""

    def unsettled_sessions(self, older_than: timedelta, limit: int) -> list[str]: ...
    def unsettled_refunds(self, older_than: timedelta, limit: int) -> list[UUID]: ...
    def pending_merchant_refunds(
        self, older_than: timedelta, limit: int
    ) -> list[tuple[UUID, str]]: ...
    def open_disputes(self, older_than: timedelta, limit: int) -> list[str]: ...


@dataclass
class ResyncReport:
    """Per kind (sessions, refunds, disputes): how many ended in each status; and failures."""

    outcomes: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    failures: int = 0

    def summary(self) -> str:
        parts = [
            f"{kind}: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none")
            for kind, counts in self.outcomes.items()
        ]
        return "; ".join([*parts, f"failures: {self.failures}"])


class Resync:
    """`ledger stripe resync`, and the workers' periodic task of the same name."""

    name = "stripe_resync"

    def __init__(
        self,
        checkout: Checkout,
        refunds: Refunds,
        disputes: Disputes,
        unsettled: Unsettled,
        *,
        older_than: timedelta,
        interval: float,
    ) -> None:
        self.checkout = checkout
        self.refunds = refunds
        self.disputes = disputes
        self.unsettled = unsettled
        self.older_than = older_than
        self.interval = interval

    def run(self) -> None:
        report = self.run_once()
        if any(report.outcomes.values()) or report.failures:
            log.info("resync", summary=report.summary())

    def run_once(self, older_than: timedelta | None = None) -> ResyncReport:
        age = self.older_than if older_than is None else older_than
        report = ResyncReport()
        cause = f"resync:{datetime.now(UTC).isoformat(timespec='seconds')}"
        for session_id in self.unsettled.unsettled_sessions(age, BATCH_LIMIT):
            self._one(
                report, "sessions", partial(self.checkout.fulfill_checkout, session_id, cause)
            )
        for order_id in self.unsettled.unsettled_refunds(age, BATCH_LIMIT):
            self._one(report, "refunds", partial(self._refund, order_id, cause))
        for order_id, refund_id in self.unsettled.pending_merchant_refunds(age, BATCH_LIMIT):
            follow = partial(self.refunds.follow_merchant, order_id, refund_id, cause)
            self._one(report, "merchant_refunds", follow)
        for dispute_id in self.unsettled.open_disputes(age, BATCH_LIMIT):
            self._one(report, "disputes", partial(self.disputes.follow, dispute_id, cause))
        return report

    def _refund(self, order_id: UUID, cause: str) -> Outcome:
        order = self.refunds.ledger.get_order(order_id)
        if order is not None and order.refund_id is not None:
            return self.refunds.follow(order.refund_id, cause)
        # Not asked for yet (its worker may be retrying): asking again is safe, the
        # idempotency key makes it the same refund.
        order = self.refunds.issue(order_id, cause)
        status = "unknown" if order is None else order.status
        return Outcome("" if order is None else order.checkout_session_id, status, order_id)

    @staticmethod
    def _one(report: ResyncReport, kind: str, decide: Callable[[], Outcome]) -> None:
        try:
            outcome = decide()
        except (PaymentProviderUnavailable, StoreUnavailable, ConcurrentModification) as error:
            report.failures += 1
            log.warning("resync_failed", kind=kind, error=str(error))
            return
        report.outcomes[kind][outcome.status] += 1
