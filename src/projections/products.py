"""Products and what a new checkout may take of each now.

`available` is the stock on hand less what is held for customers paying now (with
`LEDGER_STOCK_HOLD`), never below 0. Stock is taken when an order is placed (`StockReserved`,
which ends the order's hold).
"""

from __future__ import annotations

from typing import Any

import psycopg

from ledger.domain import InventoryItem
from ledger.domain.errors import UnknownProduct
from projections.base import (
    LIVE_SCHEMA,
    DomainEvent,
    Projection,
    Writer,
    handles,
    storable,
)
from projections.replays.topics import STOCK
from projections.store import CONSISTENT_READ_WAIT_SECONDS, ReadStore


class ProductsProjection(Projection):
    name = "products"
    tables = ("products",)
    version = 2  # 2: held

    def create_tables(self, db: Writer) -> None:
        db.execute(
            "CREATE TABLE {products} ("
            ' sku text COLLATE "C" PRIMARY KEY,'
            " item_id uuid NOT NULL UNIQUE,"
            " name text NOT NULL,"
            " unit_amount bigint NOT NULL,"
            " currency text NOT NULL,"
            " on_hand bigint NOT NULL,"
            " held bigint NOT NULL DEFAULT 0,"
            " position bigint NOT NULL)"
        )

    @handles(InventoryItem, "ProductListed")
    def _listed(self, db: Writer, e: DomainEvent, position: int) -> None:
        db.execute(
            "INSERT INTO {products} (sku, item_id, name, unit_amount, currency, on_hand, position)"
            " VALUES (%s, %s, %s, %s, %s, 0, %s)",
            (e.sku, e.originator_id, e.name, e.unit_amount, e.currency, position),
        )

    @handles(InventoryItem, "ProductDetailsChanged")
    def _details_changed(self, db: Writer, e: DomainEvent, position: int) -> None:
        db.execute(
            "UPDATE {products} SET name = %s, unit_amount = %s, currency = %s, position = %s"
            " WHERE item_id = %s",
            (e.name, e.unit_amount, e.currency, position, e.originator_id),
        )

    @handles(InventoryItem, "StockReceived")
    def _received(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._add(db, e.originator_id, e.quantity, position)

    @handles(InventoryItem, "StockWrittenOff")
    def _written_off(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._add(db, e.originator_id, -e.quantity, position)

    @handles(InventoryItem, "StockReserved")
    def _reserved(self, db: Writer, e: DomainEvent, position: int) -> None:
        # The order takes what its hold held, when it had one: the hold ends.
        held = -e.quantity if e.hold_id is not None else 0
        self._add(db, e.originator_id, -e.quantity, position, held)

    @handles(InventoryItem, "StockReturned")
    def _returned(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._add(db, e.originator_id, e.quantity, position)

    @handles(InventoryItem, "StockHeld")
    def _held(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._add(db, e.originator_id, 0, position, e.quantity)

    @handles(InventoryItem, "StockReleased")
    def _released(self, db: Writer, e: DomainEvent, position: int) -> None:
        self._add(db, e.originator_id, 0, position, -e.quantity)

    @staticmethod
    def _add(db: Writer, item_id: Any, quantity: int, position: int, held: int = 0) -> None:
        db.execute(
            "UPDATE {products} SET on_hand = on_hand + %s, held = held + %s, position = %s"
            " WHERE item_id = %s",
            (quantity, held, position, item_id),
        )

    def replay_in_sql(self, db: Writer) -> bool:
        # Each product as listed, with its last details; on hand and held are the sums of
        # what its events added, and its position the last of them.
        db.execute(
            "INSERT INTO {products} (sku, item_id, name, unit_amount, currency, on_hand, held,"
            " position)"
            " SELECT l.data->>'sku', l.stream_id, d.data->>'name',"
            " (d.data->>'unit_amount')::bigint, d.data->>'currency', coalesce(s.on_hand, 0),"
            " coalesce(s.held, 0), greatest(l.position, d.position, s.position)"
            " FROM {replay_events} l"
            " JOIN (SELECT DISTINCT ON (stream_id) stream_id, data, position"
            "  FROM {replay_events} WHERE topic IN (%(listed)s, %(changed)s)"
            "  ORDER BY stream_id, position DESC) d ON d.stream_id = l.stream_id"
            " LEFT JOIN (SELECT stream_id, max(position) AS position,"
            "  sum(CASE WHEN topic IN (%(written_off)s, %(reserved)s) THEN -q"
            "   WHEN topic IN (%(received)s, %(returned)s) THEN q ELSE 0 END) AS on_hand,"
            "  sum(CASE WHEN topic = %(held)s THEN q WHEN topic = %(released)s THEN -q"
            "   WHEN topic = %(reserved)s AND data->>'hold_id' IS NOT NULL THEN -q"
            "   ELSE 0 END) AS held"
            "  FROM (SELECT *, (data->>'quantity')::bigint AS q FROM {replay_events}"
            "   WHERE topic = ANY(%(stock)s)) e GROUP BY stream_id) s"
            " ON s.stream_id = l.stream_id"
            " WHERE l.topic = %(listed)s",
            _REPLAY,
        )
        return True


_REPLAY = {
    **STOCK,
    "stock": [
        STOCK[k] for k in ("received", "written_off", "reserved", "returned", "held", "released")
    ],
}


class ProductCatalog:
    """Queries: the catalog's answers (the `Catalog` protocol of web.bootstrap)."""

    _COLUMNS = "sku, name, unit_amount, currency, greatest(on_hand - held, 0)"
    _ONE = f'SELECT {_COLUMNS} FROM "{LIVE_SCHEMA}".products WHERE sku = %s'
    _ALL = f'SELECT {_COLUMNS} FROM "{LIVE_SCHEMA}".products ORDER BY sku'

    def __init__(
        self,
        store: ReadStore,
        *,
        consistent: bool = True,
        wait_seconds: float = CONSISTENT_READ_WAIT_SECONDS,
    ) -> None:
        """`consistent`: each query first waits (at most `wait_seconds`) until the read model
        has every event committed before it began, so a client reads what it just wrote,
        whichever process runs the workers (costs one query when it is caught up)."""
        self.store = store
        self.consistent = consistent
        self.wait_seconds = wait_seconds

    def _catch_up(self) -> None:
        if self.consistent:
            self.store.wait_for_head([ProductsProjection.name], self.wait_seconds)

    def product(self, sku: str) -> dict[str, Any]:
        """`{"sku", "name", "unit_amount", "currency", "available"}`; raises UnknownProduct."""
        if not storable(sku):
            raise UnknownProduct(sku)
        self._catch_up()
        with self.store.cursor() as cursor:
            try:
                row = cursor.execute(self._ONE, (sku,)).fetchone()
            except psycopg.errors.UndefinedTable:  # the runner has not set up the store yet
                row = None
        if row is None:
            raise UnknownProduct(sku)
        return _view(row)

    def products(self) -> list[dict[str, Any]]:
        """Every product, ordered by sku (byte order, as Python sorts ASCII)."""
        self._catch_up()
        with self.store.cursor() as cursor:
            try:
                rows = cursor.execute(self._ALL).fetchall()
            except psycopg.errors.UndefinedTable:
                return []
        return [_view(row) for row in rows]


def _view(row: tuple[Any, ...]) -> dict[str, Any]:
    sku, name, unit_amount, currency, available = row
    return {
        "sku": sku,
        "name": name,
        "unit_amount": int(unit_amount),
        "currency": currency,
        "available": int(available),
    }
