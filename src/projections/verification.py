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
from projections.rebuild import replay
from projections.store import connect
from projections.tracking import read_position, read_version


def verify(database: Database, projection: Projection, *, log: EventLog | None = None) -> list[str]:
    """Differences between the live read model and a fresh replay of the log up to the same
    position (an empty list when they agree). Holds the runner off only for the comparison."""
    log = log or EventLog.of(database)
    name = projection.name
    scratch = "pg_temp"  # session-private tables, gone with the connection
    with connect(database, f"verify:{name}") as conn:
        cur = conn.cursor()
        for table in projection.tables:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(scratch, table)))
        with conn.transaction():
            projection.create_tables(Writer(cur, scratch, projection.tables))
        live = read_position(cur, name)
        if live is None:
            return [f"{name}: not set up (no tracking row)"]
        position = replay(conn, log, projection, scratch, 0, stop=live)
        with conn.transaction(force_rollback=True):
            live = read_position(cur, name, for_update=True)
            assert live is not None
            position = replay(conn, log, projection, scratch, position, stop=live)
            problems = []
            version = read_version(cur, name)
            if version != projection.version:
                problems.append(
                    f"{name}: tables are version {version}, code is {projection.version}"
                )
            for table in projection.tables:
                problems.extend(_compare(cur, table, scratch, f"{name} at position {live}"))
        return problems


def verify_all(
    database: Database, projections: Sequence[Projection] | None = None
) -> dict[str, list[str]]:
    """`verify` for each read model, by name."""
    if projections is None:
        projections = default_projections()
    log = EventLog.of(database)
    return {p.name: verify(database, p, log=log) for p in projections}


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
