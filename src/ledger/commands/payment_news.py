"""What Stripe reports later about an order's payment: its capture or release, its refund,
outside refunds, disputes."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from ledger.decisions import DecidingApplication
from ledger.domain import Order
from ledger.domain.errors import UnknownOrder
from ledger.domain.vocabulary import OrderStatus
from ledger.payments import Dispute, PaymentIntent, Refund


@dataclass(frozen=True)
class Recorded:
    """An order after a decision on news from Stripe, and the names of the events that
    decision recorded (none when the news changed nothing)."""

    order: Order
    events: tuple[str, ...]


class PaymentNewsCommands(DecidingApplication):
    def record_refund(
        self, order_id: UUID, refund: Refund, cause: str, *, adopt: bool = False
    ) -> Recorded:
        """Records what Stripe says of a refund of the order's payment: one of the merchant's
        refunds (named by its metadata) or the order's own refund (`Order.owns_refund`) moves
        the order on; any other is recorded as a refund made outside the ledger."""

        def decide() -> Recorded:
            order = self._require_order(order_id)
            if refund.refund_ref is not None and refund.refund_ref in order.book.merchant:
                order.follow_merchant_refund(
                    refund.refund_ref, refund.refund_id, refund.status, refund.failure_reason, cause
                )
            elif order.owns_refund(refund.refund_id, refund.order_id, refund.succeeded, adopt):
                order.follow_refund(
                    refund.refund_id, refund.status, refund.amount, refund.failure_reason, cause
                )
            else:
                order.note_outside_refund(
                    refund.refund_id, refund.status, refund.amount, refund.currency, cause
                )
            return self._save_news(order)

        return self._decide([order_id], decide)

    def refuse_refund(self, order_id: UUID, code: str, cause: str) -> Recorded:
        """Stripe refused the order's refund for good (`code` is Stripe's error code)."""

        def decide() -> Recorded:
            order = self._require_order(order_id)
            if order.status == OrderStatus.REFUND_PENDING and order.refund_id is None:
                order.refuse_refund(code, cause)
            return self._save_news(order)

        return self._decide([order_id], decide)

    def refuse_merchant_refund(
        self, order_id: UUID, refund_id: str, code: str, cause: str
    ) -> Recorded:
        """Stripe refused to make one of the merchant's refunds at all (`code`: its error)."""

        def decide() -> Recorded:
            order = self._require_order(order_id)
            order.refuse_merchant_refund(refund_id, code, cause)
            return self._save_news(order)

        return self._decide([order_id], decide)

    def record_capture(self, order_id: UUID, amount: int, currency: str, cause: str) -> Recorded:
        """Stripe captured the order's authorized payment."""

        def decide() -> Recorded:
            order = self._require_order(order_id)
            order.record_capture(amount, currency, cause)
            return self._save_news(order)

        return self._decide([order_id], decide)

    def record_release(self, order_id: UUID, status: str, cause: str) -> Recorded:
        """Stripe cancelled the order's authorization (`status`: the PaymentIntent's now)."""

        def decide() -> Recorded:
            order = self._require_order(order_id)
            order.record_release(status, cause)
            return self._save_news(order)

        return self._decide([order_id], decide)

    def record_release_refused(
        self, order_id: UUID, code: str, intent: PaymentIntent, cause: str
    ) -> Recorded:
        """Stripe refused to cancel the order's authorization: it was captured (`intent`)."""

        def decide() -> Recorded:
            order = self._require_order(order_id)
            captured = (intent.amount_received, intent.currency)
            order.release_refused(code, intent.status, captured, cause)
            return self._save_news(order)

        return self._decide([order_id], decide)

    def record_dispute(self, order_id: UUID, dispute: Dispute, cause: str) -> Recorded:
        def decide() -> Recorded:
            order = self._require_order(order_id)
            order.note_dispute(
                dispute.dispute_id,
                dispute.status,
                dispute.amount,
                dispute.currency,
                dispute.reason,
                cause,
            )
            return self._save_news(order)

        return self._decide([order_id], decide)

    def get_order(self, order_id: UUID) -> Order | None:
        return self._find(Order, order_id)

    def read_order(self, order_id: UUID) -> Order | None:
        """The order to read, never to change: it may be the cached object itself, which
        later reads bring up to date."""
        return self._find(Order, order_id, to_change=False)

    def _require_order(self, order_id: UUID) -> Order:
        order = self._find(Order, order_id)
        if order is None:
            raise UnknownOrder(order_id)
        return order

    def _save_news(self, order: Order) -> Recorded:
        """Saves what a piece of Stripe's news changed, and says what that was: the same news
        again (a redelivery, a webhook and a worker at once) records and reports nothing."""
        events = tuple(type(e).__name__ for e in order.pending_events)
        if events:
            self.save(order)
        return Recorded(order, events)
