"""Order status by checkout session, for the storefront's success page.

One row per checkout session: what it was priced at, and what became of it in the contract's
words (`processing`, `awaiting_payment`, `confirmed`, `payment_failed`, `refund_pending`,
`refunded`, `expired`). No personal data.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from ledger.domain import Cart, Order
from projections.base import LIVE_SCHEMA, DomainEvent, Projection, Writer, handles, storable
from projections.store import CONSISTENT_READ_WAIT_SECONDS, ReadStore

PROCESSING = "processing"
AWAITING_PAYMENT = "awaiting_payment"
CONFIRMED = "confirmed"
PAYMENT_FAILED = "payment_failed"
REFUND_PENDING = "refund_pending"
REFUNDED = "refunded"
EXPIRED = "expired"


class OrderStatusProjection(Projection):
    name = "order_status"
    tables = ("order_status",)
    version = 1

    def create_tables(self, db: Writer) -> None:
        db.execute(
            "CREATE TABLE {order_status} ("
            " checkout_session_id text PRIMARY KEY,"
            " cart_id uuid NOT NULL,"
            " order_id uuid,"
            " status text NOT NULL,"
            " amount_total bigint NOT NULL,"
            " currency text NOT NULL,"
            " items jsonb NOT NULL,"
            " position bigint NOT NULL)"
        )
        db.execute("CREATE INDEX ON {order_status} (order_id) WHERE order_id IS NOT NULL")

    @handles(Cart, "CheckoutStarted")
    def _started(self, db: Writer, e: DomainEvent, position: int) -> None:
        items = [
            {
                "sku": line["sku"],
                "name": line["name"],
                "quantity": line["quantity"],
                "unit_amount": line["unit_amount"],
            }
            for line in e.lines
        ]
        db.execute(
            "INSERT INTO {order_status} AS s (checkout_session_id, cart_id, order_id, status,"
            " amount_total, currency, items, position)"
            " VALUES (%s, %s, NULL, %s, %s, %s, %s, %s)"
            " ON CONFLICT (checkout_session_id) DO UPDATE SET cart_id = excluded.cart_id,"
            " order_id = NULL, status = excluded.status, amount_total = excluded.amount_total,"
            " currency = excluded.currency, items = excluded.items, position = excluded.position",
            (
                e.session_id,
                e.originator_id,
                PROCESSING,
                e.amount_total,
                e.currency,
                Jsonb(items),
                position,
            ),
        )

    @handles(Cart, "CheckoutAwaitingPayment")
    def _awaiting_payment(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._set(db, e.session_id, AWAITING_PAYMENT, None, position)

    @handles(Cart, "CheckoutPaymentFailed")
    def _payment_failed(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._set(db, e.session_id, PAYMENT_FAILED, None, position)

    @handles(Cart, "CheckoutExpired")
    def _expired(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._set(db, e.session_id, EXPIRED, None, position)

    @handles(Cart, "CheckoutRejected")
    def _rejected(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._set(db, e.session_id, REFUND_PENDING, e.order_id, position)

    @handles(Cart, "CartConverted")
    def _converted(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._set(db, e.session_id, CONFIRMED, e.order_id, position)

    @handles(Order, "RefundIssued")
    def _refunded(self, db: Writer, e: DomainEvent, position: int) -> None:
        db.execute(
            "UPDATE {order_status} SET status = %s, position = %s WHERE order_id = %s",
            (REFUNDED, position, e.originator_id),
        )

    @staticmethod
    def _set(db: Writer, session_id: str, status: str, order_id: Any, position: int) -> None:
        db.execute(
            "UPDATE {order_status} SET status = %s, order_id = coalesce(%s, order_id),"
            " position = %s WHERE checkout_session_id = %s",
            (status, order_id, position, session_id),
        )


class OrderStatuses:
    """Queries: the contract's order-status body for a checkout session."""

    _GET = (
        f"SELECT checkout_session_id, status, order_id, amount_total, currency, items"
        f' FROM "{LIVE_SCHEMA}".order_status WHERE checkout_session_id = %s'
    )

    def __init__(
        self,
        store: ReadStore,
        *,
        consistent: bool = True,
        wait_seconds: float = CONSISTENT_READ_WAIT_SECONDS,
    ) -> None:
        """`consistent`: each query first waits (at most `wait_seconds`) until the read model
        has every event committed before it began, so a status poll after a write (checkout
        started, webhook answered) shows it, whichever process runs the workers."""
        self.store = store
        self.consistent = consistent
        self.wait_seconds = wait_seconds

    def get(self, session_id: str) -> dict[str, Any] | None:
        """`{"checkout_session_id", "status", "order_id", "amount_total", "currency",
        "items": [{"sku", "name", "quantity", "unit_amount"}]}`, or None for a session this
        ledger never started (or that the read model has not seen yet)."""
        if not storable(session_id):
            return None
        if self.consistent:
            self.store.wait_for_head([OrderStatusProjection.name], self.wait_seconds)
        with self.store.cursor() as cursor:
            try:
                row = cursor.execute(self._GET, (session_id,)).fetchone()
            except psycopg.errors.UndefinedTable:  # the runner has not set up the store yet
                return None
        if row is None:
            return None
        sid, status, order_id, amount_total, currency, items = row
        return {
            "checkout_session_id": sid,
            "status": status,
            "order_id": None if order_id is None else str(order_id),
            "amount_total": int(amount_total),
            "currency": currency,
            "items": items,
        }
