"""After the sale: the merchant's refunds and cancellation of a placed order, and the status
its refunds come to. Part of the `Order` aggregate (`Order` inherits it); its own module
because these decisions change for their own reasons.

Its events are recorded under this class's topics (`ledger.domain.after_sale:AfterSale.*`), not
`Order`'s: name them through `AfterSale` (`reacts_to(AfterSale.MerchantRefundRequested)`,
`handles(AfterSale, "OrderCancelled")`). They did not exist before it, so no log holds them
under another topic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import Aggregate, event

from ledger.domain.errors import OrderNotCancellable, OrderNotRefundable
from ledger.domain.inventory import InventoryItem
from ledger.domain.refund_book import MerchantRefund, RefundBook
from ledger.domain.vocabulary import OrderStatus, RefundStatus, RestockReason


class AfterSale(Aggregate):
    """The merchant's side of an `Order` (which sets the state below in its `__init__`)."""

    if TYPE_CHECKING:  # declared for the type checker only: the library reads annotations
        currency: str
        charged: tuple[int, str]
        status: OrderStatus
        capture: str | None
        release: str | None
        book: RefundBook
        placed: bool
        cancelled_by: str | None
        flagged_by: str | None

    @property
    def captured(self) -> int:
        """What Stripe holds of the order's payment: nothing while it is only authorized."""
        return self.charged[0] if self.capture in (None, "captured") else 0

    def refund(
        self,
        refund_id: str,
        *,
        lines: Mapping[str, int] | None,
        amount: int | None,
        restock: bool,
        reason: str | None,
        items: Mapping[str, InventoryItem],
        cause: str,
    ) -> MerchantRefund:
        """The merchant refunds `lines` (sku -> quantity, at their unit price; with `restock`
        they go back on hand, through `items` by sku) or an `amount`. Never more than remains
        of the payment, nor of a line. The refund is asked of Stripe after this commit. The
        same request again (`refund_id`, derived from its idempotency key) changes nothing."""
        if refund_id in self.book.merchant:
            return self.book.merchant[refund_id]
        if not self.placed or self.cancelled_by is not None or self.captured == 0:
            raise OrderNotRefundable(self.id, self._stage())
        if lines is not None:
            amount = self.book.price(lines)
        assert amount is not None
        self.book.check_amount(amount, self.captured, self.currency)
        restocked = dict(lines) if lines is not None and restock else {}
        self._merchant_refund_requested(
            refund_id=refund_id,
            amount=amount,
            currency=self.currency,
            lines=_listed(lines or {}),
            restocked=_listed(restocked),
            reason=reason,
            cause=cause,
        )
        self._restock(restocked, items, RestockReason.REFUNDED, cause)
        self._settle(cause)
        return self.book.merchant[refund_id]

    def cancel(
        self,
        request_id: str,
        *,
        restock: bool,
        reason: str | None,
        items: Mapping[str, InventoryItem],
        cause: str,
    ) -> None:
        """The merchant cancels the order: what remains of the payment is refunded (as the
        refund `request_id`), or an authorization not captured yet is released instead; with
        `restock`, the quantities not refunded yet go back on hand. The same request again
        changes nothing."""
        if self.cancelled_by == request_id:
            return
        if not self.placed or self.cancelled_by is not None or self.status == OrderStatus.REFUNDED:
            raise OrderNotCancellable(self.id, self._stage())
        unrefunded = self.book.unrefunded()
        restocked = unrefunded if restock else {}
        release = self.capture == "requested"
        remaining = self.book.remaining(self.captured)
        if not release and remaining > 0:
            self._merchant_refund_requested(
                refund_id=request_id,
                amount=remaining,
                currency=self.currency,
                lines=_listed(unrefunded),
                restocked=_listed(restocked),
                reason=reason,
                cause=cause,
            )
        self._cancelled(
            request_id=request_id,
            reason=reason,
            release=release,
            restocked=_listed(restocked) if release or remaining == 0 else [],
            cause=cause,
        )
        self._restock(restocked, items, RestockReason.CANCELLED, cause)
        self._settle(cause)

    @event("MerchantRefundRequested")
    def _merchant_refund_requested(
        self,
        refund_id: str,
        amount: int,
        currency: str,
        lines: list[dict[str, Any]],
        restocked: list[dict[str, Any]],
        reason: str | None,
        cause: str,
    ) -> None:
        """`lines` refunded and `restocked` (sku, quantity); the refund itself is a side
        effect, after this commit."""
        self.book.merchant[refund_id] = MerchantRefund(
            refund_id, amount, _counted(lines), _counted(restocked), reason
        )
        self.book.add_restocked(_counted(restocked))
        self.flagged_by = None

    @event("OrderCancelled")
    def _cancelled(
        self,
        request_id: str,
        reason: str | None,
        release: bool,
        restocked: list[dict[str, Any]],
        cause: str,
    ) -> None:
        """`release`: the authorization is cancelled instead (nothing was captured);
        `restocked`: what went back on hand without a refund to record it."""
        self.cancelled_by = request_id
        self.book.add_restocked(_counted(restocked))
        if release:
            self.capture = "cancelled"
            self.release = "requested"

    def follow_merchant_refund(
        self, refund_id: str, stripe_refund_id: str, status: str, failure: str | None, cause: str
    ) -> None:
        """What Stripe says of one of the merchant's refunds (`status` in Stripe's words).
        Only news that changes something is recorded."""
        refund = self.book.merchant.get(refund_id)
        if refund is None:
            return
        if refund.stripe_refund_id is None:
            self._merchant_refund_submitted(
                refund_id=refund_id, stripe_refund_id=stripe_refund_id, status=status, cause=cause
            )
        state = RefundStatus.of(status)
        if state == refund.status or refund.stripe_refund_id != stripe_refund_id:
            return
        if state == RefundStatus.SUCCEEDED:
            self._merchant_refund_succeeded(refund_id=refund_id, amount=refund.amount, cause=cause)
        elif state == RefundStatus.FAILED:
            self._merchant_refund_failed(
                refund_id=refund_id,
                stripe_refund_id=stripe_refund_id,
                code=failure or status,
                cause=cause,
            )
        self._settle(cause)

    def refuse_merchant_refund(self, refund_id: str, code: str, cause: str) -> None:
        """Stripe refused to make one of the merchant's refunds at all: a person must act."""
        refund = self.book.merchant.get(refund_id)
        if refund is None or refund.stripe_refund_id is not None:
            return
        if refund.status == RefundStatus.PENDING:
            self._merchant_refund_failed(
                refund_id=refund_id, stripe_refund_id=None, code=code, cause=cause
            )
            self._settle(cause)

    @event("MerchantRefundSubmitted")
    def _merchant_refund_submitted(
        self, refund_id: str, stripe_refund_id: str, status: str, cause: str
    ) -> None:
        self.book.merchant[refund_id].stripe_refund_id = stripe_refund_id

    @event("MerchantRefundSucceeded")
    def _merchant_refund_succeeded(self, refund_id: str, amount: int, cause: str) -> None:
        self.book.merchant[refund_id].status = RefundStatus.SUCCEEDED
        if self.flagged_by == refund_id:  # it went through after all: nothing left to act on
            self.flagged_by = None

    @event("MerchantRefundFailed")
    def _merchant_refund_failed(
        self, refund_id: str, stripe_refund_id: str | None, code: str, cause: str
    ) -> None:
        """Its amount remains to refund; its restocked lines stay back on hand."""
        self.book.merchant[refund_id].status = RefundStatus.FAILED
        self.flagged_by = refund_id

    def _settle(self, cause: str) -> None:
        """Records the status a placed order's refunds and cancellation come to, when it
        changed: one event, so every read model shows the same status as the order."""
        if not self.placed:
            return
        if self.flagged_by is not None:
            status = OrderStatus.REFUND_FAILED
        elif self.cancelled_by is not None:
            status = OrderStatus.CANCELLED
        elif self.book.refunded == 0:
            status = OrderStatus.CONFIRMED
        elif self.book.remaining(self.captured) == 0:
            status = OrderStatus.REFUNDED
        else:
            status = OrderStatus.PARTIALLY_REFUNDED
        if status != self.status:
            self._status_changed(status=status, cause=cause)

    @event("OrderStatusChanged")
    def _status_changed(self, status: str, cause: str) -> None:
        self.status = OrderStatus(status)

    def _restock(
        self,
        quantities: Mapping[str, int],
        items: Mapping[str, InventoryItem],
        reason: RestockReason,
        cause: str,
    ) -> None:
        for sku, quantity in quantities.items():
            items[sku].give_back(self.id, quantity, reason, cause)

    def _stage(self) -> str:
        """Where the order stands, in a refusal's words."""
        if self.placed and self.captured == 0:
            return "not captured yet"
        return str(self.status)


def _listed(quantities: Mapping[str, int]) -> list[dict[str, Any]]:
    """Quantities by sku as an event records them."""
    return [{"sku": sku, "quantity": quantity} for sku, quantity in quantities.items()]


def _counted(listed: list[dict[str, Any]]) -> dict[str, int]:
    return {entry["sku"]: entry["quantity"] for entry in listed}
