"""What a side effect is (a worker that acts outside the database on events of the log), and a
periodic task (work done every so often, by one process at a time)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from eventsourcing.utils import get_topic

from projections.base import DomainEvent


def reacts_to(*event_classes: type) -> tuple[str, ...]:
    """A side effect's `topics`, from the domain's event classes (`Order.RefundRequested`).

    The library makes an aggregate's event classes from its `@event` methods at run time, so a
    type checker does not see them: name them with `# type: ignore[attr-defined]`."""
    return tuple(get_topic(event_class) for event_class in event_classes)


@runtime_checkable
class SideEffect(Protocol):
    """A worker that acts on events outside the database (refunds, e-mails).

    `handle` runs outside any transaction; the workers record the position only after it
    returns, so an event may be handled again after a crash (make the effect idempotent, e.g.
    with an idempotency key derived from the event). When it raises, the event joins the retry
    schedule (`side_effects.retries`) and is handled again on its own backoff: none is skipped,
    and none holds back the next. `topics` selects the events it is given (see `reacts_to`);
    empty means every event.

    `handle` is called from several threads at once, on different events (never on one event
    twice at once): up to the optional class attribute `concurrency` (default
    `CONCURRENCY`), each attempt given `attempt_timeout` seconds (default `ATTEMPT_TIMEOUT`),
    after which it counts as failed and its place goes to the next; see `side_effects.attempts`.
    Give the clients it calls timeouts of their own, shorter than that: an attempt abandoned
    at its deadline keeps its thread until its call returns.

    A new side effect starts at the beginning of the log, so no event is skipped (refunds).
    One that sets the optional class attribute `start_at_head = True` starts at the log's
    head instead, when it has no tracking position yet (e-mail: a fresh deployment must not
    mail every past customer); see `starts_at_head`.
    """

    name: str
    topics: Sequence[str]

    def handle(self, event: DomainEvent, position: int) -> None: ...


# Attempts in flight per side effect unless it says otherwise: enough that a few hung calls
# leave room for the rest, few enough not to crowd the database pools the effects share with
# the requests (each attempt may hold one connection at a time).
CONCURRENCY = 4
# Seconds an attempt may run before it counts as failed unless the side effect says otherwise:
# longer than its clients' own timeouts (Stripe's gives up on a call after two tries of 1 s to
# connect and 1.5 s to read, about 5.5 s in all), so that this only catches what they miss.
ATTEMPT_TIMEOUT = 10.0


def starts_at_head(effect: object) -> bool:
    """Whether a side effect without a tracking position yet starts at the log's head."""
    return getattr(effect, "start_at_head", False) is True


def concurrency_of(effect: object) -> int:
    """How many of its events a side effect handles at once (its `concurrency`, at least 1)."""
    return max(1, int(getattr(effect, "concurrency", CONCURRENCY)))


def attempt_timeout_of(effect: object) -> float:
    """Seconds one attempt of a side effect may take before it counts as failed."""
    return float(getattr(effect, "attempt_timeout", ATTEMPT_TIMEOUT))


@runtime_checkable
class PeriodicTask(Protocol):
    """Work the workers do every `interval` seconds, in one process at a time (the resync of
    what Stripe never told us). `run` raising is logged and tried again after a backoff
    (the workers' `backoff`), not a whole interval later."""

    name: str
    interval: float

    def run(self) -> None: ...
