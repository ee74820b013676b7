"""`ledger audit verify`'s replay of the log for the invariants, in memory bounded by one order.

`Replay` over the whole log keeps every order's facts until the log is read (an order's
last event may come at any position), which grows with the log (~2.7 KB an order). Here the
same handlers and the same checks (projections.audit.invariants) run in two passes over one
snapshot of the log, each reading only the events its checks are about:

1. stock, in position order: what each product has on hand and held at every position
   (inventory events), and the carts reopened (CartReopened);
2. orders, one at a time: each order's own events with the stock reserved or returned for it,
   sorted by the server by (order id, position). An order's facts are complete when the next
   order's events begin: it is checked, counted into the balances and dropped.

A cart converted more than once is found by one query (the carts' conversions are not read
into Python at all). Only the violations, the balances and the stock's own facts stay in
memory: figures and messages are those of `check_replay` on a `Replay` of the whole log.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
from eventsourcing.utils import get_topic
from psycopg import sql

from ledger.domain import Cart, InventoryItem
from ledger.storage import Database
from projections.audit.facts import StockFacts
from projections.audit.invariants import (
    HELD,
    HOLDS,
    STOCK,
    Balance,
    Violation,
    account,
    balance_violations,
    check_read_models,
    conversion_violation,
    order_violations,
    reopen_violations,
    stray_violations,
)
from projections.audit.records import STREAMS, Row
from projections.audit.replay import _HANDLERS, Replay
from projections.log import EVENTS_TABLE

Say = Callable[[str], None]
_PROGRESS_EVERY = 50_000  # events read between two progress lines
# The orders' pass sorts its rows (the events with their state) on the server: in memory
# rather than spilled to disk, for a log of a few hundred thousand events.
SORT_MEMORY = "256MB"


def _topics(streams: set[str], names: set[str] | None = None) -> list[str]:
    """The stored topics of the handled events of `streams` (or only those `names`)."""
    return sorted(
        f"{aggregate_topic}.{name}"
        for aggregate_topic, stream in STREAMS.items()
        for (handled_stream, name) in _HANDLERS
        if handled_stream == stream and stream in streams
        if names is None or name in names
    )


_CART = get_topic(Cart)
_CONVERTED = f"{_CART}.CartConverted"
_REOPENED = f"{_CART}.CartReopened"
# The stock events that name an order (its `order_id`): read by both passes.
_FOR_ORDERS = [f"{get_topic(InventoryItem)}.{name}" for name in ("StockReserved", "StockReturned")]
_STOCK_TOPICS = [*_topics({"inventory"}), _REOPENED]
_ORDER_TOPICS = _topics({"order"}) + _FOR_ORDERS

# The stream's id as text: what the handlers key by (`str(UUID)`'s form), without making a
# UUID of each row only to print it.
_COLUMNS = sql.SQL("notification_id, originator_id::text, originator_version, topic, state")
_STOCK_PASS = sql.SQL(
    "SELECT {columns} FROM {events} WHERE topic = ANY(%s) ORDER BY notification_id"
).format(columns=_COLUMNS, events=EVENTS_TABLE)
# An order's group: its own stream, and for the stock events its `order_id` (stored as the
# library's {"_type_": "uuid_hex", "_data_": hex}, or as plain text).
_ORDER_PASS = sql.SQL(
    "SELECT {columns}, CASE WHEN topic = ANY(%(stock)s) THEN ("
    " SELECT COALESCE(j -> 'order_id' ->> '_data_', j ->> 'order_id')::uuid"
    " FROM (SELECT convert_from(state, 'UTF8')::json AS j) AS s"
    ") ELSE originator_id END AS order_group"
    " FROM {events} WHERE topic = ANY(%(topics)s) ORDER BY order_group, notification_id"
).format(columns=_COLUMNS, events=EVENTS_TABLE)
# Per cart, its conversions since it was last reopened (a reopened cart may be converted
# again: `Replay._reopened`), when more than one.
_CONVERSIONS = sql.SQL(
    "SELECT cart, array_agg(notification_id ORDER BY notification_id) FROM ("
    " SELECT originator_id AS cart, notification_id, topic,"
    "  count(*) FILTER (WHERE topic = %(reopened)s)"
    "   OVER (PARTITION BY originator_id ORDER BY notification_id) AS since,"
    "  count(*) FILTER (WHERE topic = %(reopened)s) OVER (PARTITION BY originator_id) AS last"
    " FROM {events} WHERE topic IN (%(converted)s, %(reopened)s)"
    ") AS c WHERE topic = %(converted)s AND since = last"
    " GROUP BY cart HAVING count(*) > 1 ORDER BY min(notification_id)"
).format(events=EVENTS_TABLE)
_EXTENT = sql.SQL("SELECT count(*), COALESCE(max(notification_id), 0) FROM {events}").format(
    events=EVENTS_TABLE
)


@dataclass
class StreamedVerification:
    events: int  # in the log's snapshot
    head: int  # its last position
    violations: list[Violation]
    balances: dict[str, Balance]  # as `invariants.balances` of every order

    def failed(self, check: str) -> list[Violation]:
        return [v for v in self.violations if v.check == check]


def _rows(
    conn: psycopg.Connection[Any], name: str, query: sql.Composed, params: Any
) -> Iterator[tuple[Any, ...]]:
    """A query's rows through a server-side cursor: memory flat however many."""
    with conn.cursor(name=name, binary=True) as cursor:
        cursor.itersize = 2000
        cursor.execute(query, params)
        yield from cursor


def _row(r: tuple[Any, ...]) -> Row:
    # r[1] is the stream's id as text (see _COLUMNS): the handlers take it as `str(stream_id)`.
    return (int(r[0]), r[1], int(r[2]), str(r[3]), bytes(r[4]))


def verify_streamed(database: Database, say: Say = lambda _: None) -> StreamedVerification:
    """Every invariant of `check_replay` over the whole log (one snapshot), and the read
    models against a fresh replay (`check_read_models`)."""
    # The read models are rebuilt and compared by the server (set-based replays) meanwhile,
    # on a connection of their own: this process's passes leave it idle otherwise.
    with ThreadPoolExecutor(1, thread_name_prefix="read-models") as pool:
        read_models = pool.submit(check_read_models, database)
        found, paid, events, head = _invariants(database, say)
        say("comparing the read models with a fresh replay")
        found += read_models.result()
    return StreamedVerification(int(events), int(head), found, paid)


def _invariants(
    database: Database, say: Say
) -> tuple[list[Violation], dict[str, Balance], int, int]:
    """Both passes: the violations found, the balances, the log's length and its head."""
    with database.connect() as conn:
        # Both passes and the count read the same log, whatever is written meanwhile.
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL work_mem = {}").format(sql.Literal(SORT_MEMORY)))
            events, head = conn.execute(_EXTENT).fetchone() or (0, 0)
            stock = _stock_pass(conn, say)
            found = [
                Violation(STOCK, (position,), f"{sku}: {on_hand} on hand")
                for position, sku, on_hand in stock.negative_stock
            ]
            found += [
                Violation(HELD, (o.position,), f"{o.sku}: {o.held} held, {o.on_hand} on hand")
                for o in stock.over_held
            ]
            found += [
                Violation(HOLDS, (p.position,), f"{p.sku}: {p.message}")
                for p in stock.hold_problems
            ]
            orders = _OrdersPass(stock)
            orders.read(conn, say)
            found += sorted(orders.take_problems, key=lambda v: v.positions)
            for _, violations in sorted(orders.violations, key=lambda placed: placed[0]):
                found += violations
            found += reopen_violations(stock.reopened, orders.failed_to_capture)
            found += [
                conversion_violation(str(cart), list(positions))
                for cart, positions in conn.execute(
                    _CONVERSIONS, {"converted": _CONVERTED, "reopened": _REOPENED}
                )
            ]
            found += stray_violations(sorted(orders.replay.strays))
            paid = dict(sorted(orders.balances.items()))
            found += balance_violations(paid)
    return found, paid, int(events), int(head)


def _stock_pass(conn: psycopg.Connection[Any], say: Say) -> Replay:
    """Pass 1: the stock, in position order (the holds taken are checked in pass 2)."""
    replay = Replay(track_orders=False)
    for r in _rows(conn, "audit_stock", _STOCK_PASS, (_STOCK_TOPICS,)):
        replay._apply(_row(r))
        if replay.events % _PROGRESS_EVERY == 0:
            say(f"stock: read {replay.events:,} events (position {replay.head:,})")
    return replay


class _OrdersPass:
    """Pass 2: each order's events, one order at a time (see the module's docstring)."""

    def __init__(self, stock: Replay) -> None:
        # The products' skus (what orders name their lines by), as pass 1 listed them.
        self.replay = Replay(
            stock={item: StockFacts(f.sku) for item, f in stock.stock.items()},
            track_stock=False,
        )
        # Holds taken, by the order that took them: checked against its cart when it is read.
        self.takes: dict[str, list[tuple[int, str, str | None]]] = defaultdict(list)
        for position, sku, cart_id, order_id in stock.hold_takes:
            self.takes[order_id].append((position, sku, cart_id))
        stock.hold_takes.clear()
        self.take_problems: list[Violation] = []
        self.violations: list[tuple[int, list[Violation]]] = []  # (placed at, its violations)
        self.failed_to_capture: set[str] = set()
        self.balances: dict[str, Balance] = defaultdict(Balance)

    def read(self, conn: psycopg.Connection[Any], say: Say) -> None:
        group: object = None  # the order's id (a UUID), as the server sorted by
        params = {"stock": _FOR_ORDERS, "topics": _ORDER_TOPICS}
        for r in _rows(conn, "audit_orders", _ORDER_PASS, params):
            if r[5] != group:
                self._finish()
                group = r[5]
            self.replay._apply(_row(r))
            if self.replay.events % _PROGRESS_EVERY == 0:
                say(f"orders: read {self.replay.events:,} events")
        self._finish()

    def _finish(self) -> None:
        """The order's events are all read: check it, count it, forget it."""
        replay = self.replay
        for order_id, reservations in replay._unplaced.items():  # never placed, after all
            replay.strays.extend((position, order_id) for _, position, _ in reservations)
        replay._unplaced.clear()
        for order in replay.orders.values():
            for position, sku, cart_id in self.takes.pop(order.order_id, ()):
                # An order takes only its own cart's hold (`Replay._check_hold_takes`).
                if cart_id is not None and order.cart_id != cart_id:
                    self.take_problems.append(
                        Violation(
                            HOLDS,
                            (position,),
                            f"{sku}: order {order.order_id} (cart {order.cart_id}) took a hold"
                            f" of cart {cart_id}",
                        )
                    )
            violations = order_violations(order)
            if violations:
                self.violations.append((order.placed_at, violations))
            if order.capture_failed:
                self.failed_to_capture.add(order.order_id)
            account(order, self.balances)
        replay.orders.clear()
