"""Order status by checkout session, for the storefront's success page.

One row per checkout session: what it was priced at, and what became of it in the contract's
words (`OrderStatus`). No personal data. Also which order each payment (PaymentIntent) belongs
to, and the disputes of those payments, which `projections.payments` queries for Stripe's
refund and dispute events and for the resync of whatever is still unsettled.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ledger.domain import Cart, Order, order_id_for
from ledger.domain.after_sale import AfterSale
from ledger.domain.vocabulary import WITH_ORDER, OrderStatus
from projections.base import (
    LIVE_SCHEMA,
    DomainEvent,
    Projection,
    Writer,
    handles,
    storable,
)
from projections.log import EVENTS_TABLE
from projections.replays.order_status import replay_order_status
from projections.store import CONSISTENT_READ_WAIT_SECONDS, ReadStore
from projections.tracking import TRACKING


class OrderStatusProjection(Projection):
    name = "order_status"
    # Every webhook waits for it (`wait_for`): it steps as soon as a commit wakes it.
    prompt = True
    tables = ("order_status", "payment_disputes")
    # 3: amounts as Stripe charged them (RefundRequested); 4: released authorizations, and a
    # rejected session's status from the order's request (a refund, or a release); 5: a placed
    # order's status after the merchant's refunds, its cancellation or a Dashboard refund
    version = 5

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
            " payment_intent text,"
            " updated_at timestamptz NOT NULL,"
            " position bigint NOT NULL)"
        )
        db.execute("CREATE INDEX ON {order_status} (order_id) WHERE order_id IS NOT NULL")
        db.execute(
            "CREATE INDEX ON {order_status} (payment_intent) WHERE payment_intent IS NOT NULL"
        )
        db.execute("CREATE INDEX ON {order_status} (status, updated_at)")
        db.execute(
            "CREATE TABLE {payment_disputes} ("
            " dispute_id text PRIMARY KEY,"
            " order_id uuid NOT NULL,"
            " status text NOT NULL,"
            " updated_at timestamptz NOT NULL)"
        )

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
            " amount_total, currency, items, updated_at, position)"
            " VALUES (%s, %s, NULL, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (checkout_session_id) DO UPDATE SET cart_id = excluded.cart_id,"
            " order_id = NULL, status = excluded.status, amount_total = excluded.amount_total,"
            " currency = excluded.currency, items = excluded.items,"
            " updated_at = excluded.updated_at, position = excluded.position",
            (
                e.session_id,
                e.originator_id,
                OrderStatus.PROCESSING,
                e.amount_total,
                e.currency,
                Jsonb(items),
                e.timestamp,
                position,
            ),
        )

    @handles(Order, "OrderPlaced")
    def _order_placed(self, db: Writer, e: DomainEvent, position: int) -> None:
        # The order id is known from here on (the status query shows it only once the
        # payment has an outcome); so is the payment, for Stripe's refund and dispute events.
        db.execute(
            "UPDATE {order_status} SET order_id = %s,"
            " payment_intent = coalesce(%s, payment_intent) WHERE checkout_session_id = %s",
            (e.originator_id, e.payment_intent, e.checkout_session_id),
        )

    @handles(Order, "PaymentConfirmed")
    @handles(Order, "OrderRejected")
    def _payment_known(self, db: Writer, e: DomainEvent, position: int) -> None:
        if e.payment_intent:
            db.execute(
                # Usually known from OrderPlaced already: then no row is rewritten.
                "UPDATE {order_status} SET payment_intent = %s WHERE order_id = %s"
                " AND payment_intent IS DISTINCT FROM %s",
                (e.payment_intent, e.originator_id, e.payment_intent),
            )

    @handles(Cart, "CheckoutAwaitingPayment")
    def _awaiting_payment(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._set_session(db, e, OrderStatus.AWAITING_PAYMENT, position)

    @handles(Cart, "CheckoutPaymentFailed")
    def _payment_failed(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._set_session(db, e, OrderStatus.PAYMENT_FAILED, position)

    @handles(Cart, "CheckoutExpired")
    def _expired(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._set_session(db, e, OrderStatus.EXPIRED, position)

    @handles(Cart, "CartConverted")
    def _converted(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._set_session(db, e, OrderStatus.CONFIRMED, position)

    @handles(Order, "RefundRequested")
    def _refund_requested(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._set_owed(db, e, OrderStatus.REFUND_PENDING, position)

    @handles(Order, "ReleaseRequested")
    def _release_requested(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._set_owed(db, e, OrderStatus.RELEASED, position)

    @handles(Order, "CaptureFailed")
    def _capture_failed(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._set_order(db, e, OrderStatus.PAYMENT_FAILED, position)

    @handles(Order, "RefundSubmitted")
    def _refund_submitted(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._set_order(db, e, OrderStatus.REFUND_PENDING, position)

    @handles(Order, "RefundIssued")
    def _refunded(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._set_order(db, e, OrderStatus.REFUNDED, position)

    @handles(Order, "RefundFailed")
    def _refund_failed(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._set_order(db, e, OrderStatus.REFUND_FAILED, position)

    @handles(AfterSale, "OrderStatusChanged")
    def _status_changed(self, db: Writer, e: DomainEvent, position: int) -> None:
        # A placed order's refunds and cancellation come to one status, which the order
        # records itself: the storefront shows the same word as the merchant's list.
        self._set_order(db, e, OrderStatus(e.status), position)

    @handles(Order, "DisputeOpened")
    @handles(Order, "DisputeClosed")
    def _dispute(self, db: Writer, e: DomainEvent, position: int) -> None:
        db.execute(
            "INSERT INTO {payment_disputes} (dispute_id, order_id, status, updated_at)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (dispute_id) DO UPDATE"
            " SET status = excluded.status, updated_at = excluded.updated_at",
            (e.dispute_id, e.originator_id, e.status, e.timestamp),
        )

    def replay_in_sql(self, db: Writer) -> bool:
        replay_order_status(db)  # its SQL is long: projections.replays.order_status
        return True

    @staticmethod
    def _set_session(db: Writer, e: DomainEvent, status: OrderStatus, position: int) -> None:
        db.execute(
            "UPDATE {order_status} SET status = %s, order_id = coalesce(%s, order_id),"
            " updated_at = %s, position = %s WHERE checkout_session_id = %s",
            (status, getattr(e, "order_id", None), e.timestamp, position, e.session_id),
        )

    @staticmethod
    def _set_owed(db: Writer, e: DomainEvent, status: OrderStatus, position: int) -> None:
        """A paid (or authorized) session the order cannot use: its money goes back, as
        Stripe charged it; a session refunded for an amount or currency other than priced
        shows what it was actually charged."""
        db.execute(
            "UPDATE {order_status} SET status = %s, amount_total = %s, currency = %s,"
            " updated_at = %s, position = %s WHERE order_id = %s",
            (status, e.amount, e.currency, e.timestamp, position, e.originator_id),
        )

    @staticmethod
    def _set_order(db: Writer, e: DomainEvent, status: OrderStatus, position: int) -> None:
        db.execute(
            "UPDATE {order_status} SET status = %s, updated_at = %s, position = %s"
            " WHERE order_id = %s",
            (status, e.timestamp, position, e.originator_id),
        )


_WRITTEN, _APPLIED = 6, 7  # columns of OrderStatuses._GET after the body's six


def _caught_up(row: tuple[Any, ...] | None) -> bool:
    return row is not None and row[_APPLIED] is not None and row[_APPLIED] >= row[_WRITTEN]


class OrderStatuses:
    """Queries: the contract's order-status body for a checkout session."""

    # The row, how far the session's own streams (its cart's and its order's) are written,
    # and how far the read model has applied the log: one round trip when it is caught up.
    # A stream's last position is that of its newest version (versions commit in order), read
    # down its primary key: asked for `max(notification_id)` of the two streams instead, the
    # planner walks the whole log back from its head to the session's last event, a cost in
    # proportion to the log written since (6 ms for a session 4,600 events back).
    _GET = (
        sql.SQL(
            "SELECT s.checkout_session_id, s.status,"
            " CASE WHEN s.status = ANY(%(with_order)s) THEN s.order_id END,"
            " s.amount_total, s.currency, s.items,"
            " greatest(0,"
            "  (SELECT e.notification_id FROM {events} e WHERE e.originator_id = s.cart_id"
            "   ORDER BY e.originator_version DESC LIMIT 1),"
            "  (SELECT e.notification_id FROM {events} e WHERE e.originator_id = %(order_id)s"
            "   ORDER BY e.originator_version DESC LIMIT 1)) AS written,"
            " (SELECT t.position FROM {tracking} t WHERE t.name = %(name)s) AS applied"
            " FROM {table} s WHERE s.checkout_session_id = %(session_id)s"
        )
        .format(
            events=EVENTS_TABLE,
            tracking=TRACKING,
            table=sql.Identifier(LIVE_SCHEMA, "order_status"),
        )
        .as_bytes(None)
    )  # composed once, not on every poll

    def __init__(
        self,
        store: ReadStore,
        *,
        consistent: bool = True,
        wait_seconds: float = CONSISTENT_READ_WAIT_SECONDS,
    ) -> None:
        """`consistent`: each query first waits (at most `wait_seconds`) until the read model
        has applied every event of the session's own cart and order committed before it began,
        so a status poll after a write (checkout started, webhook answered) shows it,
        whichever process runs the workers. Other sessions' writes are not waited for."""
        self.store = store
        self.consistent = consistent
        self.wait_seconds = wait_seconds

    def get(self, session_id: str) -> dict[str, Any] | None:
        """`{"checkout_session_id", "status", "order_id", "amount_total", "currency",
        "items": [{"sku", "name", "quantity", "unit_amount"}]}`, or None for a session this
        ledger never started (or that the read model has not seen yet)."""
        if not storable(session_id):
            return None
        row = self._read(session_id)
        if self.consistent and self._wait(row):
            row = self._read(session_id)
        if row is None:
            return None
        sid, status, order_id, amount_total, currency, items = row[:6]
        return {
            "checkout_session_id": sid,
            "status": status,
            "order_id": None if order_id is None else str(order_id),
            "amount_total": int(amount_total),
            "currency": currency,
            "items": items,
        }

    def wait_for(self, session_id: str) -> None:
        """Waits (at most `wait_seconds`) until the read model has applied every event of the
        session committed so far: after a write, so the next `get` shows it."""
        if storable(session_id):
            self._wait(self._read(session_id))

    def _wait(self, row: tuple[Any, ...] | None) -> bool:
        """Waits until the read model has applied what `row` depends on; True if it had to."""
        if _caught_up(row):
            return False
        name = OrderStatusProjection.name
        if row is None:  # not seen yet: its checkout may have just started
            self.store.wait_for_head([name], self.wait_seconds)
        else:
            self.store.wait_until_applied(name, row[_WRITTEN], self.wait_seconds)
        return True

    @classmethod
    def query(cls, session_id: str) -> tuple[bytes, dict[str, Any]]:
        """The statement a read of the session runs, and its parameters."""
        return cls._GET, {
            "session_id": session_id,
            "order_id": order_id_for(session_id),
            "name": OrderStatusProjection.name,
            "with_order": list(WITH_ORDER),
        }

    def _read(self, session_id: str) -> tuple[Any, ...] | None:
        statement, params = self.query(session_id)
        with self.store.cursor() as cursor:
            try:
                row = cursor.execute(statement, params).fetchone()
            except psycopg.errors.UndefinedTable:  # the runner has not set up the store yet
                return None
        return None if row is None else tuple(row)
