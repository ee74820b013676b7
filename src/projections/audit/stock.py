"""Stock on hand as it stood at an instant, computed from the inventory item's own stream.

Not from a read model: an auditor's figure must come from what was recorded, and a read model
only knows the present. The item's events are read in version order through a server-side
cursor (a hot product has tens of thousands of them: memory stays flat) and their effect on
`on_hand` is applied, as `InventoryItem` applies it, up to the last event recorded at or before
the instant.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from ledger.domain import inventory_item_id
from ledger.storage import transient_store_errors
from projections.base import storable
from projections.log import EVENTS_TABLE
from projections.store import ReadStore

# How each of InventoryItem's events changes `on_hand` (by its `quantity`); the others
# (ProductDetailsChanged, and StockHeld and StockReleased: a held unit is still on hand) leave
# it as it is. ProductListed creates the item with 0 on hand. A reservation that takes a hold
# lowers on hand once, like any other; a capture Stripe refused returns the stock.
LISTED = "ProductListed"
_SIGN = {"StockReceived": 1, "StockWrittenOff": -1, "StockReserved": -1, "StockReturned": 1}

_STREAM = (
    sql.SQL(
        "SELECT topic, state FROM {events} WHERE originator_id = %s ORDER BY originator_version"
    )
    .format(events=EVENTS_TABLE)
    .as_bytes(None)
)
# Rows fetched per round trip of the server-side cursor.
CHUNK = 2000

# A `+hh:mm` offset in a URL's query string arrives as ` hh:mm` when the client did not
# escape the `+` (it means a space there): put the sign back.
_UNESCAPED_OFFSET = re.compile(
    r"^(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?) (\d{2}(?::?\d{2})?)$"
)


def parse_instant(text: str) -> datetime:
    """An ISO-8601 time (`2025-03-01T12:00:00Z`, `...+02:00`, `2025-03-01`) as an aware
    datetime; one without a timezone is taken as UTC. Raises ValueError otherwise."""
    raw = text.strip()
    match = _UNESCAPED_OFFSET.match(raw)
    if match:
        raw = f"{match[1]}+{match[2]}"
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"not an ISO-8601 time: {text!r} (try 2025-03-01T12:00:00Z)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        parsed.astimezone(UTC)  # answers give it in UTC: `9999-12-31T23:00-05:00` has none
    except OverflowError:
        raise ValueError(f"out of range: {text!r} falls outside years 1 to 9999 in UTC") from None
    return parsed


@dataclass(frozen=True)
class StockAt:
    sku: str
    on_hand: int
    at: datetime
    # How many of the item's events were applied (up to and including the last at or
    # before `at`), for the record.
    events: int

    def json(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "on_hand": self.on_hand,
            "at": self.at.astimezone(UTC).isoformat(),
        }


def stock_at(conn: psycopg.Connection[Any], sku: str, at: datetime) -> StockAt | None:
    """The stock of `sku` as it stood at `at`; None when the product did not exist then (or
    never). Opens its own transaction on `conn` (a server-side cursor needs one)."""
    if not storable(sku):
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    on_hand: int | None = None
    applied = 0
    with conn.transaction(), conn.cursor(name="audit_stock") as cursor:
        cursor.itersize = CHUNK
        cursor.execute(_STREAM, (inventory_item_id(sku),))
        for topic, state in cursor:
            fields = json.loads(bytes(state))
            if _timestamp(fields) > at:
                break  # leaving the transaction closes the cursor: the rest is never read
            name = str(topic).rpartition(".")[2]
            if name == LISTED:
                on_hand = 0
            elif name in _SIGN and on_hand is not None:
                on_hand += _SIGN[name] * int(fields["quantity"])
            applied += 1
    return None if on_hand is None else StockAt(sku, on_hand, at, applied)


def _timestamp(fields: dict[str, Any]) -> datetime:
    stamp = fields["timestamp"]
    # Stored as the library's typed value {"_type_": "datetime_iso", "_data_": "..."}.
    return datetime.fromisoformat(stamp["_data_"] if isinstance(stamp, dict) else stamp)


class StockHistory:
    """Queries: stock at an instant, over the read store's pool (for the HTTP API)."""

    def __init__(self, store: ReadStore) -> None:
        self.store = store

    def at(self, sku: str, when: datetime) -> StockAt | None:
        with self._connection() as conn:
            return stock_at(conn, sku, when)

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        with transient_store_errors(), self.store.pool.connection() as conn:
            yield conn
