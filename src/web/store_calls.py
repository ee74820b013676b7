"""Calling the store from a request: within a time budget, and not at all while it is down.

The eventsourcing library retries a failing connection ten times, so one request against a
vanished database would otherwise hang for most of a minute. A request gets a budget instead;
past it, or while a recent probe says the store is down, it answers a retryable 503 at once.
Running out of budget while the store answers (a queue of writers on a hot product) is
contention, not an outage: that request answers "busy" and the breaker stays closed.

Bulkheads: store and read-model calls share anyio's default pool of worker threads (40). A call
that waits on Stripe (a webhook's re-fetch, a checkout's new session) runs under its own
limiter instead (`stripe_bound_limiter`), so that a slow or hung Stripe holds none of the
threads catalog, cart and status reads need.
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

from ledger.locks import ConcurrentModification
from ledger.storage import Database, StoreUnavailable

T = TypeVar("T")

REQUEST_BUDGET_SECONDS = 4.0
PROBE_INTERVAL_SECONDS = 0.5
# Calls that wait on Stripe at once while serving requests. Sized for Stripe's latency, not for
# the store's: at 250 ms per Stripe call 256 threads carry about 1,000 calls/s, well past the
# store's own limits, while they cost only memory. (A thread abandoned past its budget gives
# its token back, and ends when the SDK's timeouts give up, within seconds.)
STRIPE_BOUND_CALLS = 256


def stripe_bound_limiter(total: int = STRIPE_BOUND_CALLS) -> anyio.CapacityLimiter:
    """A limiter for the threads of calls that wait on Stripe, apart from the default one.
    Made per app (anyio binds it to the event loop that first uses it)."""
    return anyio.CapacityLimiter(total)


class StoreBreaker:
    """Opens when the store itself stops answering, and lets requests through again once it
    answers. A slow or contended call is not an outage: the breaker opens only when a probe
    (a fresh connection and `SELECT 1`) fails too."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._down = False
        self._probed_at = -PROBE_INTERVAL_SECONDS
        self._lock = threading.Lock()

    @property
    def open(self) -> bool:
        """Whether the store was down when last probed (no I/O: a hint for the fast path)."""
        return self._down

    def is_down(self) -> bool:
        """True while the store is known to be down; re-probes it now and then (blocking)."""
        return self._down and not self._answers()

    def report_failure(self) -> bool:
        """A call failed or ran out of time: opens the breaker if the store does not answer.
        True when it is down."""
        return not self._answers()

    def _answers(self) -> bool:
        """Probes the store, at most once per PROBE_INTERVAL_SECONDS (between probes, the
        last probe's answer stands)."""
        with self._lock:
            now = time.monotonic()
            if now - self._probed_at < PROBE_INTERVAL_SECONDS:
                return not self._down
            self._probed_at = now
        try:
            self.database.check(connect_timeout=1)
            answers = True
        except StoreUnavailable:
            answers = False
        with self._lock:
            self._down = not answers
        return answers


async def call_store(
    breaker: StoreBreaker,
    fn: Callable[..., T],
    *args: Any,
    budget: float = REQUEST_BUDGET_SECONDS,
    limiter: anyio.CapacityLimiter | None = None,
) -> T:
    """Runs a blocking store call in a worker thread, bounded by `budget` seconds; under
    `limiter` when given (a call that waits on Stripe), else in the default pool."""
    if breaker.open and await anyio.to_thread.run_sync(breaker.is_down):
        raise StoreUnavailable("the store is not answering")
    try:
        with anyio.fail_after(budget):
            # The thread is abandoned, not killed, past the budget: it ends on its own when
            # the library gives up, and whatever it was doing commits whole or not at all.
            return await anyio.to_thread.run_sync(
                partial(fn, *args), abandon_on_cancel=True, limiter=limiter
            )
    except TimeoutError:
        if await anyio.to_thread.run_sync(breaker.report_failure):
            raise StoreUnavailable("the store did not answer in time") from None
        raise ConcurrentModification("The records are busy; please retry.") from None
    except (StoreUnavailable, StoreOperationalError, StoreInterfaceError) as error:
        await anyio.to_thread.run_sync(breaker.report_failure)
        raise StoreUnavailable(str(error) or type(error).__name__) from error
