"""Calling the store from a request: within a time budget, and not at all while it is down.

The eventsourcing library retries a failing connection ten times, so one request against a
vanished database would otherwise hang for most of a minute. A request gets a budget instead;
past it, or while a recent probe says the store is down, it answers a retryable 503 at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from eventsourcing.persistence import InterfaceError as StoreInterfaceError
from eventsourcing.persistence import OperationalError as StoreOperationalError

from ledger.storage import Database, StoreUnavailable

T = TypeVar("T")

REQUEST_BUDGET_SECONDS = 4.0
PROBE_INTERVAL_SECONDS = 0.5


class StoreBreaker:
    """Remembers that the store failed, and lets requests through again once it answers."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._down_since: float | None = None
        self._last_probe = 0.0
        self._lock = threading.Lock()

    def trip(self) -> None:
        with self._lock:
            if self._down_since is None:
                self._down_since = time.monotonic()

    def is_down(self) -> bool:
        """True while the store is known to be down; re-probes it now and then (blocking)."""
        with self._lock:
            if self._down_since is None:
                return False
            now = time.monotonic()
            if now - self._last_probe < PROBE_INTERVAL_SECONDS:
                return True
            self._last_probe = now
        try:
            self.database.check(connect_timeout=1)
        except StoreUnavailable:
            return True
        with self._lock:
            self._down_since = None
        return False


async def call_store(
    breaker: StoreBreaker,
    fn: Callable[..., T],
    *args: Any,
    budget: float = REQUEST_BUDGET_SECONDS,
) -> T:
    """Runs a blocking store call in a worker thread, bounded by `budget` seconds."""
    if await anyio.to_thread.run_sync(breaker.is_down):
        raise StoreUnavailable("the store is not answering")
    try:
        with anyio.fail_after(budget):
            # The thread is abandoned, not killed, past the budget: it ends on its own when
            # the library gives up, and whatever it was doing commits whole or not at all.
            return await anyio.to_thread.run_sync(partial(fn, *args), abandon_on_cancel=True)
    except TimeoutError:
        breaker.trip()
        raise StoreUnavailable("the store did not answer in time") from None
    except (StoreUnavailable, StoreOperationalError, StoreInterfaceError) as error:
        breaker.trip()
        raise StoreUnavailable(str(error) or type(error).__name__) from error
