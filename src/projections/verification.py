"""Whether a read model equals what a fresh replay of the log produces (`ledger audit verify`
checks every read model this way)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from ledger.storage import Database
from projections.base import LIVE_SCHEMA, Projection, Writer
from projections.log import EventLog
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
    """`verify` for each read model, by name. The fresh replays are made in one pass over the
    log (read and decoded once for all of them), each up to where its live model stood; then
    each is caught up, under its tracking row's lock, and compared."""
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
        cur.execute("SET temp_buffers = '128MB'")
        targets: list[Target] = []
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
            else:
                targets.append(Target(projection, scratch, 0, stop=live))
        # The log read on a second connection, so that the server applies one batch while
        # this process decodes the next.
        with connect(database, "verify-read") as reader:
            replay_together(conn, log, targets, reader=reader)
        for target in targets:
            problems[target.projection.name] = _compare_with_live(conn, log, target)
    return {p.name: problems[p.name] for p in projections}


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
