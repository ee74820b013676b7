"""Reading the ledger's event log by position, as domain events.

Positions are the log's notification ids. The library serializes writers with a table lock
taken before ids are drawn (we never enable its DB functions, which break this), so ids become
visible in commit order: once id N is visible every id below N is committed or rolled back, and
reading `notification_id > position` never passes over an event that shows up later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Batch:
    """Events after a position, and how far the read got: every event at or below `upto`
    that matches the topics is in `events` (or was in an earlier batch)."""

    events: list[tuple[int, DomainEvent]]
    upto: int


@dataclass(frozen=True)
class EventLog:
    """The ledger's events table and the mapper that turns its rows into domain events."""

    schema: str
    table: str
    channel: str
    mapper: Mapper[UUID]

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
        read = sql.SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state "
            "FROM {} WHERE notification_id > %s AND notification_id <= %s"
        ).format(table)
        order = sql.SQL(" ORDER BY notification_id LIMIT %s")
        return {
            "head": sql.SQL("SELECT coalesce(max(notification_id), 0) FROM {}")
            .format(table)
            .as_bytes(None),
            "read": (read + order).as_bytes(None),
            "read_topics": (read + sql.SQL(" AND topic = ANY(%s)") + order).as_bytes(None),
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
        head: int | None = None,
    ) -> Batch:
        """Up to `limit` events with a position above `after` (and at most `stop`), in order,
        of the given topics (all when empty). `head`: the log's head as the caller just read
        it, to save reading it again."""
        hi = self.head(cursor) if head is None else head
        if stop is not None:
            hi = min(hi, stop)
        if hi <= after:
            return Batch([], after)
        if topics:
            query, params = self._queries["read_topics"], [after, hi, list(topics), limit]
        else:
            query, params = self._queries["read"], [after, hi, limit]
        rows = cursor.execute(query, params).fetchall()
        events = [
            (
                int(row[0]),
                self.mapper.to_domain_event(
                    Notification(
                        id=row[0],
                        originator_id=row[1],
                        originator_version=row[2],
                        topic=row[3],
                        state=bytes(row[4]),
                    )
                ),
            )
            for row in rows
        ]
        upto = events[-1][0] if len(events) == limit else hi
        return Batch(events, upto)
