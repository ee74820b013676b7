"""Setting read models up, rebuilding them from the whole log, and checking them against it.

A rebuild replays the log into fresh tables in a staging schema while the service keeps serving
and writing, then swaps them in with one transaction that also sets the tracking position:
readers see the old tables or the new ones, never a half-built model. The swap first locks the
projection's tracking row, which is what the runner locks for each of its batches, and catches
the new tables up to the end of the log inside that transaction: no event is lost or applied
twice, whether or not a runner is working on the projection meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

import psycopg
from psycopg import sql

from ledger.storage import Database
from projections.base import LIVE_SCHEMA, Projection, Writer, lock_key
from projections.log import EVENTS_TABLE, EventLog
from projections.read_models import default_projections
from projections.store import connect
from projections.tracking import (
    ensure_retries_table,
    ensure_tracking_table,
    insert_tracking,
    read_position,
    read_version,
    set_position,
    start_tracking,
)

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]
PROGRESS_EVERY_SECONDS = 2.0
REPLAY_BATCH = 2000
SWAP_LOCK_TIMEOUT = "3s"
SWAP_ATTEMPTS = 20


def _quiet(_: str) -> None:
    pass


def prepare(
    database: Database,
    projections: Sequence[Projection],
    side_effects: Sequence[str] = (),
    *,
    start_at_head: Collection[str] = (),
) -> list[Projection]:
    """Creates the tracking table and each projection's live tables when missing (a new read
    model starts empty at position 0 and catches up from the start of the log), and a tracking
    row for each named side effect (new ones start at the beginning of the log, so no event
    is skipped; those also named in `start_at_head` start at the log's current head instead:
    a fresh deployment of customer e-mail must not mail every past customer). Returns the
    projections whose tables were made by another `version` of their code: rebuild those."""
    stale: list[Projection] = []
    with connect(database, "setup") as conn, conn.transaction():
        cur = conn.cursor()
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("setup", "store"),))
        ensure_tracking_table(cur)
        if side_effects:
            ensure_retries_table(cur)
        for projection in projections:
            version = read_version(cur, projection.name)
            if version is None or not _tables_exist(cur, LIVE_SCHEMA, projection.tables):
                for table in projection.tables:
                    cur.execute(
                        sql.SQL("DROP TABLE IF EXISTS {}").format(
                            sql.Identifier(LIVE_SCHEMA, table)
                        )
                    )
                projection.create_tables(Writer(cur, LIVE_SCHEMA, projection.tables))
                insert_tracking(cur, projection.name, 0, projection.version)
            elif version != projection.version:
                stale.append(projection)
        head: int | None = None
        for name in side_effects:
            if name in start_at_head and read_position(cur, name) is None:
                # Under the setup lock, in this transaction: an event committed after the
                # head was read has a higher position, so the effect still gets it.
                head = _log_head(cur) if head is None else head
                start_tracking(cur, name, head)
            else:
                start_tracking(cur, name)
    return stale


def rebuild_all(
    database: Database,
    progress: Progress = _quiet,
    projections: Sequence[Projection] | None = None,
    *,
    batch_size: int = REPLAY_BATCH,
) -> dict[str, int]:
    """Rebuilds every read model (by default all of `projections.default_projections()`);
    returns the position each was rebuilt up to. Safe while the service runs."""
    if projections is None:
        projections = default_projections()
    log = EventLog.of(database)
    return {
        p.name: rebuild(database, p, progress, log=log, batch_size=batch_size) for p in projections
    }


def rebuild(
    database: Database,
    projection: Projection,
    progress: Progress = _quiet,
    *,
    log: EventLog | None = None,
    batch_size: int = REPLAY_BATCH,
    only_if_stale: bool = False,
) -> int:
    """Replays the whole log into fresh tables and swaps them in; returns the position.
    With `only_if_stale`, does nothing when the live tables are already this `version` (once
    it holds the rebuild lock: another process may just have rebuilt them)."""
    log = log or EventLog.of(database)
    prepare(database, [projection])
    name = projection.name
    staging = f"rebuild_{name}"[:63]
    with connect(database, f"rebuild:{name}") as conn:
        cur = conn.cursor()
        key = lock_key("rebuild", name)
        if not _fetch_bool(cur, "SELECT pg_try_advisory_lock(%s)", key):
            progress(f"{name}: waiting for another rebuild of it to finish")
            cur.execute("SET lock_timeout = 0")
            cur.execute("SELECT pg_advisory_lock(%s)", (key,))
            cur.execute("SET lock_timeout = '10s'")
        try:
            if only_if_stale and read_version(cur, name) == projection.version:
                return read_position(cur, name) or 0
            _recreate_schema(cur, staging)
            with conn.transaction():
                projection.create_tables(Writer(cur, staging, projection.tables))
            progress(f"{name}: replaying the log into fresh tables")
            position = replay(
                conn, log, projection, staging, 0, progress=progress, batch=batch_size
            )
            position = _swap(conn, log, projection, staging, position, progress)
        finally:
            with contextlib.suppress(psycopg.Error):
                cur.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(staging))
                )
                cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
    progress(f"{name}: rebuilt up to position {position}")
    return position


def replay(
    conn: psycopg.Connection[Any],
    log: EventLog,
    projection: Projection,
    schema: str,
    start: int,
    *,
    stop: int | None = None,
    progress: Progress = _quiet,
    batch: int = REPLAY_BATCH,
) -> int:
    """Applies the log after `start` (up to `stop`, else its current end) to the projection's
    tables in `schema`, one transaction (or savepoint) per batch; returns the position reached."""
    cur = conn.cursor()
    writer = Writer(cur, schema, projection.tables)
    position = start
    last_report = time.monotonic()
    while True:
        with conn.transaction():
            events = log.read(cur, position, projection.topics, batch, stop)
            # Pipelined, as the runner applies its batches: the statements go out without
            # waiting for each answer (a replay of 100,000 events is otherwise mostly waiting).
            with conn.pipeline():
                for event_position, event in events.events:
                    projection.apply(writer, event, event_position)
        position = events.upto
        if len(events.events) < batch:
            return position
        if time.monotonic() - last_report >= PROGRESS_EVERY_SECONDS:
            last_report = time.monotonic()
            head = log.head(cur)
            progress(f"{projection.name}: at position {position} of {head}")


def _swap(
    conn: psycopg.Connection[Any],
    log: EventLog,
    projection: Projection,
    staging: str,
    position: int,
    progress: Progress,
) -> int:
    cur = conn.cursor()
    name = projection.name
    for attempt in range(1, SWAP_ATTEMPTS + 1):
        try:
            with conn.transaction():
                cur.execute(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'")
                # Waits for the runner's batch in flight, and holds its next one off.
                read_position(cur, name, for_update=True)
                reached = replay(conn, log, projection, staging, position)
                for table in projection.tables:
                    cur.execute(
                        sql.SQL("DROP TABLE IF EXISTS {}").format(
                            sql.Identifier(LIVE_SCHEMA, table)
                        )
                    )
                    cur.execute(
                        sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                            sql.Identifier(staging, table), sql.Identifier(LIVE_SCHEMA)
                        )
                    )
                set_position(cur, name, reached, version=projection.version)
            return reached
        except psycopg.errors.LockNotAvailable:
            progress(f"{name}: swap attempt {attempt} waited too long for locks; retrying")
            # Catch up outside the lock, so the next attempt holds it for less.
            position = replay(conn, log, projection, staging, position)
    raise RuntimeError(f"could not swap the rebuilt {name} tables in; try again")


def _log_head(cur: psycopg.Cursor[Any]) -> int:
    """The log's head, 0 while the events table does not exist yet (a new database)."""
    try:
        with cur.connection.transaction():  # a savepoint: a missing table fails only this
            row = cur.execute(
                sql.SQL("SELECT coalesce(max(notification_id), 0) FROM {}").format(EVENTS_TABLE)
            ).fetchone()
    except psycopg.errors.UndefinedTable:
        return 0
    return 0 if row is None else int(row[0])


def _tables_exist(cur: psycopg.Cursor[Any], schema: str, tables: Sequence[str]) -> bool:
    for table in tables:
        qualified = sql.Identifier(schema, table).as_string(cur)
        row = cur.execute("SELECT to_regclass(%s)", (qualified,)).fetchone()
        if row is None or row[0] is None:
            return False
    return True


def _recreate_schema(cur: psycopg.Cursor[Any], schema: str) -> None:
    ident = sql.Identifier(schema)
    cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident))
    cur.execute(sql.SQL("CREATE SCHEMA {}").format(ident))


def _fetch_bool(cur: psycopg.Cursor[Any], query: str, *params: Any) -> bool:
    row = cur.execute(query, params).fetchone()
    return bool(row and row[0])
