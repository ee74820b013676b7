"""Connections for reading the read models, and waiting for them to catch up with a write."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from ledger.storage import (
    Database,
    transient_store_errors,
)
from projections.base import lock_key
from projections.log import EVENTS_TABLE
from projections.tracking import RETRIES, TRACKING, read_position, read_positions

logger = logging.getLogger(__name__)

# How long a consistent read waits for its read model to catch up before answering anyway.
CONSISTENT_READ_WAIT_SECONDS = 1.0
# A processor seen running elsewhere is taken to still run for this long: a wait on it would
# otherwise ask pg_locks first, every time (another process takes over a dead one's processors
# about a second later anyway, and a wait that finds nobody ends at its timeout).
RUNNING_SEEN_FOR_SECONDS = 1.0
# At most one "are the workers running?" warning per this many seconds.
WARN_EVERY_SECONDS = 10.0
# The NOTIFY channel on which a waiter in one process hurries a processor run by another (the
# payload is its name): a woken processor may be lingering (`workers.control`), and a
# consistent read must not wait that out. The runner's control session LISTENs on it.
HURRY_CHANNEL = "ledger_processor_hurry"
_HURRY = b"SELECT pg_notify('" + HURRY_CHANNEL.encode() + b"', %s)"
# Polling the tracking table from another process: first after 0.5 ms, then backing off to
# this interval (a primary-key read costs ~0.1 ms locally).
MAX_POLL_INTERVAL = 0.005


class LocalWorkers(Protocol):
    """The workers of this process (`workers.Workers`): a wait on a processor they run is woken
    by its commit instead of polling the tracking table."""

    def owns(self, name: str) -> bool: ...
    def wait_until_processed(self, name: str, position: int, timeout: float) -> bool: ...


class ReadStore:
    """A pool of autocommit connections for read-model queries and for waiting on them."""

    def __init__(self, database: Database, *, min_size: int = 1, max_size: int = 10) -> None:
        self.database = database
        self.pool: ConnectionPool[psycopg.Connection[Any]] = database.pool(
            "ledger-reads", min_size=min_size, max_size=max_size
        )
        self._workers: LocalWorkers | None = None
        self._last_warning = -WARN_EVERY_SECONDS
        self._seen_running: dict[str, float] = {}  # processor -> when last seen running

    def wait_on(self, workers: LocalWorkers) -> None:
        """Waits on these workers (of this process, on this database) for the processors they
        run; wired at start-up (`web.bootstrap`), once they exist."""
        self._workers = workers

    def _local_owner(self, name: str) -> LocalWorkers | None:
        workers = self._workers
        return workers if workers is not None and workers.owns(name) else None

    @contextmanager
    def cursor(self) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor on a pooled connection; a store that does not answer raises
        StoreUnavailable (retryable)."""
        with transient_store_errors(), self.pool.connection() as conn, conn.cursor() as cursor:
            yield cursor

    def close(self) -> None:
        self.pool.close()

    def head(self) -> int:
        """The position of the last event in the log."""
        with self.cursor() as cursor:
            return _head(cursor)

    def position(self, name: str) -> int | None:
        with self.cursor() as cursor:
            try:
                return read_position(cursor, name)
            except psycopg.errors.UndefinedTable:
                return None

    def positions(self) -> dict[str, int]:
        """Every processor's position (lag = head() - position), for metrics."""
        with self.cursor() as cursor:
            try:
                return read_positions(cursor)
            except psycopg.errors.UndefinedTable:
                return {}

    def progress(
        self,
        read_models: Sequence[str],
        side_effects: Mapping[str, Sequence[str]],
        *,
        timeout: float,
    ) -> Progress | None:
        """How far the processors are behind the log, for /metrics: one query for the read
        models and one per side effect (`side_effects`: name -> topics, empty for all). None
        when no runner has set the store up yet. Waits at most `timeout` seconds for a
        connection, so a scrape against a database that is down ends soon."""
        with (
            transient_store_errors(),
            self.pool.connection(timeout=timeout) as conn,
            conn.cursor() as cursor,
        ):
            try:
                rows = cursor.execute(_OLDEST_UNAPPLIED, (list(read_models),)).fetchall()
                backlog: dict[str, int] = {}
                retrying: dict[str, int] = {}
                for name, topics in side_effects.items():
                    params = {"name": name, "topics": list(topics)}
                    row = cursor.execute(_SIDE_EFFECT_BACKLOG, params).fetchone()
                    assert row is not None
                    backlog[name], retrying[name] = int(row[0]), int(row[1])
            except psycopg.errors.UndefinedTable:  # no runner has set the store up yet
                return None
        return Progress({str(name): at for name, at in rows}, backlog, retrying)

    def wait_for_position(self, name: str, position: int, timeout: float) -> bool:
        """True once processor `name` has processed every event up to `position`; False when
        `timeout` seconds pass first. Woken directly when this process's workers run it."""
        local = self._local_owner(name)
        if local is not None:
            return local.wait_until_processed(name, position, timeout)
        with self.cursor() as cursor:
            return poll_tracking(cursor, name, position, timeout)

    def poll_position(self, name: str, position: int, timeout: float) -> bool:
        """`wait_for_position` by polling the tracking table only."""
        with self.cursor() as cursor:
            return poll_tracking(cursor, name, position, timeout)

    def wait_for_head(self, names: Iterable[str], timeout: float) -> bool:
        """True once each named read model reflects every event committed before this call:
        call it after a write, before answering, so the writer reads its own write."""
        deadline = time.monotonic() + timeout
        wanted = list(names)
        with self.cursor() as cursor:
            try:
                row = cursor.execute(_HEAD_AND_POSITIONS, (wanted,)).fetchone()
            except psycopg.errors.UndefinedTable:  # no runner has set the store up yet
                row = None
            if row is None:
                row = (_head(cursor), [])
        head, caught_up = int(row[0]), set(row[1] or [])
        behind = [name for name in wanted if name not in caught_up and head > 0]
        return all(
            self.wait_until_applied(name, head, max(0.0, deadline - time.monotonic()))
            for name in behind  # usually none: one query answered it
        )

    def wait_until_applied(self, name: str, position: int, timeout: float) -> bool:
        """`wait_for_position`, but False at once (with a warning) when no process runs the
        processor, and a warning when it times out."""
        if self._local_owner(name) is None and not self.is_running(name):
            self._warn_behind(name, position, 0.0)  # nobody to wait for: answer now
            return False
        if not self.wait_for_position(name, position, timeout):
            self._warn_behind(name, position, timeout)
            return False
        return True

    def is_running(self, name: str) -> bool:
        """Whether some process holds processor `name`'s lock (runs it): right now, or
        `RUNNING_SEEN_FOR_SECONDS` ago."""
        now = time.monotonic()
        if now - self._seen_running.get(name, -RUNNING_SEEN_FOR_SECONDS) < RUNNING_SEEN_FOR_SECONDS:
            return True
        if self._holds_lock(name):
            self._seen_running[name] = now
            return True
        return False

    def _holds_lock(self, name: str) -> bool:
        key = lock_key("processor", name) & (2**64 - 1)
        with self.cursor() as cursor:
            row = cursor.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 1)",
                (key >> 32, key & 0xFFFFFFFF),
            ).fetchone()
        return bool(row and row[0])

    def _warn_behind(self, name: str, head: int, timeout: float) -> None:
        now = time.monotonic()
        if now - self._last_warning < WARN_EVERY_SECONDS:
            return
        self._last_warning = now
        logger.warning(
            "read model %s is behind position %d (waited %.1fs): are the workers running "
            "(`ledger serve` without --no-workers, or `ledger work`)?",
            name,
            head,
            timeout,
        )


@dataclass(frozen=True)
class Progress:
    """The processors against the log at one moment (see `ReadStore.progress`)."""

    # Per read model: when the oldest event it has not applied yet was recorded (None: it
    # has applied the whole log).
    oldest_unapplied: dict[str, datetime | None]
    # Per side effect: events of its topics after its position, not handled yet.
    unhandled: dict[str, int]
    # Per side effect: failed events waiting in its retry schedule.
    retrying: dict[str, int]


def wait_for_position(
    source: Database | ReadStore, name: str, position: int, timeout: float
) -> bool:
    """True once processor `name` has processed every event up to `position` (a notification
    id, e.g. `recordings[-1].notification.id` of a save); False after `timeout` seconds.

    Usable from any process: a store waits on the workers wired into it when they run the
    processor; otherwise this polls the tracking table every few milliseconds (through the
    store's pool, or one connection)."""
    if isinstance(source, ReadStore):
        return source.wait_for_position(name, position, timeout)
    with source.connect(autocommit=True) as conn, conn.cursor() as cursor:
        return poll_tracking(cursor, name, position, timeout)


def connect(database: Database, purpose: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """An autocommit connection named `ledger-<purpose>` in pg_stat_activity, with bounded
    statements and lock waits."""
    conn = database.connect(autocommit=True, application_name=f"ledger-{purpose}"[:63], **kwargs)
    conn.execute("SET statement_timeout = '60s'")
    conn.execute("SET lock_timeout = '10s'")
    return conn


def poll_tracking(cursor: psycopg.Cursor[Any], name: str, position: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    interval = 0.0005
    hurried = False
    while True:
        try:
            current = read_position(cursor, name)
        except psycopg.errors.UndefinedTable:  # no runner has set the store up yet
            current = None
        if current is not None and current >= position:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if not hurried:  # behind: its runner, wherever it is, steps now (an autocommit NOTIFY)
            cursor.execute(_HURRY, (name,))
            hurried = True
        time.sleep(min(interval, remaining))
        interval = min(interval * 2, MAX_POLL_INTERVAL)


_HEAD_AND_POSITIONS = sql.SQL(
    "WITH head AS (SELECT coalesce(max(notification_id), 0) AS position FROM {events})"
    " SELECT head.position, array_agg(t.name) FILTER (WHERE t.position >= head.position)"
    " FROM head LEFT JOIN {tracking} t ON t.name = ANY(%s) GROUP BY head.position"
).format(events=EVENTS_TABLE, tracking=TRACKING)


# Per read model, the recorded time of the first event after its position (a processor with no
# tracking row yet starts at 0). The time is the library's `timestamp` field of the stored
# state, `{"_type_": "datetime_iso", "_data_": "<ISO-8601>"}` (see audit.records.fields_of);
# each lookup is one step down the events' primary key, so this stays cheap however far behind.
_OLDEST_UNAPPLIED = (
    sql.SQL(
        "SELECT n.name, (convert_from(e.state, 'UTF8')::jsonb #>> '{{timestamp,_data_}}')"
        "::timestamptz FROM unnest(%s::text[]) AS n(name)"
        " LEFT JOIN {tracking} t ON t.name = n.name"
        " LEFT JOIN LATERAL (SELECT state FROM {events}"
        " WHERE notification_id > coalesce(t.position, 0) ORDER BY notification_id LIMIT 1) e"
        " ON true"
    )
    .format(events=EVENTS_TABLE, tracking=TRACKING)
    .as_bytes(None)
)
# A side effect's events still to handle (of its topics; all when it names none) and the
# items in its retry schedule.
_SIDE_EFFECT_BACKLOG = (
    sql.SQL(
        "SELECT (SELECT count(*) FROM {events} WHERE notification_id > coalesce("
        "(SELECT position FROM {tracking} WHERE name = %(name)s), 0)"
        " AND (cardinality(%(topics)s::text[]) = 0 OR topic = ANY(%(topics)s::text[]))),"
        " (SELECT count(*) FROM {retries} WHERE name = %(name)s)"
    )
    .format(events=EVENTS_TABLE, tracking=TRACKING, retries=RETRIES)
    .as_bytes(None)
)


def _head(cursor: psycopg.Cursor[Any]) -> int:
    row = cursor.execute(
        sql.SQL("SELECT coalesce(max(notification_id), 0) FROM {}").format(EVENTS_TABLE)
    ).fetchone()
    assert row is not None
    return int(row[0])
