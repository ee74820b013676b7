"""One step of a side effect: collect the attempts that ended (or ran out of time), record
what they mean, and start more, first the failed events whose retry is due, then the next
events of the log. The workers (`workers.control`) call it in the side effect's own thread
while this process holds its lock, again whenever an attempt ends (`Attempts.wakes` are the
slot's wake and hurry events: an end is never left waiting) or reaches its deadline.

Each event is handled outside any transaction, in a thread of its own (`side_effects.attempts`),
a bounded number at once, so one hung refund or e-mail holds back no other. The position
recorded never passes an event that was not handled or scheduled for retry: it moves over the
longest run of events from the log that are all finished, and a failed one (its attempt raised,
or ran past its deadline) joins the retry schedule in the transaction that moves the position
past it, so it is neither lost nor in the way of the next. An event handled past the position
when the process dies is handled again (at least once; each side effect is idempotent)."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Protocol

import psycopg

from ledger.storage import Database
from projections.log import EventLog
from projections.rebuild import prepare
from projections.stepping import PositionMoved, Track
from projections.tracking import read_position, set_position
from side_effects import retries
from side_effects.attempts import Attempt, Attempts
from side_effects.base import SideEffect, attempt_timeout_of, concurrency_of, starts_at_head

logger = logging.getLogger(__name__)

# The longest a runner goes without reading its retry schedule when nothing in it is due. Only
# the runner holding the side effect's lock writes it, so this is a safety net, not a poll: it
# is read again at once whenever this runner schedules, clears or starts a retry.
RETRIES_QUIET_SECONDS = 5.0


class EffectTrack(Track, Protocol):
    """A side effect's `Track`, which also says whether to go on, keeps the last error, and
    has the events that wake its thread and cut its lingering short (both set when an
    attempt ends: the next items start at once)."""

    last_error: str | None
    wake: threading.Event
    hurry: threading.Event

    def running(self) -> bool:
        """Whether this process still runs it (not stopping, still holding its lock)."""
        ...


class SideEffectSteps:
    """Steps one side effect through the log, `batch_size` events read at a time and at most
    `batch_size` started past the recorded position; a failed event is tried again after
    `retry_backoff` (first and longest pause, doubling in between). `concurrency` and
    `attempt_timeout` default to the side effect's own (`side_effects.base`)."""

    def __init__(
        self,
        database: Database,
        log: EventLog,
        effect: SideEffect,
        batch_size: int,
        retry_backoff: tuple[float, float],
        *,
        concurrency: int | None = None,
        attempt_timeout: float | None = None,
    ) -> None:
        self.database = database
        self.log = log
        self.effect = effect
        self.batch_size = batch_size
        self.retry_backoff = retry_backoff
        self.attempts = Attempts(
            effect.name,
            effect.handle,
            concurrency or concurrency_of(effect),
            attempt_timeout or attempt_timeout_of(effect),
        )
        # What this process knows past the recorded position `_base` (None: nothing yet):
        # the log read up to `_read_upto`, its events not started yet (`_queue`), and those
        # started, by position in order, with their attempt once it finished (`_started`).
        self._base: int | None = None
        self._read_upto = 0
        self._more = True  # the last read stopped short of the log's head
        self._queue: deque[tuple[int, Any]] = deque()
        self._started: dict[int, Attempt | None] = {}
        # Before this time (time.monotonic()) no retry is due: the schedule is not read
        # again until then, or until this runner (the only one writing it) changes it.
        self._retries_quiet_until = 0.0

    def step(self, conn: psycopg.Connection[Any], track: EffectTrack) -> bool:
        """Records the attempts that finished, starts what it can; True when nothing more can
        start until an attempt ends or something new is recorded (the caller waits on
        `track.wake`, at most until `next_deadline`)."""
        self.attempts.bind(track.wake, track.hurry)
        name = track.name
        cur = conn.cursor()
        position = track.position if track.position >= 0 else read_position(cur, name)
        if position is None:
            at_head = [name] if starts_at_head(self.effect) else []
            prepare(self.database, [], [name], start_at_head=at_head)
            return False
        if self._base != position:  # the first step, or the position was read again
            self._restart(position)
        if not track.running():
            # Stopping: the workers `finish` (record what ended, while the lock is ours);
            # no longer ours: they `halt` (what was not recorded is handled again).
            return False
        moved = self._collect(conn, track, position)
        if moved is None:
            return self._moved(track)
        self._start_retries(cur, name)
        more = self._start_from_log(cur, moved)
        if self._record(conn, track, moved) is None:  # past events of other topics, if any
            return self._moved(track)
        return not more

    def finish(self, conn: psycopg.Connection[Any], track: EffectTrack) -> None:
        """The workers stop while this process still holds the side effect's lock: waits for
        the attempts in flight (each until its deadline at most) and records what they did,
        so that a restart does not do it again; then `halt`."""
        try:
            # A position not known yet (-1) is the one this runner read as its base; recording
            # checks it is still the recorded one.
            if self._base is not None and track.position in (-1, self._base):
                self.attempts.settle()
                if self._collect(conn, track, self._base) is None:
                    track.moved()
        finally:
            self.halt()

    def next_deadline(self) -> float | None:
        """When the earliest attempt in flight runs out of time (time.monotonic()), if any:
        the workers step again then, to count it failed and free its place."""
        return self.attempts.next_deadline()

    def halt(self) -> None:
        """This process stops running the side effect (stopping, or its lock lost): waits for
        the attempts in flight (each until its deadline at most), and forgets what it knew
        past the recorded position, so the next step starts from what is recorded."""
        self.attempts.drain()
        self._base = None
        self._queue.clear()
        self._started.clear()

    # ---- recording -----------------------------------------------------------------------

    def _collect(
        self, conn: psycopg.Connection[Any], track: EffectTrack, position: int
    ) -> int | None:
        """Records the attempts that ended or ran out of time: a retried event's in the
        retry schedule at once, a new event's with the position (`_record`). The new
        position; None when it moved elsewhere."""
        cur = conn.cursor()
        for attempt in self.attempts.finished():
            if attempt.error is not None:
                track.last_error = attempt.error
            if attempt.from_log:
                if attempt.position in self._started:
                    self._started[attempt.position] = attempt
            elif attempt.error is None:
                retries.done(cur, track.name, attempt.position)
                self._retries_quiet_until = 0.0
            else:
                assert attempt.retried is not None
                failures = attempt.retried + 1
                self._schedule(cur, track.name, attempt.position, failures, attempt.error)
        return self._record(conn, track, position)

    def _record(
        self, conn: psycopg.Connection[Any], track: EffectTrack, position: int
    ) -> int | None:
        """Moves the position over the finished run at the front of what was started (and
        over the events of other topics after them, once nothing read is left), scheduling
        the failed ones in the same transaction. The new position; None when it moved
        elsewhere."""
        finished: list[Attempt] = []
        for attempt in self._started.values():  # in position order
            if attempt is None:
                break
            finished.append(attempt)
        target = finished[-1].position if finished else position
        if not self._queue and len(finished) == len(self._started):
            target = max(target, self._read_upto)  # every event read is handled
        if target <= position:
            return position
        cur = conn.cursor()
        try:
            with conn.transaction():
                for attempt in finished:
                    if attempt.error is not None:
                        self._schedule(cur, track.name, attempt.position, 1, attempt.error)
                if not set_position(cur, track.name, target, expected=position):
                    raise PositionMoved()
        except PositionMoved:
            return None
        for attempt in finished:
            del self._started[attempt.position]
        self._base = target
        track.advance(target)
        return target

    def _moved(self, track: EffectTrack) -> bool:
        self.halt()
        return track.moved()

    def _restart(self, position: int) -> None:
        self.halt()
        self._retries_quiet_until = 0.0
        self._base = position
        self._read_upto = position
        self._more = True

    # ---- starting ------------------------------------------------------------------------

    def _start_retries(self, cur: psycopg.Cursor[Any], name: str) -> None:
        """Starts the failed events whose retry is due, leaving one place to the log's new
        events (a side effect that runs one at a time excepted) so that retries, hung ones
        among them, never hold those back."""
        limit = self.attempts.limit
        room = min(self.attempts.free(), max(1, limit - 1) - self._retries_live())
        if room <= 0 or time.monotonic() < self._retries_quiet_until:
            return
        # Those still running show as due too (their row changes when they end): ask for more.
        due, wait = retries.due(cur, name, room + 2 * limit)
        if not due:
            # Nothing due: read the schedule again when the next is, or after a while anyway.
            quiet = RETRIES_QUIET_SECONDS if wait is None else min(wait, RETRIES_QUIET_SECONDS)
            self._retries_quiet_until = time.monotonic() + quiet
        for position, failures in due:
            if room <= 0:
                break
            if self.attempts.busy(position):
                continue  # under way (or abandoned and not ended yet): never two at once
            event = self.log.event_at(cur, position)
            if event is None:  # not in the log (any more): nothing to do
                retries.done(cur, name, position)
                continue
            self.attempts.start(position, event, failures)
            room -= 1

    def _retries_live(self) -> int:
        started = self._started.keys()
        return self.attempts.live() - sum(1 for p in started if self._started[p] is None)

    def _start_from_log(self, cur: psycopg.Cursor[Any], position: int) -> bool:
        """Starts the log's next events while there is room, reading at most one batch; True
        when more could start at once (a full batch read and room left)."""
        read = False
        while self.attempts.free() > 0 and len(self._started) < self.batch_size:
            if not self._queue:
                if read:  # one read a step: the rest when the next step comes
                    break
                batch = self.log.read(
                    cur, max(self._read_upto, position), list(self.effect.topics), self.batch_size
                )
                read = True
                self._more = batch.more
                self._read_upto = max(self._read_upto, batch.upto)
                self._queue.extend(batch.events)
                if not self._queue:
                    break
            event_position, event = self._queue[0]
            if self.attempts.busy(event_position):
                break  # an abandoned attempt on it from before a restart: wait for its end
            self._queue.popleft()
            self._started[event_position] = None
            self.attempts.start(event_position, event, None)
        room = self.attempts.free() > 0 and len(self._started) < self.batch_size
        return read and self._more and room

    def _schedule(
        self, cur: psycopg.Cursor[Any], name: str, position: int, attempts: int, error: str
    ) -> None:
        delay = retries.next_delay(attempts, self.retry_backoff)
        logger.warning(
            "worker %s: the event at position %d failed (attempt %d): %s; trying it again in %.1fs",
            name,
            position,
            attempts,
            error,
            delay,
        )
        retries.schedule(cur, name, position, attempts, delay, error)
        self._retries_quiet_until = 0.0
