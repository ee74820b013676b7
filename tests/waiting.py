"""Waiting for facts, never for a fixed time.

A test that must show something did *not* happen waits first for what proves it had its chance
(a worker's position past the log's head, a log line, a count), then asserts. Sleeping for a
while instead is either too short on a loaded machine (the assertion passes before the thing
could happen) or wastes the time everywhere else.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ledger.storage import Database

# How often a condition is checked again. Short: most conditions are cheap local reads.
POLL_SECONDS = 0.02


def wait_until(
    check: Callable[[], bool],
    timeout: float = 10.0,
    what: Callable[[], object] | None = None,
    *,
    interval: float = POLL_SECONDS,
) -> None:
    """Returns once `check()` is true; fails the test after `timeout` seconds, with `what()`
    (the state that was awaited in vain) in the message."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            detail = "" if what is None else f": {what()}"
            raise AssertionError(f"condition not met in {timeout} s{detail}")
        time.sleep(interval)


# Processors (named in the tracking table) behind the log's head, or with a failed event
# waiting in their retry schedule, among those asked about.
_BUSY = (
    "SELECT n.name FROM unnest(%s::text[]) AS n(name)"
    " LEFT JOIN projection_tracking t ON t.name = n.name"
    " WHERE t.position IS NULL"
    " OR t.position < (SELECT coalesce(max(notification_id), 0) FROM ledger_events)"
    " OR EXISTS (SELECT 1 FROM side_effect_retries r WHERE r.name = n.name)"
)


def busy(database: Database, *names: str) -> list[str]:
    """Which of the named processors (read models, side-effect workers) still have work: not
    yet past every event recorded so far, or with a failed event to try again."""
    with database.connect(autocommit=True) as conn:
        rows = conn.execute(_BUSY, (list(names),)).fetchall()
    return sorted(str(row[0]) for row in rows)


def at_rest(database: Database, *names: str) -> bool:
    """Whether each named processor has handled every event recorded so far and has nothing
    waiting to be retried: whatever those events could make it do, it has done, and it will do
    nothing more until something new is recorded."""
    return not busy(database, *names)


def wait_at_rest(database: Database, *names: str, timeout: float = 10.0) -> None:
    """Until `at_rest(database, *names)`."""
    wait_until(
        lambda: at_rest(database, *names), timeout, lambda: f"busy: {busy(database, *names)}"
    )
