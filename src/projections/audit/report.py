"""`ledger audit report`: per currency, what was paid and where it went, and what was authorized
(manual capture) and where that went, from the log; what the merchant gave back after the sale
(refunds by reason, cancellations); and what needs a person: refunds Stripe refused
(`refund_failed`), the merchant's refunds Stripe refused or failed, captures Stripe refused
(`capture_failed`), and sessions still without an outcome long after they began."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ledger.domain.vocabulary import OrderStatus, RefundStatus
from projections.audit.facts import MerchantRefundFacts, OrderFacts
from projections.audit.invariants import Balance, Money, balances
from projections.audit.replay import Replay

# The bucket of the merchant's refunds given no reason (or a blank one).
UNSPECIFIED = "unspecified"


@dataclass
class RefundsByStatus:
    """Refunds, all of them and as they stand now (Stripe's last word on each)."""

    total: Money = field(default_factory=Money)
    by_status: dict[RefundStatus, Money] = field(
        default_factory=lambda: {state: Money() for state in RefundStatus}
    )

    def add(self, amount: int, status: RefundStatus) -> None:
        self.total = self.total + Money(1, amount)
        self.by_status[status] = self.by_status[status] + Money(1, amount)


@dataclass
class CurrencyReport:
    balance: Balance
    disputes: int = 0
    disputes_lost: int = 0
    outside_refunds: Money = field(default_factory=Money)
    # After the sale. The merchant's refunds are money back from orders that stay counted as
    # orders above (like outside refunds): figures of their own, not a side of the balance.
    merchant_refunds: RefundsByStatus = field(default_factory=RefundsByStatus)
    refund_reasons: dict[str, RefundsByStatus] = field(default_factory=dict)
    cancellations: int = 0
    cancellations_released: int = 0  # an authorization released instead of a refund

    def add_merchant_refund(self, refund: MerchantRefundFacts) -> None:
        self.merchant_refunds.add(refund.amount, refund.status)
        reason = (refund.reason or "").strip() or UNSPECIFIED
        self.refund_reasons.setdefault(reason, RefundsByStatus()).add(refund.amount, refund.status)


@dataclass(frozen=True)
class FailedMerchantRefund:
    """A merchant's refund that Stripe failed, or refused to make at all: a person must act."""

    order: OrderFacts
    refund: MerchantRefundFacts


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
    merchant_refunds_failed: list[FailedMerchantRefund] = field(default_factory=list)

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
                    # After the sale: the merchant's refunds (as they stand now, and by the
                    # merchant's reason) and cancellations.
                    "merchant_refunds": _refunds(c.merchant_refunds),
                    "merchant_refunds_by_reason": {
                        reason: _refunds(refunds)
                        for reason, refunds in sorted(c.refund_reasons.items())
                    },
                    "cancellations": {
                        "count": c.cancellations,
                        "released": c.cancellations_released,
                    },
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
            "merchant_refunds_failed": [
                {
                    "order_id": f.order.order_id,
                    "checkout_session_id": f.order.session_id,
                    "refund_id": f.refund.refund_id,
                    "amount": f.refund.amount,
                    "currency": f.refund.currency,
                    "code": f.refund.code,
                }
                for f in self.merchant_refunds_failed
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
    failed: list[FailedMerchantRefund] = []
    for order in decided:
        report = currencies.setdefault(order.currency, CurrencyReport(Balance()))
        report.disputes += len(order.disputes)
        report.disputes_lost += sum(status == "lost" for status in order.disputes.values())
        for status, amount in order.outside_refunds.values():
            if RefundStatus.of(status) != RefundStatus.FAILED:
                report.outside_refunds = report.outside_refunds + Money(1, amount)
        for refund in order.merchant_refunds.values():
            # In the refund's own currency (the order's, unless the log says otherwise).
            currencies.setdefault(refund.currency, CurrencyReport(Balance()))
            currencies[refund.currency].add_merchant_refund(refund)
            if refund.status == RefundStatus.FAILED:
                failed.append(FailedMerchantRefund(order, refund))
        report.cancellations += len(order.cancellations)
        report.cancellations_released += sum(c.release for c in order.cancellations)
    return Report(
        start=start,
        end=end,
        currencies=currencies,
        refund_failed=[o for o in decided if o.refund == RefundStatus.FAILED],
        waiting=waiting,
        waiting_threshold=waiting_threshold,
        paid_sessions=len(decided),
        capture_failed=[o for o in decided if o.capture_failed],
        merchant_refunds_failed=failed,
    )


def _decided_within(order: OrderFacts, start: datetime | None, end: datetime | None) -> bool:
    decisions = order.confirmed + order.rejected
    if not decisions:
        return False
    when = min(at for _, at in decisions)
    return (start is None or when >= start) and (end is None or when < end)


def _money(money: Money) -> dict[str, int]:
    return {"count": money.count, "amount": money.amount}


def _refunds(refunds: RefundsByStatus) -> dict[str, int | dict[str, int]]:
    """`{"count", "amount", "succeeded", "pending", "failed"}`, each status a count/amount."""
    return {
        **_money(refunds.total),
        **{str(state): _money(money) for state, money in refunds.by_status.items()},
    }
