"""Whether a read model equals what a fresh replay of the log produces (`ledger audit verify`
checks every read model this way)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from ledger.storage import Database
from projections.base import LIVE_SCHEMA, REPLAY_EVENTS, Projection, Writer
from projections.log import EVENTS_TABLE, EventLog
from projections.read_models import default_projections
from projections.rebuild import Target, replay_together
from projections.store import connect
from projections.tracking import read_position, read_version


def verify(database: Database, projection: Projection, *, log: EventLog | None = None) -> list[str]:
    """Differences between the live read model and a fresh replay of the log up to the same
    position (an empty list when they agree). Holds the runner off only for the comparison."""
    return verify_all(database, [projection], log=log)[projection.name]


def verify_all(
    database: Database,
    projections: Sequence[Projection] | None = None,
    *,
    log: EventLog | None = None,
) -> dict[str, list[str]]:
    """`verify` for each read model, by name. A read model with a set-based replay
    (`Projection.replay_in_sql`) is rebuilt by it, from the log decoded once by the server for
    all of them; the others are replayed event by event in one pass over the log (read and
    decoded once for all of them). Each replay goes up to where its live model stood, then is
    caught up under its tracking row's lock and compared."""
    if projections is None:
        projections = default_projections()
    log = log or EventLog.of(database)
    scratch = "pg_temp"  # session-private tables, gone with the connection
    problems: dict[str, list[str]] = {}
    with connect(database, "verify") as conn:
        cur = conn.cursor()
        # The scratch copies go with the session: their commits need not wait for the disk,
        # and they fit in the session's own buffers (8 MB by default, a fraction of a long
        # log's read models: past that, every block is written out and read back).
        cur.execute("SET synchronous_commit = off")
        cur.execute("SET temp_buffers = '256MB'")
        targets: list[Target] = []
        set_based: list[Projection] = []
        for projection in projections:
            for table in projection.tables:
                cur.execute(
                    sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(scratch, table))
                )
            with conn.transaction():
                projection.create_tables(Writer(cur, scratch, projection.tables))
            live = read_position(cur, projection.name)
            if live is None:
                problems[projection.name] = [f"{projection.name}: not set up (no tracking row)"]
            elif type(projection).replay_in_sql is not Projection.replay_in_sql:
                set_based.append(projection)
            else:
                targets.append(Target(projection, scratch, 0, stop=live))
        if set_based:
            decoded = _DecodedLog(cur)
            for projection in set_based:
                problems[projection.name] = _replay_in_sql_and_compare(cur, decoded, projection)
        if targets:
            # The log read on a second connection, so that the server applies one batch
            # while this process decodes the next.
            with connect(database, "verify-read") as reader:
                replay_together(conn, log, targets, reader=reader)
        for target in targets:
            problems[target.projection.name] = _compare_with_live(conn, log, target)
    return {p.name: problems[p.name] for p in projections}


class _DecodedLog:
    """The log's events as the server decodes them (`REPLAY_EVENTS`' rows), in a table of the
    session's own, decoded once for every set-based replay."""

    TABLE = sql.Identifier("pg_temp", "replay_log")
    _DECODED = (
        "SELECT notification_id AS position, originator_id AS stream_id, topic,"
        " convert_from(state, 'UTF8')::jsonb AS data FROM {events}"
        " WHERE notification_id > {after} AND notification_id <= {upto}"
    )

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self.cur = cur
        self.upto = 0
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.TABLE))
        cur.execute(
            sql.SQL(
                "CREATE TABLE {} (position bigint PRIMARY KEY, stream_id uuid NOT NULL,"
                " topic text NOT NULL, data jsonb NOT NULL)"
            ).format(self.TABLE)
        )

    def decode(self, position: int) -> None:
        """Decodes the events up to `position` into the table (outside a transaction)."""
        if position > self.upto:
            self.cur.execute(
                sql.SQL("INSERT INTO {} " + self._DECODED).format(
                    self.TABLE,
                    events=EVENTS_TABLE,
                    after=sql.Literal(self.upto),
                    upto=sql.Literal(position),
                )
            )
            self.upto = position
            # Statistics for the replays' plans: without them the planner takes the table
            # for a small one and joins it by nested loops, quadratic in the log's length.
            self.cur.execute(sql.SQL("ANALYZE {}").format(self.TABLE))

    def show(self, position: int) -> None:
        """Makes `REPLAY_EVENTS` the events up to `position`: those decoded, and any after
        them decoded as they are read (the few a live model moved on by meanwhile)."""
        self.cur.execute(
            sql.SQL(
                "CREATE OR REPLACE VIEW {view} AS SELECT * FROM {table}"
                " WHERE position <= {upto} UNION ALL " + self._DECODED
            ).format(
                view=REPLAY_EVENTS,
                table=self.TABLE,
                events=EVENTS_TABLE,
                after=sql.Literal(self.upto),
                upto=sql.Literal(position),
            )
        )


def _replay_in_sql_and_compare(
    cur: psycopg.Cursor[Any], decoded: _DecodedLog, projection: Projection
) -> list[str]:
    """The read model rebuilt by its set-based replay up to its live position, with its
    tracking row locked (the runner waits), and compared."""
    name, scratch = projection.name, "pg_temp"
    decoded.decode(read_position(cur, name) or 0)  # most of it, before the runner waits
    with cur.connection.transaction(force_rollback=True):
        live = read_position(cur, name, for_update=True)
        assert live is not None
        decoded.show(live)
        # Every join in a set-based replay is a join of two sets of events: by hash. The
        # planner cannot know how many rows each step leaves (json fields, DISTINCT ON), and
        # when it guesses one, a nested loop makes the replay quadratic in the log's length.
        # (A nested loop the replay cannot avoid, over an order's own lines, then costs the
        # penalty of a disabled plan: far past the threshold at which the server compiles a
        # query with LLVM, which takes longer than running it.)
        cur.execute("SET LOCAL enable_nestloop = off")
        cur.execute("SET LOCAL jit = off")
        projection.replay_in_sql(Writer(cur, scratch, projection.tables))
        return _compare_tables(cur, projection, scratch, live)


def _compare_with_live(conn: psycopg.Connection[Any], log: EventLog, target: Target) -> list[str]:
    """Catches the replay up to the live model's position, with its tracking row locked (the
    runner waits), and compares every table."""
    projection, scratch, name = target.projection, target.schema, target.projection.name
    cur = conn.cursor()
    with conn.transaction(force_rollback=True):
        live = read_position(cur, name, for_update=True)
        assert live is not None
        target.stop = live
        replay_together(conn, log, [target])
        return _compare_tables(cur, projection, scratch, live)


def _compare_tables(
    cur: psycopg.Cursor[Any], projection: Projection, scratch: str, live: int
) -> list[str]:
    name = projection.name
    problems = []
    version = read_version(cur, name)
    if version != projection.version:
        problems.append(f"{name}: tables are version {version}, code is {projection.version}")
    for table in projection.tables:
        problems.extend(_compare(cur, table, scratch, f"{name} at position {live}"))
    return problems


def _compare(cur: psycopg.Cursor[Any], table: str, scratch: str, where: str) -> list[str]:
    live = sql.Identifier(LIVE_SCHEMA, table)
    fresh = sql.Identifier(scratch, table)
    rows = cur.execute(
        sql.SQL(
            "(SELECT 'live only' AS side, t::text FROM (SELECT * FROM {a} EXCEPT ALL"
            " SELECT * FROM {b}) t) UNION ALL (SELECT 'replay only', t::text FROM"
            " (SELECT * FROM {b} EXCEPT ALL SELECT * FROM {a}) t) LIMIT 20"
        ).format(a=live, b=fresh)
    ).fetchall()
    return [f"{where}: {table}: {side}: {row}" for side, row in rows]
