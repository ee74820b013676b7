"""`ledger audit report`: per currency, what was paid and where it went, and what was authorized
(manual capture) and where that went, from the log; and what needs a person: refunds Stripe
refused (`refund_failed`), captures Stripe refused (`capture_failed`), and sessions still
without an outcome long after they began."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ledger.domain.vocabulary import OrderStatus, RefundStatus
from projections.audit.invariants import Balance, Money, balances
from projections.audit.replay import OrderFacts, Replay


@dataclass
class CurrencyReport:
    balance: Balance
    disputes: int = 0
    disputes_lost: int = 0
    outside_refunds: Money = field(default_factory=Money)


@dataclass
class Report:
    start: datetime | None
    end: datetime | None
    currencies: dict[str, CurrencyReport]
    refund_failed: list[OrderFacts]
    waiting: list[tuple[str, str, datetime]]  # session id, status, since
    waiting_threshold: str
    paid_sessions: int = field(default=0)
    # Orders whose capture Stripe refused for good (the authorization lapsed or was
    # cancelled): the customer was not charged and the stock came back; a person may ask why.
    capture_failed: list[OrderFacts] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "from": None if self.start is None else self.start.isoformat(),
            "to": None if self.end is None else self.end.isoformat(),
            "currencies": {
                currency: {
                    "payments": _money(c.balance.payments),
                    "orders": _money(c.balance.orders),
                    # "issued" is the report's word for a refund that succeeded.
                    "refunds_issued": _money(c.balance.refunds[RefundStatus.SUCCEEDED]),
                    "refunds_pending": _money(c.balance.refunds[RefundStatus.PENDING]),
                    "refunds_failed": _money(c.balance.refunds[RefundStatus.FAILED]),
                    "disputes": c.disputes,
                    "disputes_lost": c.disputes_lost,
                    "outside_refunds": _money(c.outside_refunds),
                    # Manual capture, as Stripe authorized and captured it.
                    "authorizations": _money(c.balance.authorizations),
                    "captured": _money(c.balance.captured),
                    "released": _money(c.balance.released),
                    "awaiting_capture": _money(c.balance.awaiting_capture),
                    "capture_failed": _money(c.balance.capture_failed),
                }
                for currency, c in self.currencies.items()
            },
            OrderStatus.REFUND_FAILED: [
                {
                    "order_id": o.order_id,
                    "checkout_session_id": o.session_id,
                    "amount": o.amount,
                    "currency": o.currency,
                    "code": o.refund_failure,
                }
                for o in self.refund_failed
            ],
            "capture_failed": [
                {
                    "order_id": o.order_id,
                    "checkout_session_id": o.session_id,
                    "amount": o.amount,
                    "currency": o.currency,
                    "code": o.capture_failure,
                }
                for o in self.capture_failed
            ],
            "sessions_without_outcome": {
                "older_than": self.waiting_threshold,
                "sessions": [
                    {"checkout_session_id": sid, "status": status, "since": since.isoformat()}
                    for sid, status, since in self.waiting
                ],
            },
        }


def build_report(
    replay: Replay,
    start: datetime | None,
    end: datetime | None,
    waiting: list[tuple[str, str, datetime]],
    waiting_threshold: str,
) -> Report:
    """The orders whose payment was decided in [start, end) (all, when open-ended)."""
    decided = [o for o in replay.orders.values() if _decided_within(o, start, end)]
    currencies = {c: CurrencyReport(b) for c, b in balances(decided).items()}
    for order in decided:
        report = currencies[order.currency]
        report.disputes += len(order.disputes)
        report.disputes_lost += sum(status == "lost" for status in order.disputes.values())
        for status, amount in order.outside_refunds.values():
            if RefundStatus.of(status) != RefundStatus.FAILED:
                report.outside_refunds = report.outside_refunds + Money(1, amount)
    return Report(
        start=start,
        end=end,
        currencies=currencies,
        refund_failed=[o for o in decided if o.refund == RefundStatus.FAILED],
        waiting=waiting,
        waiting_threshold=waiting_threshold,
        paid_sessions=len(decided),
        capture_failed=[o for o in decided if o.capture_failed],
    )


def _decided_within(order: OrderFacts, start: datetime | None, end: datetime | None) -> bool:
    decisions = order.confirmed + order.rejected
    if not decisions:
        return False
    when = min(at for _, at in decisions)
    return (start is None or when >= start) and (end is None or when < end)


def _money(money: Money) -> dict[str, int]:
    return {"count": money.count, "amount": money.amount}
