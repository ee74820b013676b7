"""A side effect's attempts in flight: each event handled in a thread of its own, at most
`limit` at once, each with its own deadline. An attempt still running at its deadline counts
as failed (its event joins the retry schedule) and frees its place, so one hung refund or
e-mail holds back no other.

A thread cannot be killed: an abandoned attempt runs on until its call returns (the clients'
own timeouts end it: Stripe's in a few seconds, SMTP's per connect and read). Until then its
event is not started again (`busy`), so a late success and a retry never run side by side,
and at most `limit` abandoned ones are kept before no new attempt starts: the threads stay
bounded even if a client hangs for good.

The threads are kept for the next attempts (and end after `IDLE_SECONDS` unused): what a
client keeps per thread stays warm, as the Stripe SDK's HTTP session (one per thread) and its
kept-alive connection do, instead of a new TLS handshake per refund.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# A thread with no attempt to run for this long ends; the next attempt starts another.
IDLE_SECONDS = 30.0


@dataclass
class Attempt:
    """One try of the side effect on the event at `position`."""

    position: int
    event: Any
    # Failures so far, from the retry schedule; None for an event read from the log.
    retried: int | None
    deadline: float
    error: str | None = None
    done: bool = False
    abandoned: bool = False
    ended: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def from_log(self) -> bool:
        return self.retried is None


class Attempts:
    """Runs `handle(event, position)` for events in threads of their own; the stepping thread
    starts them (`start`), collects those that ended or ran out of time (`finished`), and waits
    for either (`wake`, set on every end, and `next_deadline`)."""

    def __init__(
        self,
        name: str,
        handle: Callable[[Any, int], None],
        limit: int,
        timeout: float,
    ) -> None:
        if limit < 1:
            raise ValueError(f"a side effect needs at least one attempt in flight, not {limit}")
        self.name = name
        self.handle = handle
        self.limit = limit
        self.timeout = timeout
        # Set whenever an attempt ends: the workers' wake and hurry events of the side
        # effect's slot, so that an end steps it again at once (`bind`).
        self.wakes: tuple[threading.Event, ...] = ()
        self._lock = threading.Lock()
        self._live: dict[int, Attempt] = {}  # by position: running, not yet collected
        self._abandoned: dict[int, Attempt] = {}  # past their deadline, thread still running
        # Threads waiting for an attempt, each on its own queue.
        self._idle: list[queue.SimpleQueue[Attempt]] = []

    def bind(self, *wakes: threading.Event) -> None:
        """Ends of attempts set `wakes` (the slot's) from now on."""
        self.wakes = wakes

    # ---- state ---------------------------------------------------------------------------

    def free(self) -> int:
        """How many more attempts may start now."""
        with self._lock:
            live, abandoned = len(self._live), len(self._abandoned)
        return max(0, min(self.limit - live, 2 * self.limit - live - abandoned))

    def busy(self, position: int) -> bool:
        """Whether an attempt on that event still runs (collected or not, abandoned or not)."""
        with self._lock:
            return position in self._live or position in self._abandoned

    def live(self) -> int:
        with self._lock:
            return len(self._live)

    def next_deadline(self) -> float | None:
        """The earliest deadline (time.monotonic()) of an attempt still running, if any."""
        with self._lock:
            pending = [a.deadline for a in self._live.values() if not a.done]
        return min(pending, default=None)

    # ---- starting and collecting ---------------------------------------------------------

    def start(self, position: int, event: Any, retried: int | None) -> None:
        """Starts an attempt on the event at `position` (the caller checked `free` and
        `busy`)."""
        attempt = Attempt(position, event, retried, time.monotonic() + self.timeout)
        with self._lock:
            self._live[position] = attempt
            jobs = self._idle.pop() if self._idle else None
        if jobs is None:
            jobs = queue.SimpleQueue()
            threading.Thread(
                target=self._serve,
                args=(jobs,),
                name=f"effect-{self.name}",
                daemon=True,  # an abandoned attempt must not keep the process alive
            ).start()
        jobs.put(attempt)

    def finished(self, now: float | None = None) -> list[Attempt]:
        """The attempts that ended, and those past their deadline (failed with a timeout,
        abandoned), oldest position first; each is returned once."""
        now = time.monotonic() if now is None else now
        out: list[Attempt] = []
        with self._lock:
            for position, attempt in list(self._live.items()):
                if attempt.done:
                    out.append(self._live.pop(position))
                elif attempt.deadline <= now:
                    attempt.abandoned = True
                    attempt.error = _timed_out(self.timeout)
                    self._abandoned[position] = self._live.pop(position)
                    out.append(attempt)
        return sorted(out, key=lambda a: a.position)

    def settle(self) -> None:
        """Waits for the attempts in flight to end or reach their deadline: afterwards
        `finished` returns every one of them (those past their deadline as failed)."""
        while True:
            now = time.monotonic()
            with self._lock:
                running = [a for a in self._live.values() if not a.done and a.deadline > now]
            if not running:
                return
            first = min(running, key=lambda a: a.deadline)
            first.ended.wait(max(0.0, first.deadline - now))

    def drain(self) -> None:
        """`settle`, then forgets the attempts: the side effect stops here (stopping, or no
        longer ours), and no call it made should outlive its lock longer than its deadline."""
        self.settle()
        self.finished()  # those past their deadline are kept as abandoned until they end
        with self._lock:
            self._live.clear()

    # ---- the attempts' threads ----------------------------------------------------------

    def _serve(self, jobs: queue.SimpleQueue[Attempt]) -> None:
        """One thread: runs the attempts given on `jobs`, one after another, waiting idle
        in between; ends after IDLE_SECONDS without one."""
        while True:
            try:
                attempt = jobs.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if jobs in self._idle:
                        self._idle.remove(jobs)
                        return
                continue  # taken just now by `start`: its attempt is on the way
            self._run(attempt)
            with self._lock:
                self._idle.append(jobs)
            for wake in self.wakes:  # a place is free (an abandoned attempt's thread too)
                wake.set()

    def _run(self, attempt: Attempt) -> None:
        error: str | None = None
        try:
            self.handle(attempt.event, attempt.position)
        except Exception as failure:
            error = f"{type(failure).__name__}: {failure}"
        with self._lock:
            if attempt.abandoned:  # its failure was recorded at its deadline already
                self._abandoned.pop(attempt.position, None)
            else:
                attempt.error = error
                attempt.done = True
        attempt.ended.set()


def _timed_out(timeout: float) -> str:
    return f"TimeoutError: no answer within {timeout:g}s; abandoned (retried on its own schedule)"


__all__ = ["Attempt", "Attempts"]
