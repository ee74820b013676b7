"""Stock held for open checkouts (`LEDGER_STOCK_HOLD`), by hold: until when, and for which
session. The hold timer (`side_effects.hold_timer`) asks it which holds are due to end, so that
holds end on time whichever process runs the timer, across restarts: the log is the schedule.

A hold leaves it when it ends (released, or taken by its order), and is no longer due while its
session's delayed payment is being decided (the customer paid in time: the hold stands).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg

from ledger.domain import Cart
from projections.base import (
    LIVE_SCHEMA,
    DomainEvent,
    Projection,
    Writer,
    compose,
    handles,
)
from projections.replays.topics import CART
from projections.store import ReadStore


class HoldsProjection(Projection):
    name = "stock_holds"
    tables = ("stock_holds",)
    version = 1

    def create_tables(self, db: Writer) -> None:
        db.execute(
            "CREATE TABLE {stock_holds} ("
            " hold_id text PRIMARY KEY,"
            " cart_id uuid NOT NULL,"
            " session_id text,"
            " held_until timestamptz NOT NULL,"
            " payment_under_way boolean NOT NULL DEFAULT false)"
        )
        db.execute("CREATE INDEX ON {stock_holds} (held_until) WHERE NOT payment_under_way")
        db.execute("CREATE INDEX ON {stock_holds} (session_id)")

    @handles(Cart, "HoldPlaced")
    def _placed(self, db: Writer, e: DomainEvent, position: int) -> None:
        db.execute(
            "INSERT INTO {stock_holds} (hold_id, cart_id, held_until) VALUES (%s, %s, %s)"
            " ON CONFLICT (hold_id) DO NOTHING",
            (e.hold_id, e.originator_id, e.held_until),
        )

    @handles(Cart, "CheckoutStarted")
    def _started(self, db: Writer, e: DomainEvent, position: int) -> None:
        if e.hold_id is not None:
            db.execute(
                "UPDATE {stock_holds} SET session_id = %s WHERE hold_id = %s",
                (e.session_id, e.hold_id),
            )

    @handles(Cart, "CheckoutAwaitingPayment")
    def _awaiting_payment(self, db: Writer, e: DomainEvent, position: int) -> None:
        db.execute(
            "UPDATE {stock_holds} SET payment_under_way = true WHERE session_id = %s",
            (e.session_id,),
        )

    @handles(Cart, "HoldReleased")
    def _released(self, db: Writer, e: DomainEvent, position: int) -> None:
        db.execute("DELETE FROM {stock_holds} WHERE hold_id = %s", (e.hold_id,))

    @handles(Cart, "CartConverted")
    def _taken(self, db: Writer, e: DomainEvent, position: int) -> None:
        db.execute("DELETE FROM {stock_holds} WHERE session_id = %s", (e.session_id,))

    def replay_in_sql(self, db: Writer) -> bool:
        # A hold as first placed, with the session that last started with it, unless it was
        # released since, or its session was converted since that start; under way once
        # that session awaited payment after it. (Joins on each event's last position:
        # a subquery per hold would read the log once per hold.)
        db.execute(
            "WITH e AS (SELECT position, stream_id, topic, data->>'hold_id' AS hold_id,"
            "  data->>'session_id' AS session_id, data FROM {replay_events}"
            "  WHERE topic = ANY(%(topics)s)),"
            " placed AS (SELECT DISTINCT ON (hold_id) hold_id, stream_id, position,"
            "  (data->>'held_until')::timestamptz AS held_until FROM e WHERE topic = %(placed)s"
            "  ORDER BY hold_id, position),"
            " started AS (SELECT DISTINCT ON (e.hold_id) e.hold_id, e.session_id, e.position"
            "  FROM e JOIN placed p ON p.hold_id = e.hold_id AND e.position > p.position"
            "  WHERE e.topic = %(started)s ORDER BY e.hold_id, e.position DESC),"
            " released AS (SELECT hold_id, max(position) AS position FROM e"
            "  WHERE topic = %(released)s GROUP BY hold_id),"
            " converted AS (SELECT session_id, max(position) AS position FROM e"
            "  WHERE topic = %(converted)s GROUP BY session_id),"
            " awaiting AS (SELECT session_id, max(position) AS position FROM e"
            "  WHERE topic = %(awaiting)s GROUP BY session_id)"
            " INSERT INTO {stock_holds} (hold_id, cart_id, session_id, held_until,"
            " payment_under_way)"
            " SELECT p.hold_id, p.stream_id, s.session_id, p.held_until,"
            "  coalesce(a.position > s.position, false)"
            " FROM placed p LEFT JOIN started s ON s.hold_id = p.hold_id"
            " LEFT JOIN released r ON r.hold_id = p.hold_id"
            " LEFT JOIN converted c ON c.session_id = s.session_id"
            " LEFT JOIN awaiting a ON a.session_id = s.session_id"
            " WHERE coalesce(r.position < p.position, true)"
            " AND coalesce(c.position < s.position, true)",
            {
                **_REPLAYED,
                "topics": list(_REPLAYED.values()),
            },
        )
        return True


@dataclass(frozen=True)
class DueHold:
    hold_id: str
    cart_id: UUID
    session_id: str | None  # None: Stripe never made its session (or it is being made)


class Holds:
    """Queries: the holds due to end."""

    # A hold without a session yet may be waiting for Stripe to make one: it is due a while
    # later (longer than the gateway gives a call, with its retry), so that the checkout
    # either records its session on the hold, or fails and releases the hold itself.
    _DUE = compose(
        "SELECT hold_id, cart_id, session_id FROM {stock_holds}"
        " WHERE NOT payment_under_way AND held_until <= now()"
        " AND (session_id IS NOT NULL OR held_until <= now() - %s)"
        " ORDER BY held_until LIMIT %s",
        LIVE_SCHEMA,
        HoldsProjection.tables,
    )

    def __init__(self, store: ReadStore, session_grace: timedelta = timedelta(seconds=15)) -> None:
        self.store = store
        self.session_grace = session_grace

    def due(self, limit: int) -> list[DueHold]:
        """The holds whose time is up, the longest overdue first."""
        with self.store.cursor() as cursor:
            try:
                rows: list[Any] = cursor.execute(self._DUE, (self.session_grace, limit)).fetchall()
            except psycopg.errors.UndefinedTable:  # the runner has not set up the store yet
                return []
        return [DueHold(str(hold_id), cart_id, session_id) for hold_id, cart_id, session_id in rows]


_REPLAYED = {
    "placed": CART["hold_placed"],
    "started": CART["started"],
    "awaiting": CART["awaiting"],
    "released": CART["hold_released"],
    "converted": CART["converted"],
}
