"""Leadership: which processors this process runs. Each processor is run by the one process
that holds its PostgreSQL advisory lock. The locks live on one dedicated "control" session,
which also LISTENs on the log's NOTIFY channel and wakes the processors when events are
recorded. The others retry a lock every `lock_interval` seconds and take over when the
owner's session ends (a process killed with SIGKILL closes its socket and PostgreSQL drops
its locks at once).

Processes started together as one service (`ledger serve --workers N`) each take a `Share`:
the side effects run in the processes after the first, so that the background work is not all
in the first process to start."""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from ledger.storage import Database
from projections.base import Projection, lock_key
from projections.store import HURRY_CHANNEL, connect
from workers.slots import Slot

logger = logging.getLogger(__name__)

# How long a process of a `Share` leaves the others' processors to them, per process: they
# start one after another, each within a second or two of the one before.
PATIENCE_PER_PROCESS = 3.0


@dataclass(frozen=True)
class Share:
    """Process `index` of `count` started together (`ledger serve --workers N`, one after
    another). The read models are run by whichever process claims them first, as always:
    requests wait on them, so they must run from the moment the first process answers, before
    the others are up. The side effects, which no request waits on, are left to the processes
    after the first, in turn, unless still unclaimed once those have had time to start (one
    that did not start, or lost its session, leaves them to the others)."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Share:
        """`"I/N"`, as `ledger serve --workers N` names its children's shares."""
        index, _, count = text.partition("/")
        share = cls(int(index), int(count))
        if not 0 <= share.index < share.count:
            raise ValueError(f"not a share of processors: {text!r}")
        return share

    def prefers(self, side_effect: int) -> bool:
        """Whether the `side_effect`-th side effect (in the workers' order) is this one's."""
        if self.count == 1:
            return True
        return side_effect % (self.count - 1) + 1 == self.index


class Leadership:
    """The control session of one `Workers`: `open()` claims what it can at once, `run()` (its
    thread) keeps the locks, takes over the others and relays notifications until `stop()`."""

    def __init__(
        self,
        database: Database,
        slots: Sequence[Slot],
        *,
        channel: str,
        lock_interval: float,
        stopping: threading.Event,
        pause: Callable[[int, BaseException], float],
        share: Share | None = None,
    ) -> None:
        self.database = database
        self.slots = slots
        self.channel = channel
        self.lock_interval = lock_interval
        self._stopping = stopping  # the processors are stopping: claim nothing more
        self._pause = pause
        self._stop = threading.Event()
        self._share = share
        self._patient_until = (
            time.monotonic() + PATIENCE_PER_PROCESS * share.count if share is not None else 0.0
        )
        # `stop` writes to one end: the control thread, which sleeps on its session's socket
        # until a notification or its next claim, wakes on the other at once (instead of
        # waking every few milliseconds to look, which was most of an idle server's CPU).
        self._waker, self._woken = socket.socketpair()
        self._waker.setblocking(False)

    def stop(self) -> None:
        self._stop.set()
        # Closed: the control thread has ended already. Full: it is being woken already.
        with contextlib.suppress(OSError):
            self._waker.send(b"\0")

    def open(self) -> psycopg.Connection[Any]:
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
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(HURRY_CHANNEL)))
            self._claim(conn)
        except BaseException:
            close_quietly(conn)
            raise
        self._wake_all()  # catch up on anything recorded while not listening
        return conn

    def run(self, conn: psycopg.Connection[Any] | None) -> None:
        failures = 0
        next_claim = time.monotonic() + self.lock_interval
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = self.open()
                    next_claim = time.monotonic() + self.lock_interval
                if time.monotonic() >= next_claim:
                    self._claim(conn)
                    next_claim = time.monotonic() + self.lock_interval
                    failures = 0
                if self._notified(conn, max(0.0, next_claim - time.monotonic())):
                    self._wake_all()
            except Exception as error:
                failures += 1
                self._disown_all(f"lost the control connection: {error}")
                if conn is not None:
                    close_quietly(conn)
                    conn = None
                self._stop.wait(self._pause(failures, error))
        if conn is not None:
            # Released before the session ends: closing returns before the server has ended
            # the session, and a process taking over (or a reader asking whether anyone runs
            # a processor) would find our locks held a moment longer.
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock_all()")
            close_quietly(conn)
        self._disown_all(None)
        self._waker.close()
        self._woken.close()

    def _notified(self, conn: psycopg.Connection[Any], timeout: float) -> bool:
        """Whether events were recorded (a notification came) within `timeout` seconds;
        returns early, False, when `stop` is called."""
        # Those received while the session ran a query (a claim) are held by the driver.
        if self._drain(conn):
            return True
        session = conn.fileno()
        ready, _, _ = select.select([session, self._woken.fileno()], [], [], timeout)
        return session in ready and self._drain(conn)

    def _drain(self, conn: psycopg.Connection[Any]) -> bool:
        """Takes every notification received so far, waiting for none: hurries the processors
        a waiter in another process asked for (`projections.store.HURRY_CHANNEL`); whether
        events were recorded."""
        notified = False
        for notify in conn.notifies(timeout=0):
            if notify.channel != HURRY_CHANNEL:
                notified = True
                continue
            for slot in self.slots:
                if slot.name == notify.payload:
                    slot.hurry.set()
                    slot.wake.set()
        return notified

    def _claim(self, conn: psycopg.Connection[Any]) -> None:
        unowned = [s for s in self._ours() if not s.owned.is_set()]
        if not unowned or self._stopping.is_set():
            conn.execute("SELECT 1")  # proves the session (and so our locks) is still alive
            return
        for slot in unowned:
            row = conn.execute(
                "SELECT pg_try_advisory_lock(%s)", (lock_key("processor", slot.name),)
            ).fetchone()
            if row is not None and row[0]:
                logger.info("worker %s: running it here", slot.name)
                slot.forget_position()  # another process may have moved it on
                slot.owned.set()
                slot.wake.set()

    def _ours(self) -> list[Slot]:
        """The slots this process may claim now: all of them, but while the processes of its
        share start, only the read models and its own side effects."""
        share = self._share
        if share is None or time.monotonic() >= self._patient_until:
            return list(self.slots)
        side_effects = [s for s in self.slots if not isinstance(s.processor, Projection)]
        theirs = {id(s) for at, s in enumerate(side_effects) if not share.prefers(at)}
        return [s for s in self.slots if id(s) not in theirs]

    def _disown_all(self, reason: str | None) -> None:
        for slot in self.slots:
            if slot.owned.is_set():
                if reason:
                    logger.warning("worker %s: stopped here (%s)", slot.name, reason)
                slot.owned.clear()
        for slot in self.slots:
            slot.tell_waiters()  # a waiter on its position finds it is not run here any more

    def _wake_all(self) -> None:
        for slot in self.slots:
            # Another process's: its thread would wake only to find it is not ours.
            if slot.owned.is_set():
                slot.wake.set()


def close_quietly(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.close()
    except Exception:  # the connection is gone already
        logger.debug("closing a broken connection failed", exc_info=True)
