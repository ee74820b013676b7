"""The stored topics of the events the set-based replays read (`Projection.replay_in_sql`), by
the names their SQL gives them as parameters (`%(placed)s`, ...)."""

from __future__ import annotations

from ledger.domain import Cart, InventoryItem, Order
from ledger.domain.after_sale import AfterSale
from projections.base import topic_of


def _topics(aggregate: type, **events: str) -> dict[str, str]:
    return {key: topic_of(aggregate, name) for key, name in events.items()}


CART = _topics(
    Cart,
    cart_created="CartCreated",
    started="CheckoutStarted",
    awaiting="CheckoutAwaitingPayment",
    failed="CheckoutPaymentFailed",
    expired="CheckoutExpired",
    converted="CartConverted",
    hold_placed="HoldPlaced",
    hold_released="HoldReleased",
)
STOCK = _topics(
    InventoryItem,
    listed="ProductListed",
    changed="ProductDetailsChanged",
    received="StockReceived",
    written_off="StockWrittenOff",
    reserved="StockReserved",
    returned="StockReturned",
    held="StockHeld",
    released="StockReleased",
)
ORDER = _topics(
    Order,
    placed="OrderPlaced",
    confirmed="PaymentConfirmed",
    rejected="OrderRejected",
    refund_requested="RefundRequested",
    release_requested="ReleaseRequested",
    capture_requested="CaptureRequested",
    captured="PaymentCaptured",
    capture_failed="CaptureFailed",
    refund_submitted="RefundSubmitted",
    refund_issued="RefundIssued",
    refund_failed="RefundFailed",
    outside_refund="OutsideRefundRecorded",
    dispute_opened="DisputeOpened",
    dispute_closed="DisputeClosed",
)
AFTER_SALE = _topics(
    AfterSale,
    merchant_requested="MerchantRefundRequested",
    merchant_succeeded="MerchantRefundSucceeded",
    merchant_failed="MerchantRefundFailed",
    status_changed="OrderStatusChanged",
)
