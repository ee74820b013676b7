"""The workers' control: starting and stopping the processors' threads, stepping each one
while this process runs it (`workers.leadership` decides which), and answering who runs what
and how far it has got.

Each processor runs in a thread of its own, with a connection of its own. A notification wakes
the processors at once, and each polls every `poll_interval` seconds anyway, so a lost
notification (library issue #305) delays nothing by more than that. A woken processor that is
not `prompt` lingers (`linger`) before its step, so that the commits of that while go in one
step rather than one step each (a step's read, transaction and tracking update cost about as
much as its events); one that someone waits on (a consistent read, `wait_until_processed`,
or a NOTIFY from a waiter in another process) is hurried and lingers no more. A failed step is
tried again after `backoff`. How a step goes is the processor's own: a read model's batch in
one transaction (`projections.stepping`), a side effect's events several at once, each in a
thread of its own with its deadline, and their retry schedule (`side_effects.stepping`: an
attempt that ends wakes and hurries the processor's thread); a periodic task is run every
`interval` seconds.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError as LibraryInterfaceError
from eventsourcing.persistence import OperationalError as LibraryOperationalError
from psycopg_pool import PoolTimeout

from ledger.storage import Database, StoreUnavailable
from projections.base import Projection
from projections.log import EventLog
from projections.rebuild import prepare, rebuild
from projections.stepping import ProjectionSteps
from projections.store import ReadStore, connect, poll_tracking
from side_effects.base import PeriodicTask, SideEffect, starts_at_head
from side_effects.stepping import SideEffectSteps
from workers.leadership import Leadership, Share, close_quietly
from workers.slots import Processor, Slot

logger = logging.getLogger(__name__)

_UNAVAILABLE = (
    psycopg.OperationalError,
    PoolTimeout,
    StoreUnavailable,
    LibraryOperationalError,
    LibraryInterfaceError,
)

# The longest pause before trying again after the store stopped answering: a reconnect is a
# refused or read-only connection attempt, cheap, and the contract gives the service 1 s after a
# restart and 5 s after a failover to be back (the general backoff grows to 10 s).
UNAVAILABLE_PAUSE_SECONDS = 0.5

# While waiting for its own runner, a waiter re-reads the tracking table this often anyway
# (a rebuild in another process may have moved the position).
WAITER_DB_CHECK = 0.25

# How long a woken processor that need not be prompt gathers commits before its step: at a
# commit every few milliseconds, one step instead of dozens. Nothing waits on it unnoticed (a
# waiter hurries it), and a side effect starts its items this much later at most.
LINGER_SECONDS = 0.1


def is_prompt(processor: object) -> bool:
    """Whether a processor steps as soon as it is woken (its class says `prompt = True`: the
    order status the webhook waits on), rather than lingering to gather more commits."""
    return getattr(processor, "prompt", False) is True


class Workers:
    """Runs processors in background threads: `start()`, `stop()`, or `run_forever()`."""

    def __init__(
        self,
        database: Database,
        processors: Sequence[Processor],
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        lock_interval: float = 1.0,
        backoff: tuple[float, float] = (0.05, 10.0),
        retry_backoff: tuple[float, float] = (1.0, 600.0),
        channel: str | None = None,
        linger: float = LINGER_SECONDS,
        share: Share | None = None,
    ) -> None:
        """`poll_interval`: longest wait for new events without a NOTIFY; `lock_interval`: how
        often a processor owned elsewhere is retried; `backoff`: first and longest pause after a
        failed step; `retry_backoff`: first and longest pause before a side effect's failed
        event is tried again; `channel`: the NOTIFY channel to LISTEN on (default: the log's);
        `linger`: how long a woken processor that is not prompt waits for more commits;
        `share`: which processors to claim first when one of several processes started
        together (see `workers.leadership.Share`)."""
        names = [p.name for p in processors]
        if len(set(names)) != len(names):
            raise ValueError(f"processor names must be unique: {names}")
        for p in processors:
            if not isinstance(p, Projection | SideEffect | PeriodicTask):
                raise TypeError(f"{p!r} is not a Projection, a SideEffect or a PeriodicTask")
        self.database = database
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.lock_interval = lock_interval
        self.backoff = backoff
        self.retry_backoff = retry_backoff
        self.linger = linger
        self._channel = channel
        self._share = share
        self._stopping = threading.Event()
        self._slots = {p.name: Slot(p, self._stopping) for p in processors}
        self._leadership: Leadership | None = None
        self._control: threading.Thread | None = None
        self._reads: ReadStore | None = None
        self._reads_lock = threading.Lock()

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Sets up the tables (raises StoreUnavailable when the database does not answer),
        rebuilds any read model whose table layout changed (`version`), and starts the
        threads. Then returns; the processors catch up in the background."""
        if self._control is not None:
            raise RuntimeError("workers already started")
        try:
            log = EventLog.of(self.database)
            processors = [s.processor for s in self._slots.values()]
            projections = [p for p in processors if isinstance(p, Projection)]
            effects = [p.name for p in processors if isinstance(p, SideEffect)]
            at_head = [p.name for p in processors if starts_at_head(p)]
            stale = prepare(self.database, projections, effects, start_at_head=at_head)
            for projection in stale:  # before any query meets tables of another layout
                logger.info("read model %s: tables of another version; rebuilding", projection.name)
                rebuild(self.database, projection, logger.info, log=log, only_if_stale=True)
        except _UNAVAILABLE as error:
            raise StoreUnavailable(f"cannot start the workers: {error}") from error
        for slot in self._slots.values():
            slot.steps = self._steps_of(slot.processor, log)
        self._stopping.clear()
        leadership = self._leadership = Leadership(
            self.database,
            list(self._slots.values()),
            channel=self._channel or log.channel,
            lock_interval=self.lock_interval,
            stopping=self._stopping,
            pause=self._pause,
            share=self._share,
        )
        try:  # take what we can before returning, so `owns()` and waiters know at once
            control: psycopg.Connection[Any] | None = leadership.open()
        except psycopg.Error as error:
            logger.warning("workers: cannot take their locks yet (%s); retrying", error)
            control = None
        for slot in self._slots.values():
            slot.thread = threading.Thread(
                target=self._run_processor, args=(slot,), name=f"worker-{slot.name}", daemon=True
            )
            slot.thread.start()
        self._control = threading.Thread(
            target=leadership.run, args=(control,), name="worker-control", daemon=True
        )
        self._control.start()
        logger.info("workers started: %s", ", ".join(self._slots))

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the processors (a side effect in progress finishes its call), then releases
        their locks so another process can take over. Idempotent."""
        self._stopping.set()
        for slot in self._slots.values():
            slot.hurry.set()
            slot.wake.set()
        deadline = time.monotonic() + timeout
        for slot in self._slots.values():
            if slot.thread is not None:
                slot.thread.join(max(0.0, deadline - time.monotonic()))
                if slot.thread.is_alive():
                    logger.warning("worker %s did not stop within %.1fs", slot.name, timeout)
        if self._leadership is not None:
            self._leadership.stop()
        if self._control is not None:
            self._control.join(max(0.1, deadline - time.monotonic()))
            self._control = None
        with self._reads_lock:
            if self._reads is not None:
                self._reads.close()
                self._reads = None
        for slot in self._slots.values():
            slot.tell_waiters()

    def run_forever(self, done: threading.Event | None = None) -> None:
        """`ledger work`: starts, runs until SIGINT or SIGTERM (or `done` is set), then stops
        cleanly. Signals are only caught when called from the main thread."""
        done = done or threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            done.set()

        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            while not done.wait(1.0):
                pass
        finally:
            self.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)

    def __enter__(self) -> Workers:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- queries -------------------------------------------------------------------------

    def owns(self, name: str) -> bool:
        """Whether this process currently runs processor `name`."""
        slot = self._slots.get(name)
        return slot is not None and slot.owned.is_set() and not self._stopping.is_set()

    def status(self) -> dict[str, dict[str, Any]]:
        """Per processor: whether it runs here, its position, consecutive failures, last error."""
        return {
            s.name: {
                "owned": s.owned.is_set(),
                "position": s.position,
                "failures": s.failures,
                "last_error": s.last_error,
            }
            for s in self._slots.values()
        }

    def wait_until_processed(self, name: str, position: int, timeout: float) -> bool:
        """True once processor `name` has processed every event up to `position`, False after
        `timeout` seconds. Woken by the commit when the processor runs here; otherwise (run by
        another process) it polls the tracking table every few milliseconds."""
        deadline = time.monotonic() + timeout
        slot = self._slots.get(name)
        if slot is not None and slot.position < position:
            slot.hurry.set()  # a lingering processor steps at once
        next_db_check = time.monotonic() + WAITER_DB_CHECK
        while slot is not None and slot.owned.is_set() and not self._stopping.is_set():
            with slot.changed:
                if slot.position >= position:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                slot.changed.wait(min(remaining, WAITER_DB_CHECK))
                if slot.position >= position:
                    return True
            if time.monotonic() >= next_db_check:
                next_db_check = time.monotonic() + WAITER_DB_CHECK
                if (self._store().position(name) or 0) >= position:
                    return True
        remaining = max(0.0, deadline - time.monotonic())
        if self._stopping.is_set():  # our pool is closed: a connection of its own
            with connect(self.database, "wait") as conn:
                return poll_tracking(conn.cursor(), name, position, remaining)
        return self._store().poll_position(name, position, remaining)

    def _store(self) -> ReadStore:
        with self._reads_lock:
            if self._reads is None:
                self._reads = ReadStore(self.database, min_size=1, max_size=4)
            return self._reads

    # ---- the processor threads --------------------------------------------------------------

    def _steps_of(
        self, processor: Processor, log: EventLog
    ) -> ProjectionSteps | SideEffectSteps | None:
        if isinstance(processor, Projection):
            return ProjectionSteps(self.database, log, processor, self.batch_size)
        if isinstance(processor, SideEffect):
            return SideEffectSteps(
                self.database, log, processor, self.batch_size, self.retry_backoff
            )
        return None

    def _run_processor(self, slot: Slot) -> None:
        conn: psycopg.Connection[Any] | None = None
        lingers = self.linger > 0 and not is_prompt(slot.processor)
        while not self._stopping.is_set():
            if not slot.owned.is_set():
                if isinstance(slot.steps, SideEffectSteps):
                    # No longer ours: its attempts in flight end (by their deadline at most)
                    # before another process may take the same events over.
                    slot.steps.halt()
                slot.wake.wait(self.poll_interval)
                slot.wake.clear()
                continue
            try:
                slot.wake.clear()
                processor = slot.processor
                if slot.steps is None and isinstance(processor, PeriodicTask):
                    # A periodic task reads and writes through its own services: a connection
                    # of its own here would sit idle, one of the database's few.
                    processor.run()
                    slot.failures = 0
                    # Its interval, whatever is recorded meanwhile: notifications do not count.
                    self._stopping.wait(processor.interval)
                    continue
                assert slot.steps is not None
                if conn is None:
                    conn = connect(self.database, f"worker:{slot.name}")
                # A waiter that hurried it before now is served by this step: its position
                # was committed before the step reads the log.
                slot.hurry.clear()
                caught_up = slot.steps.step(conn, slot)
                slot.failures = 0
                if caught_up and slot.wake.wait(self._idle(slot.steps)) and lingers:
                    slot.hurry.wait(self.linger)
            except Exception as error:
                slot.failures += 1
                slot.last_error = f"{type(error).__name__}: {error}"
                logger.exception(
                    "worker %s failed (attempt %d); retrying", slot.name, slot.failures
                )
                if conn is not None:
                    close_quietly(conn)
                    conn = None
                self._stopping.wait(self._pause(slot.failures, error))
        if isinstance(slot.steps, SideEffectSteps):
            self._finish(slot, slot.steps, conn)
        if conn is not None:
            close_quietly(conn)

    def _finish(
        self, slot: Slot, steps: SideEffectSteps, conn: psycopg.Connection[Any] | None
    ) -> None:
        """Stopping: a side effect's attempts in flight finish their calls (or their time),
        and what they did is recorded while the lock is still ours (`stop` releases it
        after), so that the next runner does not do it again."""
        if conn is None or not slot.owned.is_set():
            steps.halt()
            return
        try:
            steps.finish(conn, slot)
        except Exception as error:  # recorded or not, the events are handled again at worst
            logger.warning("worker %s: could not record its last attempts: %s", slot.name, error)

    def _idle(self, steps: ProjectionSteps | SideEffectSteps) -> float:
        """How long a caught-up processor waits for its wake event: the poll interval, or
        less when a side effect's attempt in flight reaches its deadline sooner (it is then
        counted failed, and its place goes to the next event)."""
        deadline = steps.next_deadline() if isinstance(steps, SideEffectSteps) else None
        if deadline is None:
            return self.poll_interval
        return max(0.0, min(self.poll_interval, deadline - time.monotonic() + 0.01))

    def _pause(self, failures: int, error: BaseException) -> float:
        first, longest = self.backoff
        if isinstance(error, _UNAVAILABLE):
            # The store went away (a restart, a failover): try again soon, whatever the count.
            longest = min(longest, UNAVAILABLE_PAUSE_SECONDS)
        return float(min(longest, first * 2 ** min(failures - 1, 30)))
