"""The event log as auditors see it: each stored event record as the contract's JSON, read by
position, exactly as stored (no aggregate is rebuilt to answer).

An event is `{"position", "stream", "stream_id", "version", "type", "recorded_at", "cause",
"data"}`: `stream` is the aggregate's kind in the domain's words (`cart`, `order`,
`inventory`), `type` the event's name (`OrderPlaced`), `data` the event's own fields.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.utils import get_topic
from psycopg import sql

from ledger.domain import Cart, InventoryItem, Order
from ledger.domain.after_sale import AfterSale
from projections.log import EVENTS_TABLE

# Stored topics are "<module>:<Aggregate>.<Event>": the aggregate's topic names its stream.
STREAMS = {get_topic(kind): kind.STREAM for kind in (Cart, Order, InventoryItem)}
# An order's events declared in `AfterSale` (which `Order` inherits) are stored under its topic.
STREAMS[get_topic(AfterSale)] = Order.STREAM
# Fields every stored event carries for the library, not for the domain.
_LIBRARY_FIELDS = frozenset({"timestamp", "originator_topic", "class_version"})

COLUMNS = "notification_id, originator_id, originator_version, topic, state"
Row = tuple[int, UUID, int, str, bytes]

_PAGE = (
    sql.SQL(
        "SELECT {columns} FROM {events} WHERE notification_id > %s"
        " ORDER BY notification_id LIMIT %s"
    )
    .format(columns=sql.SQL(COLUMNS), events=EVENTS_TABLE)
    .as_bytes(None)
)
_ALL_AFTER = (
    sql.SQL("SELECT {columns} FROM {events} WHERE notification_id > %s ORDER BY notification_id")
    .format(columns=sql.SQL(COLUMNS), events=EVENTS_TABLE)
    .as_bytes(None)
)


def event_json(row: Row) -> dict[str, Any]:
    """The contract's JSON of one stored event record."""
    position, stream_id, version, topic, state = row
    aggregate_topic, _, name = topic.rpartition(".")
    fields = fields_of(state)
    data = {k: v for k, v in fields.items() if k not in _LIBRARY_FIELDS}
    return {
        "position": int(position),
        "stream": STREAMS.get(aggregate_topic, aggregate_topic),
        "stream_id": str(stream_id),
        "version": int(version),
        "type": name,
        "recorded_at": fields.get("timestamp"),
        "cause": data.get("cause"),
        "data": data,
    }


def page(cursor: psycopg.Cursor[Any], after: int, limit: int) -> list[Row]:
    """Up to `limit` records after position `after`, in commit order. Positions become
    visible in commit order (see projections.log), so paging skips and repeats nothing, even
    while others write."""
    return [_row(r) for r in cursor.execute(_PAGE, (after, limit)).fetchall()]


def stream(
    conn: psycopg.Connection[Any], after: int = 0, chunk: int = 2000, *, binary: bool = False
) -> Iterator[Row]:
    """Every record after `after`, in commit order, through a server-side cursor: memory
    stays flat however long the log. Call inside a transaction (named cursors need one).
    `binary`: the rows in PostgreSQL's binary format (the same values; the state arrives as
    its bytes instead of hex text, which halves the time to read the log)."""
    with conn.cursor(name="audit_stream", binary=binary) as cursor:
        cursor.itersize = chunk
        cursor.execute(_ALL_AFTER, (after,))
        for r in cursor:
            yield _row(r)


def fields_of(state: bytes) -> dict[str, Any]:
    """A stored event's fields as plain JSON values (ids and times as text)."""
    fields: dict[str, Any] = json.loads(state, object_hook=_plain)
    return fields


def _row(r: tuple[Any, ...]) -> Row:
    return (int(r[0]), r[1], int(r[2]), str(r[3]), bytes(r[4]))


def _plain(obj: dict[str, Any]) -> Any:
    """The library's typed values (`{"_type_": "uuid_hex", "_data_": ...}`) as plain JSON."""
    if "_type_" in obj and "_data_" in obj:
        kind, value = obj["_type_"], obj["_data_"]
        if kind == "uuid_hex":
            return str(UUID(hex=value))
        return value  # datetime_iso and the like: already text
    return obj
