"""Calling the store from a request: within a time budget, riding through a failover.

The eventsourcing library retries a failing connection ten times, so one request against a
vanished database would otherwise hang for most of a minute. A request gets a budget instead.
Running out of budget while the store answers (a queue of writers on a hot product) is
contention, not an outage: that request answers "busy" and the breaker stays closed.

A failover (pg_auto_failover: a planned switchover leaves no primary for about 1-2 s, a dead
primary is replaced in about 5 s) is an outage a request can outlast. A request that finds the
store down, while the outage is younger than RIDE_THROUGH_SECONDS, waits for it (short pauses,
a shared probe) within its own budget instead of answering 503 at once; past that age it is an
outage, not a failover, and requests answer a retryable 503 at once, holding nothing.

What may run again is declared by each caller (`retry=`): a call that failed midway may have
committed (the connection lost after COMMIT was sent: ARCHITECTURE.md measured one such commit
per failover, a third of them in fact committed). Only a call that is safe to repeat, a read or
a decision idempotent by construction, runs again after a failure (IDEMPOTENT); any other runs
at most once (ONCE) and answers 503 when it fails, as before. Waiting for the store before a
call starts is safe for both: nothing has run yet.

Bulkheads: store and read-model calls share anyio's default pool of worker threads (40). A call
that waits on Stripe (a webhook's re-fetch, a checkout's new session) runs in a pool of its own
instead (`stripe_bound_threads`), so that a slow or hung Stripe holds none of the threads
catalog, cart and status reads need. That pool is a plain `concurrent.futures` one: handing a
call to it and back cost about a third of what anyio's worker threads cost (their queue wakes a
thread through a Condition written in Python), on the path every webhook takes.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from eventsourcing.persistence import InterfaceError as StoreInterfaceError
from eventsourcing.persistence import OperationalError as StoreOperationalError

from ledger.locks import ConcurrentModification
from ledger.storage import Database, StoreUnavailable, drop_broken_connections

T = TypeVar("T")

REQUEST_BUDGET_SECONDS = 4.0
# Often enough that a request waiting out a switchover goes on within a fraction of a second of
# the new primary taking writes; one connection attempt per interval per process at most.
PROBE_INTERVAL_SECONDS = 0.2
# How long an outage is taken for a failover in progress, that a request may wait out: a
# pg_auto_failover switchover (~1-2 s) or a dead primary replaced (~5 s with the cluster's
# tuned timeouts). Past it, requests answer 503 at once rather than queue on a store that is away.
RIDE_THROUGH_SECONDS = 6.0
# Pauses between looks at the store while waiting for it: short first (a switchover is brief),
# growing to the probe's own interval.
FIRST_PAUSE_SECONDS = 0.05
LONGEST_PAUSE_SECONDS = PROBE_INTERVAL_SECONDS
# Calls that wait on Stripe at once while serving requests. Sized for Stripe's latency, not for
# the store's: at 250 ms per Stripe call 256 threads carry about 1,000 calls/s, well past the
# store's own limits, while they cost only memory. (A call abandoned past its budget keeps its
# thread until the SDK's timeouts give up, within seconds; one abandoned while it waited for a
# thread never runs.)
STRIPE_BOUND_CALLS = 256


class Retry(enum.Enum):
    """Whether a store call may run again after it failed midway (see the module's docstring).
    Every caller says which, next to the call: a reviewer sees the claim where it is made."""

    ONCE = "once"  # a command whose commit may be in doubt after a failure: never repeated
    IDEMPOTENT = "idempotent"  # a read, or a decision that a repeat cannot apply twice


ONCE = Retry.ONCE
IDEMPOTENT = Retry.IDEMPOTENT


def stripe_bound_threads(total: int = STRIPE_BOUND_CALLS) -> ThreadPoolExecutor:
    """The threads of calls that wait on Stripe, apart from the store's. Made per app; shut
    down with it."""
    return ThreadPoolExecutor(total, thread_name_prefix="stripe-bound")


class StoreBreaker:
    """Opens when the store itself stops answering, and lets requests through again once it
    answers. A slow or contended call is not an outage: the breaker opens only when a probe
    (a fresh connection and `SELECT 1`, to a node that takes writes) fails too."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._down = False
        self._down_since = 0.0
        self._probed_at = -PROBE_INTERVAL_SECONDS
        self._lock = threading.Lock()

    @property
    def open(self) -> bool:
        """Whether the store was down when last probed (no I/O: a hint for the fast path)."""
        return self._down

    def outage_age(self) -> float:
        """Seconds since the probes began to find the store down (0 while it answers)."""
        with self._lock:
            return time.monotonic() - self._down_since if self._down else 0.0

    def is_down(self) -> bool:
        """True while the store is known to be down; re-probes it now and then (blocking)."""
        return self._down and not self._answers()

    def report_failure(self, since: float | None = None) -> bool:
        """A call failed or ran out of time: opens the breaker if the store does not answer.
        True when it is down. `since`: when that call started, the earliest the store may
        have gone (a call that hung for its whole budget tells of an outage that old). Either
        way the pools' idle connections are checked (a restart or a failover broke them all)."""
        drop_broken_connections()
        return not self._answers(since)

    def answers(self) -> bool:
        """Whether the store answers, probed at most once per PROBE_INTERVAL_SECONDS (blocking;
        between probes, the last probe's answer stands)."""
        return self._answers()

    def _answers(self, since: float | None = None) -> bool:
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
            if not answers and not self._down:
                self._down_since = now if since is None else min(now, since)
            self._down = not answers
        return answers


async def call_store(
    breaker: StoreBreaker,
    fn: Callable[..., T],
    *args: Any,
    retry: Retry,
    budget: float = REQUEST_BUDGET_SECONDS,
    threads: Executor | None = None,
) -> T:
    """Runs a blocking store call in a worker thread, bounded by `budget` seconds; in
    `threads` when given (a call that waits on Stripe), else in anyio's default pool. While a
    failover is under way it waits for the store within the budget; after a failure midway the
    call runs again only when `retry` is IDEMPOTENT."""
    deadline = time.monotonic() + budget
    if breaker.open and not await _store_back(breaker, deadline):
        raise StoreUnavailable("the store is not answering")
    pause = FIRST_PAUSE_SECONDS
    while True:
        # Hung or failed, this attempt tells of an outage at least as old as itself.
        failed_since = partial(breaker.report_failure, time.monotonic())
        try:
            # asyncio's own timeout, not anyio's: the same on this loop, without anyio's look
            # for the running async library on every call.
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                # The thread is abandoned, not killed, past the budget: it ends on its own when
                # the library gives up, and whatever it was doing commits whole or not at all.
                return await _in_thread(partial(fn, *args), threads)
        except TimeoutError:
            if await anyio.to_thread.run_sync(failed_since):
                raise StoreUnavailable("the store did not answer in time") from None
            raise ConcurrentModification("The records are busy; please retry.") from None
        except (StoreUnavailable, StoreOperationalError, StoreInterfaceError) as error:
            await anyio.to_thread.run_sync(failed_since)
            # Only a call that is safe to repeat runs again: this one may have committed.
            # A pause first, even when the store answers: a pooled connection to a node just
            # demoted fails at once ("read-only"), and a loop without pauses would spin.
            if (
                retry is not IDEMPOTENT
                or time.monotonic() + pause >= deadline
                or not await _pause_then_store_back(breaker, pause, deadline)
            ):
                raise StoreUnavailable(str(error) or type(error).__name__) from error
            pause = min(pause * 2, LONGEST_PAUSE_SECONDS)


async def _in_thread(call: Callable[[], T], threads: Executor | None) -> T:
    """`call` in a thread of `threads` (else of anyio's default pool), with this task's context
    (the request's log fields, its span); abandoned, not waited for, when the task is
    cancelled."""
    if threads is None:
        return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(threads, context.run, call)


async def _pause_then_store_back(breaker: StoreBreaker, pause: float, deadline: float) -> bool:
    """`_store_back` after `pause` seconds: whether to run the call again."""
    await anyio.sleep(pause)
    return await _store_back(breaker, deadline)


async def _store_back(breaker: StoreBreaker, deadline: float) -> bool:
    """Waits, with short pauses, until the store answers (True) or it is no use: `deadline`
    is near, or the outage has lasted past RIDE_THROUGH_SECONDS (False). Probes at least once;
    the pauses hold no thread, and the probes are shared by every waiting request."""
    pause = FIRST_PAUSE_SECONDS
    while True:
        if await anyio.to_thread.run_sync(breaker.answers):
            return True
        give_up = min(deadline, time.monotonic() + RIDE_THROUGH_SECONDS - breaker.outage_age())
        # Not worth starting again with less than a pause left: the call would not finish.
        if time.monotonic() + pause >= give_up:
            return False
        await anyio.sleep(pause)
        pause = min(pause * 2, LONGEST_PAUSE_SECONDS)
