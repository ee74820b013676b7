"""One processor's place in this process's workers: its thread, whether this process holds its
lock, and what it knows of its position. Waiters on the position sleep on the slot's own
condition, and a step's commit wakes them (only them: at 32 webhooks waiting on the order
status, a condition shared by every processor woke all 32 at each step of any of nine)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from projections.base import Projection
from projections.stepping import ProjectionSteps
from side_effects.base import PeriodicTask, SideEffect
from side_effects.stepping import SideEffectSteps

logger = logging.getLogger(__name__)

Processor = Projection | SideEffect | PeriodicTask
"""What the workers run: a read model, a side effect or a periodic task."""


@dataclass
class Slot:
    processor: Processor
    stopping: threading.Event  # the workers are stopping
    # Notified when the position moves, when it is disowned and when the workers stop.
    changed: threading.Condition = field(default_factory=threading.Condition)
    # How to step it through the log; None for a periodic task, which is run, not stepped.
    steps: ProjectionSteps | SideEffectSteps | None = None
    wake: threading.Event = field(default_factory=threading.Event)
    # Someone waits on its position (a consistent read, a stop): step now, do not linger.
    hurry: threading.Event = field(default_factory=threading.Event)
    owned: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    position: int = -1  # last position this process knows to be committed (-1: read it)
    failures: int = 0  # consecutive failures of the current step
    last_error: str | None = None

    @property
    def name(self) -> str:
        return self.processor.name

    def running(self) -> bool:
        return not self.stopping.is_set() and self.owned.is_set()

    def advance(self, position: int) -> None:
        with self.changed:
            if position > self.position:
                self.position = position
                self.changed.notify_all()

    def tell_waiters(self) -> None:
        """Wakes whoever waits on the position: to find it disowned, or the workers stopping."""
        with self.changed:
            self.changed.notify_all()

    def forget_position(self) -> None:
        """Another process may have moved it on: read it again before the next step."""
        with self.changed:
            self.position = -1

    def moved(self) -> bool:
        """Someone else moved the processor's position (another runner, a rebuild's swap):
        forget ours and read it again next step."""
        logger.warning("worker %s: its position moved elsewhere; reading it again", self.name)
        self.forget_position()
        return False
