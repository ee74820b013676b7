"""Queries over the order-status and orders read models for Stripe's payment news: which order
a payment belongs to, and what is still waiting for news from Stripe (for the resync)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg

from ledger.domain.vocabulary import DISPUTE_CLOSED, IN_FLIGHT, OrderStatus, RefundStatus
from projections.base import LIVE_SCHEMA, compose, storable
from projections.order_status import OrderStatusProjection
from projections.orders import OrdersProjection
from projections.store import CONSISTENT_READ_WAIT_SECONDS, ReadStore

_TABLES = (*OrderStatusProjection.tables, *OrdersProjection.tables)


class Payments:
    """Queries for Stripe's payment news: which order a payment belongs to, and what is still
    waiting for news from Stripe (for the resync)."""

    def __init__(
        self, store: ReadStore, *, wait_seconds: float = CONSISTENT_READ_WAIT_SECONDS
    ) -> None:
        self.store = store
        self.wait_seconds = wait_seconds

    def order_for(self, payment_intent: str) -> UUID | None:
        """The order paid with `payment_intent`, or None when it is not one of ours. A payment
        not seen yet is looked for again once the read model has caught up with the log."""
        if not storable(payment_intent):
            return None
        found = self._order_for(payment_intent)
        if found is None and self.store.wait_for_head(
            [OrderStatusProjection.name], self.wait_seconds
        ):
            found = self._order_for(payment_intent)
        return found

    def unsettled_sessions(self, older_than: timedelta, limit: int) -> list[str]:
        """Sessions still processing or awaiting payment, unchanged for `older_than`."""
        return [session_id for session_id, _, _ in self.sessions_waiting(older_than, limit)]

    def sessions_waiting(
        self, older_than: timedelta, limit: int
    ) -> list[tuple[str, str, datetime]]:
        """(session id, status, since when) of the sessions still processing or awaiting
        payment, unchanged for `older_than`, the longest-waiting first."""
        return [
            (str(row[0]), str(row[1]), row[2])
            for row in self._rows(
                "SELECT checkout_session_id, status, updated_at FROM {order_status}"
                " WHERE status = ANY(%s) AND updated_at < now() - %s"
                " ORDER BY updated_at LIMIT %s",
                (list(IN_FLIGHT), older_than, limit),
            )
        ]

    def unsettled_refunds(self, older_than: timedelta, limit: int) -> list[UUID]:
        """Orders whose refund is still pending, unchanged for `older_than`."""
        return [
            row[0]
            for row in self._rows(
                "SELECT order_id FROM {order_status} WHERE status = %s"
                " AND updated_at < now() - %s ORDER BY updated_at LIMIT %s",
                (OrderStatus.REFUND_PENDING, older_than, limit),
            )
        ]

    def pending_merchant_refunds(self, older_than: timedelta, limit: int) -> list[tuple[UUID, str]]:
        """(order id, refund id) of the merchant's refunds still pending, recorded more than
        `older_than` ago, the oldest first."""
        return [
            (row[0], str(row[1]))
            for row in self._rows(
                "SELECT order_id, refund_id FROM {order_refunds} WHERE status = %s AND merchant"
                " AND created_at < now() - %s ORDER BY created_at LIMIT %s",
                (RefundStatus.PENDING, older_than, limit),
            )
        ]

    def open_disputes(self, older_than: timedelta, limit: int) -> list[str]:
        """Disputes not closed yet, unchanged for `older_than`."""
        return [
            row[0]
            for row in self._rows(
                "SELECT dispute_id FROM {payment_disputes} WHERE NOT status = ANY(%s)"
                " AND updated_at < now() - %s ORDER BY updated_at LIMIT %s",
                (list(DISPUTE_CLOSED), older_than, limit),
            )
        ]

    def _order_for(self, payment_intent: str) -> UUID | None:
        rows = self._rows(
            "SELECT order_id FROM {order_status} WHERE payment_intent = %s"
            " AND order_id IS NOT NULL LIMIT 1",
            (payment_intent,),
        )
        return rows[0][0] if rows else None

    def _rows(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        text = compose(
            query, LIVE_SCHEMA, (*OrderStatusProjection.tables, *OrdersProjection.tables)
        )
        with self.store.cursor() as cursor:
            try:
                return [tuple(row) for row in cursor.execute(text, params).fetchall()]
            except psycopg.errors.UndefinedTable:  # the runner has not set up the store yet
                return []
