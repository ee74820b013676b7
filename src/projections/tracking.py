"""The tracking tables: how far through the log each processor has got, and which events of a
side effect wait to be tried again behind its position (its retry schedule, whose queries are
`side_effects.retries`). Both are where a processor stands, set up together by `prepare`."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import psycopg
from psycopg import sql

from projections.base import LIVE_SCHEMA, TRACKING_TABLE

TRACKING = sql.Identifier(LIVE_SCHEMA, TRACKING_TABLE)
RETRIES_TABLE = "side_effect_retries"
RETRIES = sql.Identifier(LIVE_SCHEMA, RETRIES_TABLE)

# The queries every step of a runner makes, composed once: psycopg would compose an
# `sql.Composed` again on every execution, a cost that showed on the write path's profile.
_READ = sql.SQL("SELECT position FROM {} WHERE name = %s").format(TRACKING).as_bytes(None)
_READ_FOR_UPDATE = _READ + b" FOR UPDATE"


@lru_cache(maxsize=4)
def _update_query(with_version: bool, with_expected: bool) -> bytes:
    query = sql.SQL("UPDATE {} SET position = %s, updated_at = now()").format(TRACKING)
    if with_version:
        query += sql.SQL(", version = %s")
    query += sql.SQL(" WHERE name = %s")
    if with_expected:
        query += sql.SQL(" AND position = %s")
    return query.as_bytes(None)


def ensure_tracking_table(cursor: psycopg.Cursor[Any]) -> None:
    cursor.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " name text PRIMARY KEY,"
            " position bigint NOT NULL DEFAULT 0,"
            " version integer NOT NULL DEFAULT 0,"
            " updated_at timestamptz NOT NULL DEFAULT now())"
        ).format(TRACKING)
    )


def ensure_retries_table(cursor: psycopg.Cursor[Any]) -> None:
    cursor.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " name text NOT NULL,"
            " position bigint NOT NULL,"
            " attempts integer NOT NULL,"
            " due_at timestamptz NOT NULL,"
            " last_error text,"
            " PRIMARY KEY (name, position))"
        ).format(RETRIES)
    )


def read_position(
    cursor: psycopg.Cursor[Any], name: str, *, for_update: bool = False
) -> int | None:
    """The processor's position, or None when it has no tracking row (yet)."""
    row = cursor.execute(_READ_FOR_UPDATE if for_update else _READ, (name,)).fetchone()
    return None if row is None else int(row[0])


def read_positions(cursor: psycopg.Cursor[Any]) -> dict[str, int]:
    rows = cursor.execute(sql.SQL("SELECT name, position FROM {}").format(TRACKING)).fetchall()
    return {str(name): int(position) for name, position in rows}


def read_version(cursor: psycopg.Cursor[Any], name: str) -> int | None:
    row = cursor.execute(
        sql.SQL("SELECT version FROM {} WHERE name = %s").format(TRACKING), (name,)
    ).fetchone()
    return None if row is None else int(row[0])


def set_position(
    cursor: psycopg.Cursor[Any],
    name: str,
    position: int,
    *,
    expected: int | None = None,
    version: int | None = None,
) -> bool:
    """Moves the processor to `position` (only from `expected`, when given). Returns whether
    the row changed: False means another runner moved it first."""
    params: list[Any] = [position]
    if version is not None:
        params.append(version)
    params.append(name)
    if expected is not None:
        params.append(expected)
    query = _update_query(version is not None, expected is not None)
    cursor.execute(query, params)
    return cursor.rowcount == 1


def insert_tracking(cursor: psycopg.Cursor[Any], name: str, position: int, version: int) -> None:
    """Starts a processor at `position`, or resets it there when it is already tracked."""
    cursor.execute(
        sql.SQL(
            "INSERT INTO {} (name, position, version) VALUES (%s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position,"
            " version = excluded.version, updated_at = now()"
        ).format(TRACKING),
        (name, position, version),
    )


def start_tracking(cursor: psycopg.Cursor[Any], name: str, position: int = 0) -> None:
    """Starts a processor at `position` (by default the beginning of the log) unless it is
    tracked already."""
    cursor.execute(
        sql.SQL(
            "INSERT INTO {} (name, position) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING"
        ).format(TRACKING),
        (name, position),
    )
