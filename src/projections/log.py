"""Reading the ledger's event log by position, as domain events.

Positions are the log's notification ids. The library serializes writers with a table lock
taken before ids are drawn (we never enable its DB functions, which break this), so ids become
visible in commit order: once id N is visible every id below N is committed or rolled back, and
reading `notification_id > position` never passes over an event that shows up later.
(tests/test_event_log.py pins that lock, and the table's name, against eventsourcing 9.5.6.)
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import Mapper, Notification
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg import sql

from ledger.application import Ledger
from ledger.storage import Database
from projections.base import LIVE_SCHEMA, DomainEvent

# Where the library keeps the `Ledger` application's events (its naming: "<app name>_events").
EVENTS_TABLE = sql.Identifier(LIVE_SCHEMA, f"{Ledger.name.lower()}_events")

# Events kept decoded per `EventLog`: the processors of one process follow the log close
# together, so a few thousand cover the distance between the first and the last.
DECODED_EVENTS_KEPT = 4096


class DecodedEvents:
    """The events last decoded, by position, shared by the processors that read the log
    through one `EventLog`: most events are read by several of them (a paid order by the
    order status, the orders, the history, the hash chain and the e-mails), and decoding one
    (its JSON, the library's typed values, the event object) costs more than reading it
    again. A position names one event for good (a rolled-back one is never read), and
    domain events are immutable, so each reader may be given the same object."""

    def __init__(self, kept: int = DECODED_EVENTS_KEPT) -> None:
        self.kept = kept
        self._events: OrderedDict[int, DomainEvent] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, position: int) -> DomainEvent | None:
        with self._lock:
            return self._events.get(position)

    def put(self, position: int, event: DomainEvent) -> None:
        with self._lock:
            self._events[position] = event
            while len(self._events) > self.kept:
                self._events.popitem(last=False)


@dataclass(frozen=True)
class Batch:
    """Events after a position, and how far the read got: every event at or below `upto`
    that matches the topics is in `events` (or was in an earlier batch)."""

    events: list[tuple[int, DomainEvent]]
    upto: int
    # The read stopped short of the log's head (or `stop`): more may follow `upto`.
    more: bool = False


@dataclass(frozen=True)
class EventLog:
    """The ledger's events table and the mapper that turns its rows into domain events."""

    schema: str
    table: str
    channel: str
    mapper: Mapper[UUID]
    decoded: DecodedEvents = field(default_factory=DecodedEvents, compare=False, repr=False)

    @classmethod
    def of(cls, database: Database) -> EventLog:
        """Learns the table, NOTIFY channel and mapper from the `Ledger` application itself
        (creating the events table when the database is new)."""
        app = Ledger(env=database.eventsourcing_env())
        try:
            recorder = app.recorder
            if not isinstance(recorder, PostgresApplicationRecorder):
                raise TypeError(
                    f"the ledger's recorder is {type(recorder).__name__}, not PostgreSQL"
                )
            return cls(
                schema=recorder.datastore.schema,
                table=recorder.events_table_name,
                channel=recorder.channel_name,
                mapper=app.mapper,
            )
        finally:
            app.close()

    @cached_property
    def _queries(self) -> dict[str, bytes]:
        # Composed once: psycopg would compose an `sql.Composed` on every execution.
        table = sql.Identifier(self.schema, self.table)
        # The head and the events after a position up to it (or up to `stop`), in one round
        # trip: a row with the head alone when there are none.
        read = sql.SQL(
            "SELECT h.head, e.notification_id, e.originator_id, e.originator_version, e.topic,"
            " e.state FROM (SELECT coalesce(max(notification_id), 0) AS head FROM {table}) h"
            " LEFT JOIN LATERAL (SELECT * FROM {table} WHERE notification_id > %(after)s"
            " AND notification_id <= least(h.head, coalesce(%(stop)s, h.head)) {only}"
            " ORDER BY notification_id LIMIT %(limit)s) e ON true ORDER BY e.notification_id"
        )
        return {
            "head": sql.SQL("SELECT coalesce(max(notification_id), 0) FROM {}")
            .format(table)
            .as_bytes(None),
            "read": read.format(table=table, only=sql.SQL("")).as_bytes(None),
            "read_topics": read.format(
                table=table, only=sql.SQL("AND topic = ANY(%(topics)s::text[])")
            ).as_bytes(None),
            "window": read.format(
                table=table, only=sql.SQL("AND notification_id <= %(after)s::bigint + %(limit)s")
            ).as_bytes(None),
        }

    def head(self, cursor: psycopg.Cursor[Any]) -> int:
        """The position of the last event recorded (0 for an empty log)."""
        row = cursor.execute(self._queries["head"]).fetchone()
        assert row is not None
        return int(row[0])

    def read(
        self,
        cursor: psycopg.Cursor[Any],
        after: int,
        topics: Sequence[str],
        limit: int,
        stop: int | None = None,
        *,
        scan: bool = False,
    ) -> Batch:
        """Up to `limit` events with a position above `after` (and at most `stop`), in order,
        of the given topics (all when empty).

        With `scan`, the positions after `after` up to `after + limit` instead, of any topic,
        keeping those of `topics` here before decoding: for a pass over the whole log by a
        reader that wants most of it. The window bounds what the server reads whatever its
        statistics: with none (a new log, autovacuum off) it plans "fetch and sort every event
        after `after`" for a LIMIT, which makes such a pass quadratic in the log's length."""
        params = {
            "after": after,
            "stop": stop,
            "limit": limit,
            "topics": _array_literal(tuple(topics)),
        }
        if scan:
            query = self._queries["window"]
        else:
            query = self._queries["read_topics" if topics else "read"]
        # Binary: the state (bytea) arrives as its bytes, not as hex text to decode, and the
        # server sends less (a third of the time of a text read, measured on 5,000 events).
        rows = cursor.execute(query, params, binary=True).fetchall()
        hi = int(rows[0][0]) if stop is None else min(int(rows[0][0]), stop)
        rows = [row[1:] for row in rows if row[1] is not None]
        if scan:
            # Every position up to the head is settled (see the module's docstring): the
            # window holds all there is in it, gaps being rolled-back positions.
            upto = max(min(after + limit, hi), after)
            more = upto < hi
            if topics:
                wanted = frozenset(topics)
                rows = [row for row in rows if row[3] in wanted]
        else:
            more = len(rows) == limit
            upto = int(rows[-1][0]) if more else max(hi, after)
        return Batch([(int(row[0]), self._event(row)) for row in rows], upto, more)

    def _event(self, row: Sequence[Any]) -> DomainEvent:
        position = int(row[0])
        event = self.decoded.get(position)
        if event is None:
            event = self.mapper.to_domain_event(
                Notification(
                    id=position,
                    originator_id=row[1],
                    originator_version=row[2],
                    topic=row[3],
                    state=bytes(row[4]),
                )
            )
            self.decoded.put(position, event)
        return event

    def event_at(self, cursor: psycopg.Cursor[Any], position: int) -> DomainEvent | None:
        """The event at `position`, or None when there is none."""
        events = self.read(cursor, position - 1, (), 1, stop=position).events
        return events[0][1] if events and events[0][0] == position else None


@functools.lru_cache(maxsize=256)
def _array_literal(topics: tuple[str, ...]) -> str:
    """`topics` as a PostgreSQL array literal (`{"a","b"}`), cast to text[] by the query.

    A str is dumped at once; a Python list goes through psycopg's list dumper, whose set-up on
    every execution was 4-5% of the server's CPU in the hot-product bench (each read model and
    side effect reads the log on every commit it is woken by). A processor's topics are the
    same tuple every time, so this is made once per processor."""
    quoted = ('"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"' for t in topics)
    return "{" + ",".join(quoted) + "}"
