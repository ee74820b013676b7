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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from ledger.storage import Database
from projections.base import LIVE_SCHEMA, BatchWriter, Params, Projection, Writer, lock_key
from projections.log import EVENTS_TABLE, Batch, EventLog
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
    target = Target(projection, schema, start, stop)
    replay_together(conn, log, [target], progress=progress, batch=batch)
    return target.position


@dataclass
class Target:
    """A read model being replayed into the tables in `schema`: it has applied the log up to
    `position`, and is to go up to `stop` (None: the log's current end)."""

    projection: Projection
    schema: str
    position: int
    stop: int | None = None

    def wants(self, position: int) -> bool:
        return position > self.position and (self.stop is None or position <= self.stop)


def replay_together(
    conn: psycopg.Connection[Any],
    log: EventLog,
    targets: Sequence[Target],
    *,
    progress: Progress = _quiet,
    batch: int = REPLAY_BATCH,
    reader: psycopg.Connection[Any] | None = None,
) -> None:
    """`replay` for several read models in one pass over the log: each batch is read and
    decoded once, given to each read model whose range it is in, and written with one
    `BatchWriter` per read model (their tables are their own: what one writes, no other
    reads, so each keeps its own order). Moves each target's `position` as far as it got.

    With a `reader` (another connection, autocommit), the log is read on it while the
    previous batch is written on `conn` by a thread: the server applies one batch while this
    process reads and decodes the next (each is still one transaction, in order). Only for
    handlers that write and never read back (`BatchWriter.fetchone` would race the thread)."""
    if not targets:
        return
    writers = [BatchWriter(conn.cursor(), t.schema, t.projection.tables) for t in targets]
    # Every event any of them needs; all of them when one takes every event (the chain).
    topics = (
        []
        if any(not t.projection.topics for t in targets)
        else sorted({topic for t in targets for topic in t.projection.topics})
    )
    stops = [t.stop for t in targets]
    stop = None if None in stops else max(s for s in stops if s is not None)
    position = min(t.position for t in targets)
    cur = (reader or conn).cursor()
    last_report = time.monotonic()

    def write(held: list[list[tuple[bytes, Params]]]) -> None:
        with conn.transaction():
            for writer, statements in zip(writers, held, strict=True):
                writer.send(statements)

    with ThreadPoolExecutor(1, thread_name_prefix="replay-writes") as pool:
        writing: Future[None] | None = None
        while True:
            if reader is None:
                events = _read_and_apply(
                    conn, log, cur, position, topics, batch, stop, targets, writers
                )
            else:
                events = log.read(cur, position, topics, batch, stop, scan=True)
                _apply(events, targets, writers)
                held = [writer.take() for writer in writers]
                if writing is not None:
                    writing.result()  # in order, and at most one batch waiting in memory
                writing = pool.submit(write, held)
            position = events.upto
            for target in targets:
                reached = position if target.stop is None else min(position, target.stop)
                target.position = max(target.position, reached)
            if not events.more:
                break
            if time.monotonic() - last_report >= PROGRESS_EVERY_SECONDS:
                last_report = time.monotonic()
                head = log.head(cur)
                names = ", ".join(t.projection.name for t in targets)
                progress(f"{names}: at position {position} of {head}")
        if writing is not None:
            writing.result()


def _read_and_apply(
    conn: psycopg.Connection[Any],
    log: EventLog,
    cur: psycopg.Cursor[Any],
    position: int,
    topics: Sequence[str],
    batch: int,
    stop: int | None,
    targets: Sequence[Target],
    writers: Sequence[BatchWriter],
) -> Batch:
    """One batch read and written in one transaction, on one connection."""
    with conn.transaction():
        events = log.read(cur, position, topics, batch, stop, scan=True)
        _apply(events, targets, writers)
        for writer in writers:
            writer.flush()
    return events


def _apply(events: Batch, targets: Sequence[Target], writers: Sequence[BatchWriter]) -> None:
    for target, writer in zip(targets, writers, strict=True):
        apply = target.projection.apply
        for event_position, event in events.events:
            if target.wants(event_position):
                apply(writer, event, event_position)


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
