"""Workers: follow the event log for a set of processors (read models and side effects).

Each processor runs in a thread of its own, with a connection of its own, while this process
holds its PostgreSQL advisory lock. The locks live on one dedicated "control" connection, which
also LISTENs on the log's NOTIFY channel: a notification wakes the processors at once, and each
polls every `poll_interval` seconds anyway, so a lost notification (library issue #305) delays
nothing by more than that. When several processes run workers against one database, each
processor is run by exactly one of them: the others retry its lock every `lock_interval`
seconds and take over when the owner's session ends (a process killed with SIGKILL closes its
socket and PostgreSQL drops its locks at once).

- A read model (`Projection`) applies a batch of events and its new position in one transaction
  that starts by moving its tracking row from the position the batch was read at
  (compare-and-set, which locks the row), so even two runners that both believed they owned it
  (a network partition) could not apply an event twice.
- A side effect (`SideEffect`) handles one event at a time outside any transaction; the position
  is recorded (compare-and-set) after `handle` returns. When `handle` raises, the event joins
  the retry schedule (in the same transaction that moves the position on) and the runner goes
  on with the next one: each failed event is tried again on its own exponential backoff, so
  none holds back another, and none is skipped.
- A periodic task (`PeriodicTask`) runs every `interval` seconds.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError as LibraryInterfaceError
from eventsourcing.persistence import OperationalError as LibraryOperationalError
from psycopg import sql
from psycopg_pool import PoolTimeout

from ledger.storage import Database, StoreUnavailable
from projections import retries
from projections.base import (
    LIVE_SCHEMA,
    PeriodicTask,
    Processor,
    Projection,
    SideEffect,
    Writer,
    lock_key,
    starts_at_head,
)
from projections.log import EventLog
from projections.rebuild import prepare, rebuild
from projections.store import (
    ReadStore,
    connect,
    poll_tracking,
    register_local_runner,
    unregister_local_runner,
)
from projections.tracking import read_position, set_position

logger = logging.getLogger(__name__)

_UNAVAILABLE = (
    psycopg.OperationalError,
    PoolTimeout,
    StoreUnavailable,
    LibraryOperationalError,
    LibraryInterfaceError,
)

# The control thread checks for a stop request at least this often (seconds).
CONTROL_TICK = 0.05
# While waiting for its own runner, a waiter re-reads the tracking table this often anyway
# (a rebuild in another process may have moved the position).
WAITER_DB_CHECK = 0.25


@dataclass
class _Slot:
    processor: Processor
    wake: threading.Event = field(default_factory=threading.Event)
    owned: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    position: int = -1  # last position this process knows to be committed (-1: read it)
    failures: int = 0  # consecutive failures of the current step
    last_error: str | None = None

    @property
    def name(self) -> str:
        return self.processor.name


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
    ) -> None:
        """`poll_interval`: longest wait for new events without a NOTIFY; `lock_interval`: how
        often a processor owned elsewhere is retried; `backoff`: first and longest pause after a
        failed step; `retry_backoff`: first and longest pause before a side effect's failed
        event is tried again; `channel`: the NOTIFY channel to LISTEN on (default: the log's)."""
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
        self._channel = channel
        self._slots = {p.name: _Slot(p) for p in processors}
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._control_stop = threading.Event()
        self._control: threading.Thread | None = None
        self._log: EventLog | None = None
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
            self._log = EventLog.of(self.database)
            processors = [s.processor for s in self._slots.values()]
            projections = [p for p in processors if isinstance(p, Projection)]
            effects = [p.name for p in processors if isinstance(p, SideEffect)]
            at_head = [p.name for p in processors if starts_at_head(p)]
            stale = prepare(self.database, projections, effects, start_at_head=at_head)
            for projection in stale:  # before any query meets tables of another layout
                logger.info("read model %s: tables of another version; rebuilding", projection.name)
                rebuild(self.database, projection, logger.info, log=self._log, only_if_stale=True)
        except _UNAVAILABLE as error:
            raise StoreUnavailable(f"cannot start the workers: {error}") from error
        self._stopping.clear()
        self._control_stop.clear()
        try:  # take what we can before returning, so `owns()` and waiters know at once
            control: psycopg.Connection[Any] | None = self._open_control()
        except psycopg.Error as error:
            logger.warning("workers: cannot take their locks yet (%s); retrying", error)
            control = None
        for slot in self._slots.values():
            slot.thread = threading.Thread(
                target=self._run_processor, args=(slot,), name=f"worker-{slot.name}", daemon=True
            )
            slot.thread.start()
        self._control = threading.Thread(
            target=self._run_control, args=(control,), name="worker-control", daemon=True
        )
        self._control.start()
        register_local_runner(self)
        logger.info("workers started: %s", ", ".join(self._slots))

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the processors (a side effect in progress finishes its call), then releases
        their locks so another process can take over. Idempotent."""
        unregister_local_runner(self)
        self._stopping.set()
        for slot in self._slots.values():
            slot.wake.set()
        deadline = time.monotonic() + timeout
        for slot in self._slots.values():
            if slot.thread is not None:
                slot.thread.join(max(0.0, deadline - time.monotonic()))
                if slot.thread.is_alive():
                    logger.warning("worker %s did not stop within %.1fs", slot.name, timeout)
        self._control_stop.set()
        if self._control is not None:
            self._control.join(max(0.1, deadline - time.monotonic()))
            self._control = None
        with self._reads_lock:
            if self._reads is not None:
                self._reads.close()
                self._reads = None
        with self._cond:
            self._cond.notify_all()

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
        with self._cond:
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
        next_db_check = time.monotonic() + WAITER_DB_CHECK
        while slot is not None and slot.owned.is_set() and not self._stopping.is_set():
            with self._cond:
                if slot.position >= position:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, WAITER_DB_CHECK))
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

    # ---- the control thread: locks and wake-ups --------------------------------------------

    def _open_control(self) -> psycopg.Connection[Any]:
        """The session that holds our locks and LISTENs; claims what it can at once."""
        conn = connect(
            self.database,
            "worker-control",
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=3,
            keepalives_count=3,
        )
        try:
            channel = self._channel or self._require_log().channel
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            self._claim(conn)
        except BaseException:
            _close_quietly(conn)
            raise
        self._wake_all()  # catch up on anything recorded while not listening
        return conn

    def _run_control(self, conn: psycopg.Connection[Any] | None) -> None:
        failures = 0
        next_claim = time.monotonic() + self.lock_interval
        while not self._control_stop.is_set():
            try:
                if conn is None:
                    conn = self._open_control()
                    next_claim = time.monotonic() + self.lock_interval
                if time.monotonic() >= next_claim:
                    self._claim(conn)
                    next_claim = time.monotonic() + self.lock_interval
                    failures = 0
                timeout = max(0.0, min(CONTROL_TICK, next_claim - time.monotonic()))
                notified = False
                for _ in conn.notifies(timeout=timeout, stop_after=1):
                    notified = True
                if notified:
                    self._wake_all()
            except Exception as error:
                failures += 1
                self._disown_all(f"lost the control connection: {error}")
                if conn is not None:
                    _close_quietly(conn)
                    conn = None
                self._control_stop.wait(self._pause(failures))
        if conn is not None:
            _close_quietly(conn)  # ends the session: PostgreSQL releases our locks
        self._disown_all(None)

    def _claim(self, conn: psycopg.Connection[Any]) -> None:
        unowned = [s for s in self._slots.values() if not s.owned.is_set()]
        if not unowned or self._stopping.is_set():
            conn.execute("SELECT 1")  # proves the session (and so our locks) is still alive
            return
        for slot in unowned:
            row = conn.execute(
                "SELECT pg_try_advisory_lock(%s)", (lock_key("processor", slot.name),)
            ).fetchone()
            if row is not None and row[0]:
                logger.info("worker %s: running it here", slot.name)
                with self._cond:  # another process may have moved it on: read it first
                    slot.position = -1
                slot.owned.set()
                slot.wake.set()

    def _disown_all(self, reason: str | None) -> None:
        for slot in self._slots.values():
            if slot.owned.is_set():
                if reason:
                    logger.warning("worker %s: stopped here (%s)", slot.name, reason)
                slot.owned.clear()
        with self._cond:
            self._cond.notify_all()

    def _wake_all(self) -> None:
        for slot in self._slots.values():
            slot.wake.set()

    # ---- the processor threads --------------------------------------------------------------

    def _run_processor(self, slot: _Slot) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self._stopping.is_set():
            if not slot.owned.is_set():
                slot.wake.wait(self.poll_interval)
                slot.wake.clear()
                continue
            try:
                if conn is None:
                    conn = connect(self.database, f"worker:{slot.name}")
                slot.wake.clear()
                processor = slot.processor
                if isinstance(processor, Projection):
                    caught_up = self._projection_step(conn, slot, processor)
                elif isinstance(processor, SideEffect):
                    caught_up = self._side_effect_step(conn, slot, processor)
                else:
                    processor.run()
                    slot.failures = 0
                    self._stopping.wait(processor.interval)
                    continue
                slot.failures = 0
                if caught_up:
                    slot.wake.wait(self.poll_interval)
            except Exception as error:
                slot.failures += 1
                slot.last_error = f"{type(error).__name__}: {error}"
                logger.exception(
                    "worker %s failed (attempt %d); retrying", slot.name, slot.failures
                )
                if conn is not None:
                    _close_quietly(conn)
                    conn = None
                self._stopping.wait(self._pause(slot.failures))
        if conn is not None:
            _close_quietly(conn)

    def _projection_step(
        self, conn: psycopg.Connection[Any], slot: _Slot, projection: Projection
    ) -> bool:
        """Applies the next batch; returns True when it reached the end of the log."""
        log = self._require_log()
        cur = conn.cursor()
        position = slot.position if slot.position >= 0 else read_position(cur, slot.name)
        if position is None:  # someone removed its tracking row: set it up again
            prepare(self.database, [projection])
            return False
        batch = log.read(cur, position, projection.topics, self.batch_size)
        if batch.upto <= position:
            self._advance(slot, position)
            return True
        try:
            with conn.transaction():
                # Moving the position from where we read it (compare-and-set) locks the
                # tracking row first (as a rebuild's swap does), so two runners that both
                # believed they owned the read model (a network partition) cannot both apply
                # the batch: the second finds the position moved and rolls back.
                if not set_position(cur, slot.name, batch.upto, expected=position):
                    raise _PositionMoved()
                writer = Writer(cur, LIVE_SCHEMA, projection.tables)
                # Pipelined: the batch's statements go out without waiting for each answer
                # (an error still surfaces, at the end of the block, and rolls it all back).
                with conn.pipeline():
                    for event_position, event in batch.events:
                        projection.apply(writer, event, event_position)
        except _PositionMoved:
            return self._moved(slot)
        self._advance(slot, batch.upto)
        return len(batch.events) < self.batch_size

    def _side_effect_step(
        self, conn: psycopg.Connection[Any], slot: _Slot, effect: SideEffect
    ) -> bool:
        """Retries what is due, then handles the next batch one event at a time; True when it
        reached the end of the log."""
        log = self._require_log()
        cur = conn.cursor()
        position = slot.position if slot.position >= 0 else read_position(cur, slot.name)
        if position is None:
            at_head = [slot.name] if starts_at_head(effect) else []
            prepare(self.database, [], [slot.name], start_at_head=at_head)
            return False
        for due, attempts in retries.due(cur, slot.name, self.batch_size):
            event = log.event_at(cur, due)
            error = None if event is None else self._try(slot, effect, event, due)
            if not self._running(slot):
                return False
            if error is None:
                retries.done(cur, slot.name, due)
            else:
                self._schedule(cur, slot, due, attempts + 1, error)
        batch = log.read(cur, position, list(effect.topics), self.batch_size)
        if batch.upto <= position:
            self._advance(slot, position)
            return True
        for event_position, event in batch.events:
            error = self._try(slot, effect, event, event_position)
            if not self._running(slot):
                return False  # stopping, or no longer ours: this event is handled again
            try:
                with conn.transaction():  # the item joins the schedule as the position moves on
                    if error is not None:
                        self._schedule(cur, slot, event_position, 1, error)
                    if not set_position(cur, slot.name, event_position, expected=position):
                        raise _PositionMoved()
            except _PositionMoved:
                return self._moved(slot)
            position = event_position
            self._advance(slot, position)
        if batch.upto > position:
            if not set_position(cur, slot.name, batch.upto, expected=position):
                return self._moved(slot)
            position = batch.upto
        self._advance(slot, position)
        return len(batch.events) < self.batch_size

    def _moved(self, slot: _Slot) -> bool:
        """Someone else moved the processor's position (another runner, a rebuild's swap):
        forget ours and read it again next step."""
        logger.warning("worker %s: its position moved elsewhere; reading it again", slot.name)
        with self._cond:
            slot.position = -1
        return False

    def _try(self, slot: _Slot, effect: SideEffect, event: Any, position: int) -> str | None:
        """Handles the event once; the error, or None when it succeeded."""
        try:
            effect.handle(event, position)
        except Exception as error:
            slot.last_error = f"{type(error).__name__}: {error}"
            return slot.last_error
        return None

    def _schedule(
        self, cur: psycopg.Cursor[Any], slot: _Slot, position: int, attempts: int, error: str
    ) -> None:
        first, longest = self.retry_backoff
        delay = float(min(longest, first * 2 ** min(attempts - 1, 30)))
        logger.warning(
            "worker %s: the event at position %d failed (attempt %d): %s; trying it again in %.1fs",
            slot.name,
            position,
            attempts,
            error,
            delay,
        )
        retries.schedule(cur, slot.name, position, attempts, delay, error)

    def _running(self, slot: _Slot) -> bool:
        return not self._stopping.is_set() and slot.owned.is_set()

    def _advance(self, slot: _Slot, position: int) -> None:
        with self._cond:
            if position > slot.position:
                slot.position = position
                self._cond.notify_all()

    def _pause(self, failures: int) -> float:
        first, longest = self.backoff
        return float(min(longest, first * 2 ** min(failures - 1, 30)))

    def _require_log(self) -> EventLog:
        if self._log is None:
            raise RuntimeError("workers not started")
        return self._log


class _PositionMoved(Exception):
    """Rolls a batch back: its processor's position was not where the batch started."""


def _close_quietly(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.close()
    except Exception:  # the connection is gone already
        logger.debug("closing a broken connection failed", exc_info=True)
