"""What has been given back of a placed order's payment and lines, and the rules that keep it
within what was taken: the order's refund book.

The merchant refunds lines (at their unit price, putting them back on hand or not) or an
amount, or cancels the order (the rest). Refunds made in Stripe's Dashboard count too: money
back is money back, whoever asked. A refund that failed at Stripe gives its amount back to what
remains, so the merchant can try again; its lines stay refunded, because the stock they put
back went back in the same commit and must not go back twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ledger.domain.errors import InvalidRefund, RefundExceedsRemaining
from ledger.domain.vocabulary import RefundStatus


@dataclass
class MerchantRefund:
    """One refund the merchant asked for: `lines` (sku -> quantity) are empty for a refund by
    amount; `restocked` is what went back on hand in the commit that recorded it."""

    refund_id: str
    amount: int
    lines: dict[str, int]
    restocked: dict[str, int]
    reason: str | None
    status: RefundStatus = RefundStatus.PENDING
    stripe_refund_id: str | None = None


@dataclass
class RefundBook:
    """`ordered` and `unit_amounts` by sku, from the order's lines."""

    ordered: dict[str, int]
    unit_amounts: dict[str, int]
    merchant: dict[str, MerchantRefund] = field(default_factory=dict)
    # Refunds made outside the ledger: Stripe's id -> (amount, status).
    outside: dict[str, tuple[int, RefundStatus]] = field(default_factory=dict)
    # What went back on hand, by sku: never more than the order took.
    restocked: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, lines: list[dict[str, Any]]) -> RefundBook:
        return cls(
            ordered={line["sku"]: line["quantity"] for line in lines},
            unit_amounts={line["sku"]: line["unit_amount"] for line in lines},
        )

    @property
    def refunded(self) -> int:
        """What has gone back, or is on its way back: every refund that has not failed."""
        mine = sum(r.amount for r in self.merchant.values() if r.status != RefundStatus.FAILED)
        theirs = sum(a for a, status in self.outside.values() if status != RefundStatus.FAILED)
        return mine + theirs

    def remaining(self, captured: int) -> int:
        return max(captured - self.refunded, 0)

    def quantity_refunded(self, sku: str) -> int:
        return sum(r.lines.get(sku, 0) for r in self.merchant.values())

    def add_restocked(self, quantities: Mapping[str, int]) -> None:
        for sku, quantity in quantities.items():
            self.restocked[sku] = self.restocked.get(sku, 0) + quantity

    def unrefunded(self) -> dict[str, int]:
        """Each line's quantity not refunded yet (lines fully refunded left out)."""
        left = {sku: q - self.quantity_refunded(sku) for sku, q in self.ordered.items()}
        return {sku: q for sku, q in left.items() if q > 0}

    def price(self, lines: Mapping[str, int]) -> int:
        """What refunding these quantities (sku -> quantity) comes to, at their unit price;
        refused when a sku is not the order's or a quantity exceeds what is left of its line."""
        total = 0
        for sku, quantity in lines.items():
            if sku not in self.ordered:
                raise InvalidRefund(f"{sku!r} is not a line of this order.")
            if quantity < 1:
                raise InvalidRefund(f"The quantity of {sku!r} to refund must be at least 1.")
            left = self.ordered[sku] - self.quantity_refunded(sku)
            if quantity > left:
                raise RefundExceedsRemaining(
                    f"Only {left} of {sku!r} remain unrefunded; {quantity} were asked for."
                )
            total += quantity * self.unit_amounts[sku]
        return total

    def check_amount(self, amount: int, captured: int, currency: str) -> None:
        remaining = self.remaining(captured)
        if amount > remaining:
            raise RefundExceedsRemaining(
                f"Only {remaining} ({currency.upper()} minor units) of this order's payment"
                f" remain unrefunded; {amount} were asked for."
            )
