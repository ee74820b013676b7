"""What one pass over the log (`projections.audit.replay`) finds: stock per product with its
live holds, and per order what it was paid or authorized, how it ended, its capture or release,
its refunds and its disputes. Plain records: the invariants (`projections.audit.invariants`) and
the auditors' report (`projections.audit.report`) read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ledger.domain.vocabulary import RefundStatus


@dataclass(slots=True)
class HoldFacts:
    """One live hold of an item: units kept for an open checkout, still on hand."""

    hold_id: str
    quantity: int
    placed_at: int  # position of StockHeld
    cart_id: str | None


@dataclass(slots=True)
class StockFacts:
    sku: str
    on_hand: int = 0
    lowest: int = 0
    lowest_at: int = 0  # the position where on hand was lowest
    holds: dict[str, HoldFacts] = field(default_factory=dict)  # live holds, by hold id
    held: int = 0  # the live holds' total, kept as they come and go
    # Holds that ended, hold id -> position: to tell "already ended" from "never placed".
    ended: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class MerchantRefundFacts:
    """One refund the merchant asked for (MerchantRefundRequested), and where it stands."""

    refund_id: str
    position: int  # of MerchantRefundRequested
    amount: int
    currency: str
    reason: str | None
    status: RefundStatus = RefundStatus.PENDING
    code: str | None = None  # MerchantRefundFailed's code


@dataclass(frozen=True, slots=True)
class CancelFacts:
    """The merchant cancelled the order (OrderCancelled)."""

    position: int
    reason: str | None
    release: bool  # an authorization not captured yet was released instead of refunded


@dataclass(slots=True)
class OrderFacts:
    order_id: str
    session_id: str
    currency: str  # as Stripe charged it: priced by OrderPlaced, charged by RefundRequested
    amount: int
    lines: dict[str, int]  # sku -> quantity
    placed_at: int  # position of OrderPlaced
    cart_id: str | None = None
    confirmed: list[tuple[int, datetime]] = field(default_factory=list)
    rejected: list[tuple[int, datetime]] = field(default_factory=list)
    payment_failed: int | None = None
    reserved: dict[str, list[int]] = field(default_factory=dict)  # sku -> positions
    taken: dict[str, int] = field(default_factory=dict)  # sku -> units StockReserved took
    refund: RefundStatus | None = None  # requested counts as pending
    refund_failure: str | None = None
    refund_positions: list[int] = field(default_factory=list)
    disputes: dict[str, str] = field(default_factory=dict)
    outside_refunds: dict[str, tuple[str, int]] = field(default_factory=dict)  # id: status, amount
    outside_refunded_at: dict[str, int] = field(default_factory=dict)  # id: first position
    # Manual capture. An order with CaptureRequested or ReleaseRequested was paid by an
    # authorization (`authorized`): what Stripe authorized, as (amount, currency).
    authorization: tuple[int, str] | None = None
    capture_requested: list[int] = field(default_factory=list)  # positions
    captures: list[tuple[int, int, str]] = field(default_factory=list)  # position, amount, cur.
    capture_failed: list[int] = field(default_factory=list)  # positions of CaptureFailed
    capture_failure: str | None = None  # CaptureFailed's code
    release_requested: list[int] = field(default_factory=list)  # positions
    released: list[int] = field(default_factory=list)  # positions of AuthorizationReleased
    # Positions of ReleaseFailed: Stripe would not cancel, the payment was captured elsewhere
    # (its PaymentCaptured and RefundRequested follow in the same commit).
    release_failed: list[int] = field(default_factory=list)
    returned: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # sku -> pos, qty
    # After the sale: the merchant's refunds (by refund id, in the order they were asked
    # for), cancellation, and the stock they put back (StockReturned "refunded" or
    # "cancelled": not a failed capture's, which `returned` holds).
    merchant_refunds: dict[str, MerchantRefundFacts] = field(default_factory=dict)
    cancellations: list[CancelFacts] = field(default_factory=list)
    restocked: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # sku -> pos, qty

    @property
    def cancel_released(self) -> bool:
        """Cancelled before its capture: the authorization is released, never captured."""
        return any(c.release for c in self.cancellations)

    @property
    def authorized(self) -> bool:
        """Paid by an authorization to capture later (manual capture), not by a charge."""
        return bool(self.capture_requested or self.release_requested)

    @property
    def awaiting_capture(self) -> bool:
        """Capture requested, and Stripe has said nothing of it yet (nor was the order
        cancelled meanwhile: its authorization is released then, not captured)."""
        return (
            bool(self.capture_requested)
            and not (self.captures or self.capture_failed)
            and not self.cancel_released
        )


@dataclass(frozen=True, slots=True)
class HoldProblem:
    """A hold used against its life: placed twice, or released or taken when not live."""

    position: int
    sku: str
    message: str


@dataclass(frozen=True, slots=True)
class OverHold:
    """A position where an item's live holds exceeded what it had on hand."""

    position: int
    sku: str
    held: int
    on_hand: int
