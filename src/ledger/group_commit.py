"""Group commit: requests that arrive together are decided together, in one commit.

On a hot product every order waits for the same locks. Deciding them one commit each pays
the locks, the reads of the shared aggregates and a commit per order, and with many threads
competing for the interpreter every one of those round trips also waits its turn for the GIL.
Here callers queue their requests instead; one of them at a time (the leader) takes every
request waiting, decides them in one batch, and hands the lead to the next waiting caller. So
the cost of the shared part is paid once per batch, and a burst of N orders takes a few
commits instead of N.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeAlias, TypeVar

R = TypeVar("R")
T = TypeVar("T")

# Outcome of one request in a batch: its result, or the exception it raises to its caller.
Decided: TypeAlias = T | BaseException


class _Waiting(Generic[R, T]):
    def __init__(self, request: R) -> None:
        self.request = request
        self.wake = threading.Event()  # set when decided, or when it is this caller's turn to lead
        self.decided = False
        self.outcome: Decided[T] | None = None


class GroupCommit(Generic[R, T]):
    """`submit(request)` blocks until `decide_all` has decided the request in some batch."""

    def __init__(
        self,
        decide_all: Callable[[Sequence[R]], Sequence[Decided[T]]],
        max_batch: int = 100,
    ) -> None:
        """`decide_all(requests)` returns one outcome per request, in order; it does not raise
        for a single request's failure (that request's outcome is the exception)."""
        self.decide_all = decide_all
        self.max_batch = max_batch
        self._mutex = threading.Lock()
        self._queue: list[_Waiting[R, T]] = []
        self._leading = False

    def submit(self, request: R) -> T:
        mine: _Waiting[R, T] = _Waiting(request)
        with self._mutex:
            self._queue.append(mine)
            if not self._leading:
                self._leading = True
                mine.wake.set()
        while True:
            mine.wake.wait()
            if mine.decided:
                if isinstance(mine.outcome, BaseException):
                    raise mine.outcome
                return mine.outcome  # type: ignore[return-value]
            mine.wake.clear()
            self._lead_one_batch()

    def _lead_one_batch(self) -> None:
        with self._mutex:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
        try:
            outcomes: Sequence[Decided[T]] = self.decide_all([w.request for w in batch])
        except BaseException as error:  # every request in the batch learns why
            outcomes = [error] * len(batch)
        finally:
            with self._mutex:
                if self._queue:
                    self._queue[0].wake.set()  # the next caller in line leads
                else:
                    self._leading = False
        for waiting, outcome in zip(batch, outcomes, strict=True):
            waiting.outcome = outcome
            waiting.decided = True
            waiting.wake.set()
