"""Orders, for the merchant (and the storefront's own server): one row per order whose payment
has an outcome, in the contract's `order` shape, newest first.

An order is listed once its payment was decided: confirmed (`PaymentConfirmed`), or rejected
with its money owed back (`RefundRequested`) or its authorization released
(`ReleaseRequested`). Its place in the list is the log position of that outcome, which never
changes: paging newest first by position (keyset, `position < after`) returns every order
listed when paging began exactly once, however many are placed meanwhile (they come after
every position already applied, so they only ever appear before the first page).

Tables:
- `order_carts`: the `user_id` of each cart created with one (`CartCreated`);
- `order_drafts`: what an order placed but not decided yet holds (`OrderPlaced`), moved into
  `orders` when its outcome is recorded;
- `orders`: the listed orders;
- `order_refunds`: each refund of an order's payment, once: the order's own refund and refunds
  made outside the ledger by their Stripe id, the merchant's refunds by the ledger's own
  `refund_id` (the one the merchant's request answered with); `amount_refunded` is the sum of
  those that succeeded. Only a merchant refund by lines may have `restocked` lines (what went
  back on hand in the commit that recorded it); each item's `quantity_refunded` counts the
  merchant refunds of its line, failed ones too (the order's refund book keeps them refunded:
  their stock went back and must not go back twice).

Status follows the same events as `order_status` (`projections.order_status`), in the words of
`OrderStatus`; a placed order's status after its refunds or cancellation is the order's own
`OrderStatusChanged`. A cancellation has no row of its own: the rest of the money it refunds is
a merchant refund (under the cancel's request id), and what it puts back on hand without a
refund (a released authorization, nothing left to refund) is in the audit history, not here.

Amounts are what Stripe charged (`Order.charged`): as priced for a confirmed order, the amount
of `RefundRequested` / `ReleaseRequested` for a rejected one, and `PaymentCaptured`'s once a
manual capture is taken.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from ledger.domain import Cart, Order
from ledger.domain.after_sale import AfterSale
from ledger.domain.vocabulary import OrderStatus, RefundStatus
from projections.base import (
    LIVE_SCHEMA,
    DomainEvent,
    Projection,
    Writer,
    handles,
    storable,
)
from projections.replays.orders import replay_orders
from projections.store import CONSISTENT_READ_WAIT_SECONDS, ReadStore


class OrdersProjection(Projection):
    name = "orders"
    tables = ("order_carts", "order_drafts", "orders", "order_refunds")
    # 2: the merchant's refunds (restocked lines, quantity_refunded), OrderStatusChanged
    version = 3

    def create_tables(self, db: Writer) -> None:
        db.execute("CREATE TABLE {order_carts} (cart_id uuid PRIMARY KEY, user_id text NOT NULL)")
        db.execute(
            "CREATE TABLE {order_drafts} ("
            " order_id uuid PRIMARY KEY,"
            " checkout_session_id text NOT NULL,"
            " cart_id uuid NOT NULL,"
            " amount_total bigint NOT NULL,"
            " currency text NOT NULL,"
            " items jsonb NOT NULL,"
            " rejection_reason text)"
        )
        db.execute(
            "CREATE TABLE {orders} ("
            " order_id uuid PRIMARY KEY,"
            " checkout_session_id text NOT NULL,"
            " user_id text,"
            " status text NOT NULL,"
            " created_at timestamptz NOT NULL,"
            " currency text NOT NULL,"
            " amount_total bigint NOT NULL,"
            " amount_captured bigint NOT NULL,"
            " amount_refunded bigint NOT NULL,"
            " items jsonb NOT NULL,"
            " rejection_reason text,"
            # The log position of the outcome: the order's place in the list, for good.
            " position bigint NOT NULL UNIQUE)"
        )
        db.execute("CREATE INDEX ON {orders} (user_id, position) WHERE user_id IS NOT NULL")
        db.execute("CREATE INDEX ON {orders} (status, position)")
        db.execute(
            "CREATE TABLE {order_refunds} ("
            " order_id uuid NOT NULL,"
            " refund_id text NOT NULL,"
            " amount bigint NOT NULL,"
            " status text NOT NULL,"
            " reason text,"
            # [{sku, quantity}]: only a merchant refund by lines restocks anything.
            " restocked jsonb NOT NULL DEFAULT '[]',"
            # One the merchant asked for (its id is the ledger's, not Stripe's).
            " merchant boolean NOT NULL DEFAULT false,"
            " created_at timestamptz NOT NULL,"
            " position bigint NOT NULL,"
            " PRIMARY KEY (order_id, refund_id))"
        )
        # The resync's question: which of the merchant's refunds are still pending.
        db.execute(
            "CREATE INDEX ON {order_refunds} (created_at) WHERE merchant AND status = 'pending'"
        )

    # ---- who ordered, and what -----------------------------------------------------------

    @handles(Cart, "CartCreated")
    def _cart_created(self, db: Writer, e: DomainEvent, position: int) -> None:
        if e.user_id is not None:
            db.execute(
                "INSERT INTO {order_carts} (cart_id, user_id) VALUES (%s, %s)"
                " ON CONFLICT (cart_id) DO NOTHING",
                (e.originator_id, e.user_id),
            )

    @handles(Order, "OrderPlaced")
    def _placed(self, db: Writer, e: DomainEvent, position: int) -> None:
        items = [
            {
                "sku": line["sku"],
                "name": line["name"],
                "quantity": line["quantity"],
                "unit_amount": line["unit_amount"],
                "quantity_refunded": 0,
            }
            for line in e.lines
        ]
        db.execute(
            "INSERT INTO {order_drafts} (order_id, checkout_session_id, cart_id, amount_total,"
            " currency, items) VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (order_id) DO NOTHING",
            (
                e.originator_id,
                e.checkout_session_id,
                e.cart_id,
                e.amount_total,
                e.currency,
                Jsonb(items),
            ),
        )

    @handles(Order, "OrderRejected")
    def _rejected(self, db: Writer, e: DomainEvent, position: int) -> None:
        # Its outcome (a refund or a release) follows in the same commit.
        db.execute(
            "UPDATE {order_drafts} SET rejection_reason = %s WHERE order_id = %s",
            (e.reason, e.originator_id),
        )

    # ---- outcomes: the order is listed -----------------------------------------------------

    @handles(Order, "PaymentConfirmed")
    def _confirmed(self, db: Writer, e: DomainEvent, position: int) -> None:
        # Automatic capture: the payment was captured when made (a manual capture's
        # `CaptureRequested` follows in the same commit and says otherwise).
        self._list(db, e, position, OrderStatus.CONFIRMED, None, captured=True)

    @handles(Order, "RefundRequested")
    def _refund_requested(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._list(db, e, position, OrderStatus.REFUND_PENDING, (e.amount, e.currency), True)

    @handles(Order, "ReleaseRequested")
    def _release_requested(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._list(db, e, position, OrderStatus.RELEASED, (e.amount, e.currency), False)

    @staticmethod
    def _list(
        db: Writer,
        e: DomainEvent,
        position: int,
        status: OrderStatus,
        charged: tuple[int, str] | None,
        captured: bool,
    ) -> None:
        """Moves the order's draft into the list, decided at `position`; `charged`: what
        Stripe charged (amount, currency), when not as priced; `captured`: whether that
        money was taken (else only authorized)."""
        amount, currency = charged if charged is not None else (None, None)
        db.execute(
            "WITH draft AS (DELETE FROM {order_drafts} WHERE order_id = %(order_id)s"
            " RETURNING *)"
            " INSERT INTO {orders} (order_id, checkout_session_id, user_id, status, created_at,"
            " currency, amount_total, amount_captured, amount_refunded, items,"
            " rejection_reason, position)"
            " SELECT d.order_id, d.checkout_session_id, c.user_id, %(status)s, %(at)s,"
            " coalesce(%(currency)s, d.currency), coalesce(%(amount)s, d.amount_total),"
            " CASE WHEN %(captured)s THEN coalesce(%(amount)s, d.amount_total) ELSE 0 END,"
            " (SELECT coalesce(sum(r.amount), 0) FROM {order_refunds} r"
            "  WHERE r.order_id = d.order_id AND r.status = %(succeeded)s),"
            " d.items, d.rejection_reason, %(position)s"
            " FROM draft d LEFT JOIN {order_carts} c ON c.cart_id = d.cart_id",
            {
                "order_id": e.originator_id,
                "status": status,
                "at": e.timestamp,
                "currency": currency,
                "amount": amount,
                "captured": captured,
                "succeeded": RefundStatus.SUCCEEDED,
                "position": position,
            },
        )

    # ---- what happens to a listed order ----------------------------------------------------

    @handles(Order, "CaptureRequested")
    def _capture_requested(self, db: Writer, e: DomainEvent, position: int) -> None:
        # Manual capture: only authorized so far.
        db.execute(
            "UPDATE {orders} SET amount_captured = 0 WHERE order_id = %s", (e.originator_id,)
        )

    @handles(Order, "PaymentCaptured")
    def _captured(self, db: Writer, e: DomainEvent, position: int) -> None:
        db.execute(
            "UPDATE {orders} SET amount_total = %s, amount_captured = %s, currency = %s"
            " WHERE order_id = %s",
            (e.amount, e.amount, e.currency, e.originator_id),
        )

    @handles(Order, "CaptureFailed")
    def _capture_failed(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._set_status(db, e, OrderStatus.PAYMENT_FAILED)

    @handles(Order, "RefundSubmitted")
    def _refund_submitted(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._set_status(db, e, OrderStatus.REFUND_PENDING)
        self._own_refund(db, e, position, RefundStatus.of(e.status), None)

    @handles(Order, "RefundIssued")
    def _refund_issued(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._set_status(db, e, OrderStatus.REFUNDED)
        self._own_refund(db, e, position, RefundStatus.SUCCEEDED, e.amount)

    @handles(Order, "RefundFailed")
    def _refund_failed(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._set_status(db, e, OrderStatus.REFUND_FAILED)
        if e.refund_id is not None:  # else Stripe refused to make one at all: none to list
            self._own_refund(db, e, position, RefundStatus.FAILED, None)

    @handles(Order, "OutsideRefundRecorded")
    def _outside_refund(self, db: Writer, e: DomainEvent, position: int) -> None:
        db.execute(
            "INSERT INTO {order_refunds} AS r (order_id, refund_id, amount, status, reason,"
            " created_at, position) VALUES (%s, %s, %s, %s, NULL, %s, %s)"
            " ON CONFLICT (order_id, refund_id) DO UPDATE"
            " SET amount = excluded.amount, status = excluded.status",
            (
                e.originator_id,
                e.refund_id,
                e.amount,
                RefundStatus.of(e.status),
                e.timestamp,
                position,
            ),
        )
        self._sum_refunds(db, e.originator_id)

    # ---- the merchant's refunds and cancellation of a placed order ---------------------------

    @handles(AfterSale, "MerchantRefundRequested")
    def _merchant_refund_requested(self, db: Writer, e: DomainEvent, position: int) -> None:
        # Pending until Stripe says otherwise; a cancel with money left records one too (under
        # its request id), so the cancel's refund and its restocked lines are listed here.
        db.execute(
            "INSERT INTO {order_refunds} (order_id, refund_id, amount, status, reason, restocked,"
            " merchant, created_at, position) VALUES (%s, %s, %s, %s, %s, %s, true, %s, %s)"
            " ON CONFLICT (order_id, refund_id) DO NOTHING",
            (
                e.originator_id,
                e.refund_id,
                e.amount,
                RefundStatus.PENDING,
                e.reason,
                Jsonb([{"sku": r["sku"], "quantity": r["quantity"]} for r in e.restocked]),
                e.timestamp,
                position,
            ),
        )
        if e.lines:  # a refund by amount refunds no line
            db.execute(
                # Each item's quantity_refunded plus this refund's quantity of its sku, the
                # items kept in their order.
                "UPDATE {orders} o SET items = (SELECT jsonb_agg(CASE WHEN r.quantity IS NULL"
                " THEN i.item ELSE i.item || jsonb_build_object('quantity_refunded',"
                " (i.item->>'quantity_refunded')::bigint + r.quantity) END ORDER BY i.n)"
                " FROM jsonb_array_elements(o.items) WITH ORDINALITY AS i(item, n)"
                " LEFT JOIN jsonb_to_recordset(%s) AS r(sku text, quantity bigint)"
                " ON r.sku = i.item->>'sku')"
                " WHERE o.order_id = %s",
                (Jsonb(list(e.lines)), e.originator_id),
            )

    @handles(AfterSale, "MerchantRefundSucceeded")
    def _merchant_refund_succeeded(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._merchant_refund_is(db, e, RefundStatus.SUCCEEDED)

    @handles(AfterSale, "MerchantRefundFailed")
    def _merchant_refund_failed(self, db: Writer, e: DomainEvent, position: int) -> None:
        # Also when Stripe refused to make it at all: the refund was listed when requested.
        self._merchant_refund_is(db, e, RefundStatus.FAILED)

    # MerchantRefundSubmitted is not applied: it gives the refund its Stripe id, which the
    # contract's refund does not show, and its status is the order's to decide; the order
    # records MerchantRefundSucceeded or MerchantRefundFailed (in the same commit) whenever
    # that status changes the refund. So a refund's status here is always the order's own.

    @handles(AfterSale, "OrderStatusChanged")
    def _status_changed(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._set_status(db, e, OrderStatus(e.status))

    def replay_in_sql(self, db: Writer) -> bool:
        replay_orders(db)  # its SQL is long: projections.replays.orders
        return True

    @staticmethod
    def _merchant_refund_is(db: Writer, e: DomainEvent, status: RefundStatus) -> None:
        db.execute(
            "UPDATE {order_refunds} SET status = %s WHERE order_id = %s AND refund_id = %s",
            (status, e.originator_id, e.refund_id),
        )
        OrdersProjection._sum_refunds(db, e.originator_id)

    @staticmethod
    def _own_refund(
        db: Writer, e: DomainEvent, position: int, status: RefundStatus, amount: int | None
    ) -> None:
        """The order's own refund, as Stripe reports it: of the whole charge (`amount`, once
        Stripe says how much), for the reason the order was rejected."""
        db.execute(
            "INSERT INTO {order_refunds} AS r (order_id, refund_id, amount, status, reason,"
            " created_at, position)"
            " SELECT o.order_id, %(refund_id)s, coalesce(%(amount)s, o.amount_total),"
            " %(status)s, o.rejection_reason, %(at)s, %(position)s"
            " FROM {orders} o WHERE o.order_id = %(order_id)s"
            " ON CONFLICT (order_id, refund_id) DO UPDATE"
            " SET amount = coalesce(%(amount)s, r.amount), status = excluded.status",
            {
                "order_id": e.originator_id,
                "refund_id": e.refund_id,
                "amount": amount,
                "status": status,
                "at": e.timestamp,
                "position": position,
            },
        )
        OrdersProjection._sum_refunds(db, e.originator_id)

    @staticmethod
    def _sum_refunds(db: Writer, order_id: UUID) -> None:
        db.execute(
            "UPDATE {orders} o SET amount_refunded = (SELECT coalesce(sum(r.amount), 0)"
            " FROM {order_refunds} r WHERE r.order_id = o.order_id AND r.status = %s)"
            " WHERE o.order_id = %s",
            (RefundStatus.SUCCEEDED, order_id),
        )

    @staticmethod
    def _set_status(db: Writer, e: DomainEvent, status: OrderStatus) -> None:
        db.execute("UPDATE {orders} SET status = %s WHERE order_id = %s", (status, e.originator_id))


# ---- queries -------------------------------------------------------------------------------

_ORDERS = f'"{LIVE_SCHEMA}".orders'
_REFUNDS = f'"{LIVE_SCHEMA}".order_refunds'


def _utc(column: str) -> str:
    """SQL: timestamptz `column` as Python's `datetime.astimezone(UTC).isoformat()` writes it
    (`2026-01-02T03:04:05.678901+00:00`, the fraction left out when it is zero: the only
    `.000000+` the format can hold)."""
    return (
        f"replace(to_char({column} AT TIME ZONE 'UTC',"
        """ 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'), '.000000+', '+')"""
    )


# The contract's `order` as JSON text, built by PostgreSQL from an `orders` row `o`: a page of
# 200 is one statement and no per-order work in Python (decoding the rows into objects and
# encoding them again took most of a request's time). Its refunds, oldest first, are read by
# the primary key of `order_refunds` (the order's own, not a scan of every refund).
_ORDER_JSON = (
    "json_build_object("
    "'order_id', o.order_id,"
    " 'checkout_session_id', o.checkout_session_id,"
    " 'user_id', o.user_id,"
    " 'status', o.status,"
    f" 'created_at', {_utc('o.created_at')},"
    " 'currency', o.currency,"
    " 'amount_total', o.amount_total,"
    " 'amount_captured', o.amount_captured,"
    " 'amount_refunded', o.amount_refunded,"
    " 'items', o.items,"
    " 'refunds', coalesce((SELECT json_agg(json_build_object("
    "'refund_id', r.refund_id,"
    " 'amount', r.amount,"
    " 'status', r.status,"
    " 'reason', r.reason,"
    " 'restocked', r.restocked,"
    f" 'created_at', {_utc('r.created_at')})"
    f" ORDER BY r.position, r.refund_id) FROM {_REFUNDS} r WHERE r.order_id = o.order_id),"
    " '[]'::json))::text"
)


def _as_json(orders_query: str) -> bytes:
    """The orders `orders_query` selects (`*` of `orders`, in its order, newest first): each
    one's position and its JSON text (with its refunds), from one snapshot."""
    return (
        f"SELECT o.position, {_ORDER_JSON} FROM ({orders_query}) o ORDER BY o.position DESC"
    ).encode()


@dataclass(frozen=True)
class OrderPage:
    """A page of orders, newest first, each the contract's `order` as JSON text;
    `last_position`: where the next page starts (`after`), None when this page reached the end
    of the list."""

    orders: list[str]
    last_position: int | None

    def json(self, next_after: str | None) -> bytes:
        """The contract's page of orders, `{"orders": [...], "next_after": ...}`, as JSON."""
        orders = ",".join(self.orders)
        return f'{{"orders":[{orders}],"next_after":{json.dumps(next_after)}}}'.encode()


class Orders:
    """Queries: the contract's `order`, one or a page of them."""

    def __init__(
        self,
        store: ReadStore,
        *,
        consistent: bool = True,
        wait_seconds: float = CONSISTENT_READ_WAIT_SECONDS,
    ) -> None:
        """`consistent`: each query first waits (at most `wait_seconds`) until the read model
        has applied every event committed before it began, as the other read models' queries
        do, so an order decided before the request is listed."""
        self.store = store
        self.consistent = consistent
        self.wait_seconds = wait_seconds

    def _catch_up(self) -> None:
        if self.consistent:
            self.store.wait_for_head([OrdersProjection.name], self.wait_seconds)

    def get(self, order_id: UUID) -> dict[str, Any] | None:
        """The order, or None when no outcome is recorded for it (or there is no such order)."""
        self._catch_up()
        found = self._select(f"SELECT * FROM {_ORDERS} WHERE order_id = %s", [order_id])
        if not found:
            return None
        order: dict[str, Any] = json.loads(found[0][1])
        return order

    def page(
        self,
        *,
        status: str | None = None,
        user_id: str | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> OrderPage:
        """Up to `limit` orders decided before log position `before` (all when None), newest
        first, with that status and of carts created with that user id (when given)."""
        if user_id is not None and not storable(user_id):
            return OrderPage([], None)
        if status is not None and not storable(status):
            return OrderPage([], None)
        self._catch_up()
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("status", status), ("user_id", user_id), ("position", before)):
            if value is not None:
                where.append(f"{column} {'<' if column == 'position' else '='} %s")
                params.append(value)
        query = f"SELECT * FROM {_ORDERS}"
        if where:
            query += " WHERE " + " AND ".join(where)
        # One more than asked: whether this page reached the end of the list.
        query += " ORDER BY position DESC LIMIT %s"
        rows = self._select(query, [*params, limit + 1])
        more = len(rows) > limit
        rows = rows[:limit]
        return OrderPage([order for _, order in rows], rows[-1][0] if more else None)

    def _select(self, query: str, params: Sequence[Any]) -> list[tuple[int, str]]:
        """(position, the order's JSON text) of each order `query` selects, newest first."""
        with self.store.cursor() as cursor:
            try:
                rows = cursor.execute(_as_json(query), params).fetchall()
            except psycopg.errors.UndefinedTable:  # the runner has not set up the store yet
                return []
        return [(int(position), order) for position, order in rows]
