"""The retry schedule of side effects: each event whose effect failed waits for its own next
attempt, on its own exponential backoff, so that one failing effect (a refund Stripe cannot
take now, an e-mail to a broken address) never holds back the ones after it. Kept in the
database beside the tracking table (`projections.tracking.RETRIES_TABLE`), so a restart loses
no pending item."""

from __future__ import annotations

from typing import Any

import psycopg

from projections.base import LIVE_SCHEMA, compose
from projections.tracking import RETRIES_TABLE


def _q(query: str) -> bytes:
    return compose(query, LIVE_SCHEMA, (RETRIES_TABLE,))


_SCHEDULE = _q(
    "INSERT INTO {side_effect_retries} (name, position, attempts, due_at, last_error)"
    " VALUES (%s, %s, %s, now() + make_interval(secs => %s), %s)"
    " ON CONFLICT (name, position) DO UPDATE SET attempts = excluded.attempts,"
    " due_at = excluded.due_at, last_error = excluded.last_error"
)
_DUE = _q(
    "SELECT position, attempts, extract(epoch FROM due_at - now())::float8"
    " FROM {side_effect_retries} WHERE name = %s ORDER BY due_at, position LIMIT %s"
)
_DONE = _q("DELETE FROM {side_effect_retries} WHERE name = %s AND position = %s")


def next_delay(attempts: int, backoff: tuple[float, float]) -> float:
    """Seconds until the next attempt after `attempts` failures: `backoff` is the first and the
    longest pause, doubling in between."""
    first, longest = backoff
    return float(min(longest, first * 2 ** min(attempts - 1, 30)))


def schedule(
    cursor: psycopg.Cursor[Any],
    name: str,
    position: int,
    attempts: int,
    delay: float,
    error: str,
) -> None:
    """The event at `position` failed `attempts` times: try it again in `delay` seconds."""
    cursor.execute(_SCHEDULE, (name, position, attempts, delay, error[:1000]))


def due(
    cursor: psycopg.Cursor[Any], name: str, limit: int
) -> tuple[list[tuple[int, int]], float | None]:
    """(position, attempts so far) of the items due now, the longest-waiting first, and the
    seconds until the next one is due when none is (None when none is scheduled at all)."""
    rows = cursor.execute(_DUE, (name, limit)).fetchall()
    now = [(int(position), int(attempts)) for position, attempts, wait in rows if wait <= 0]
    later = [float(wait) for _, _, wait in rows if wait > 0]
    return now, (later[0] if later and not now else None)


def done(cursor: psycopg.Cursor[Any], name: str, position: int) -> None:
    cursor.execute(_DONE, (name, position))
