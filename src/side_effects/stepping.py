"""One step of a side effect: first the failed events whose retry is due, then the next events
of the log, each handled outside any transaction and its position recorded after (at least
once). A failed event joins the retry schedule in the transaction that moves the position on
past it, so it is neither lost nor in the way of the next. The workers (`workers.control`) call
it in the side effect's own thread while this process holds its lock."""

from __future__ import annotations

import logging
from typing import Any, Protocol

import psycopg

from ledger.storage import Database
from projections.log import EventLog
from projections.rebuild import prepare
from projections.stepping import PositionMoved, Track
from projections.tracking import read_position, set_position
from side_effects import retries
from side_effects.base import SideEffect, starts_at_head

logger = logging.getLogger(__name__)


class EffectTrack(Track, Protocol):
    """A side effect's `Track`, which also says whether to go on and keeps the last error."""

    last_error: str | None

    def running(self) -> bool:
        """Whether this process still runs it (not stopping, still holding its lock)."""
        ...


class SideEffectSteps:
    """Steps one side effect through the log, `batch_size` events at a time; a failed event is
    tried again after `retry_backoff` (first and longest pause, doubling in between)."""

    def __init__(
        self,
        database: Database,
        log: EventLog,
        effect: SideEffect,
        batch_size: int,
        retry_backoff: tuple[float, float],
    ) -> None:
        self.database = database
        self.log = log
        self.effect = effect
        self.batch_size = batch_size
        self.retry_backoff = retry_backoff

    def step(self, conn: psycopg.Connection[Any], track: EffectTrack) -> bool:
        """Retries what is due, then handles the next batch one event at a time; True when it
        reached the end of the log."""
        name = track.name
        cur = conn.cursor()
        position = track.position if track.position >= 0 else read_position(cur, name)
        if position is None:
            at_head = [name] if starts_at_head(self.effect) else []
            prepare(self.database, [], [name], start_at_head=at_head)
            return False
        for due, attempts in retries.due(cur, name, self.batch_size):
            event = self.log.event_at(cur, due)
            error = None if event is None else self._try(track, event, due)
            if not track.running():
                return False
            if error is None:
                retries.done(cur, name, due)
            else:
                self._schedule(cur, name, due, attempts + 1, error)
        batch = self.log.read(cur, position, list(self.effect.topics), self.batch_size)
        if batch.upto <= position:
            track.advance(position)
            return True
        for event_position, event in batch.events:
            error = self._try(track, event, event_position)
            if not track.running():
                return False  # stopping, or no longer ours: this event is handled again
            try:
                with conn.transaction():  # the item joins the schedule as the position moves on
                    if error is not None:
                        self._schedule(cur, name, event_position, 1, error)
                    if not set_position(cur, name, event_position, expected=position):
                        raise PositionMoved()
            except PositionMoved:
                return track.moved()
            position = event_position
            track.advance(position)
        if batch.upto > position:
            if not set_position(cur, name, batch.upto, expected=position):
                return track.moved()
            position = batch.upto
        track.advance(position)
        return len(batch.events) < self.batch_size

    def _try(self, track: EffectTrack, event: Any, position: int) -> str | None:
        """Handles the event once; the error, or None when it succeeded."""
        try:
            self.effect.handle(event, position)
        except Exception as error:
            track.last_error = f"{type(error).__name__}: {error}"
            return track.last_error
        return None

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
