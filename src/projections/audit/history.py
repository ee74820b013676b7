"""An order's history: which positions of the log belong to it, so that its audit trail is
read by index instead of by scanning the log.

The read model keeps one row per (order, position): every event of the order's own stream,
the cart events of its checkout session (they carry `session_id`, and the order's id is
`order_id_for(session_id)`) and the stock taken for it or given back (`StockReserved`,
`StockReturned`, whatever returned it: a failed capture, the merchant's refund or
cancellation; they carry `order_id`). The
query joins those positions with the events table and answers the events as recorded.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.domain import Aggregate
from psycopg import sql

from ledger.domain import Cart, InventoryItem, Order, order_id_for
from projections.audit.records import COLUMNS, Row, event_json
from projections.base import LIVE_SCHEMA, DomainEvent, Projection, Writer, handles, topic_of
from projections.log import EVENTS_TABLE
from projections.store import CONSISTENT_READ_WAIT_SECONDS, ReadStore


def _order_events() -> tuple[tuple[type[Aggregate], str], ...]:
    """Each event an order records, named through the class that declares it.

    Found on the class rather than listed, so that an event added to Order later is in every
    order's history without anyone remembering to add it here. `Event` and `Created` are the
    library's base classes, never recorded themselves. An event declared in a class `Order`
    inherits from (`AfterSale`) is recorded under that class's topic: the library also makes
    `Order.<Name>` for it, whose topic is never stored, so it is named through the base."""
    declared_in = [
        kind
        for kind in reversed(Order.__mro__)
        if isinstance(kind, type) and issubclass(kind, Aggregate) and kind is not Aggregate
    ]
    found: dict[str, type[Aggregate]] = {}
    for kind in declared_in:  # the most basic class first: the one that declares the event
        for name, value in vars(kind).items():
            if (
                isinstance(value, type)
                and issubclass(value, Aggregate.Event)
                and name not in ("Event", "Created")
            ):
                found.setdefault(name, kind)
    return tuple((kind, name) for name, kind in found.items())


ORDER_EVENTS = _order_events()
# The cart events of one checkout session: each carries `session_id`.
SESSION_CART_EVENTS = (
    "CheckoutStarted",
    "CheckoutAwaitingPayment",
    "CheckoutPaymentFailed",
    "CheckoutExpired",
    "CheckoutRejected",
    "CartConverted",
    "CartReopened",
)


_SESSION_TOPICS = tuple(topic_of(Cart, name) for name in SESSION_CART_EVENTS)


class OrderHistoryProjection(Projection):
    name = "order_history"
    tables = ("order_history",)
    # 2: StockReturned and CartReopened (manual capture); 3: the order's events declared in
    # `AfterSale` (the merchant's refunds and cancellation), under their stored topics
    version = 3

    def create_tables(self, db: Writer) -> None:
        db.execute(
            "CREATE TABLE {order_history} ("
            " order_id uuid NOT NULL,"
            " position bigint NOT NULL,"
            " PRIMARY KEY (order_id, position))"
        )

    def _order_event(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._add(db, e.originator_id, position)

    for _kind, _name in ORDER_EVENTS:
        _order_event = handles(_kind, _name)(_order_event)
    del _kind

    def _session_event(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._add(db, order_id_for(e.session_id), position)

    for _name in SESSION_CART_EVENTS:
        _session_event = handles(Cart, _name)(_session_event)
    del _name

    @handles(InventoryItem, "StockReserved")
    @handles(InventoryItem, "StockReturned")
    def _stock_of_order(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._add(db, e.order_id, position)

    @staticmethod
    def _add(db: Writer, order_id: UUID, position: int) -> None:
        db.execute(
            "INSERT INTO {order_history} (order_id, position) VALUES (%s, %s)",
            (order_id, position),
        )

    def replay_in_sql(self, db: Writer) -> bool:
        # A session's order id is a name-based UUID the server cannot make (SHA-1): the
        # sessions' ids go to it with theirs, worked out here.
        sessions = [
            str(row[0])
            for row in db.execute(
                "SELECT DISTINCT data->>'session_id' FROM {replay_events} WHERE topic = ANY(%s)",
                (list(_SESSION_TOPICS),),
            )
        ]
        db.execute(
            "INSERT INTO {order_history} (order_id, position)"
            " SELECT stream_id, position FROM {replay_events} WHERE topic = ANY(%(orders)s)"
            " UNION ALL SELECT s.order_id, e.position FROM {replay_events} e"
            "  JOIN unnest(%(sessions)s::text[], %(ids)s::uuid[]) AS s(session_id, order_id)"
            "  ON s.session_id = e.data->>'session_id' WHERE e.topic = ANY(%(session_topics)s)"
            " UNION ALL SELECT coalesce(data->'order_id'->>'_data_', data->>'order_id')::uuid,"
            "  position FROM {replay_events} WHERE topic = ANY(%(stock)s)",
            {
                "orders": [topic_of(kind, name) for kind, name in ORDER_EVENTS],
                "sessions": sessions,
                "ids": [order_id_for(session) for session in sessions],
                "session_topics": list(_SESSION_TOPICS),
                "stock": [
                    topic_of(InventoryItem, "StockReserved"),
                    topic_of(InventoryItem, "StockReturned"),
                ],
            },
        )
        return True


class OrderHistories:
    """Queries: an order's audit history, as the contract's events."""

    _GET = (
        sql.SQL(
            "SELECT {columns} FROM {history} h JOIN {events} e ON e.notification_id = h.position"
            " WHERE h.order_id = %s ORDER BY h.position"
        )
        .format(
            columns=sql.SQL(", ").join(
                sql.SQL("e.") + sql.Identifier(c.strip()) for c in COLUMNS.split(",")
            ),
            history=sql.Identifier(LIVE_SCHEMA, "order_history"),
            events=EVENTS_TABLE,
        )
        .as_bytes(None)
    )  # composed once

    def __init__(
        self,
        store: ReadStore,
        *,
        consistent: bool = True,
        wait_seconds: float = CONSISTENT_READ_WAIT_SECONDS,
    ) -> None:
        """`consistent`: each query first waits (at most `wait_seconds`) until the read model
        has applied every event committed before it began, so a history read right after a
        write (a webhook answered, a refund recorded) is complete."""
        self.store = store
        self.consistent = consistent
        self.wait_seconds = wait_seconds

    def caught_up(self) -> bool:
        """Waits for the read model to reach the log's head; False when it did not in time
        (no worker runs it, or it is far behind): the answer may then miss recent events."""
        return self.store.wait_for_head([OrderHistoryProjection.name], self.wait_seconds)

    def events(self, order_id: UUID) -> list[dict[str, Any]] | None:
        """The order's events and those its commits caused, in position order; None when the
        order has no events of its own (it does not exist, or not yet)."""
        if self.consistent:
            self.caught_up()
        with self.store.cursor() as cursor:
            try:
                rows = cursor.execute(self._GET, (order_id,)).fetchall()
            except psycopg.errors.UndefinedTable:  # no runner has set the store up yet
                return None
        records: list[Row] = [(int(r[0]), r[1], int(r[2]), str(r[3]), bytes(r[4])) for r in rows]
        # A started checkout names its future order before there is one: no order yet.
        if not any(r[1] == order_id for r in records):
            return None
        return [event_json(r) for r in records]
