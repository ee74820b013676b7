"""One step of a read model: the next batch of its events applied, with its new position, in
one transaction. The workers (`workers.control`) call it in the read model's own thread while
this process holds its lock."""

from __future__ import annotations

from typing import Any, Protocol

import psycopg

from ledger.storage import Database
from projections.base import LIVE_SCHEMA, BatchWriter, Projection
from projections.log import EventLog
from projections.rebuild import prepare
from projections.tracking import read_position, set_position


class Track(Protocol):
    """What this process knows of a processor's position (kept by the workers, which wake the
    waiters on it when it moves)."""

    @property
    def name(self) -> str: ...

    # The last position this process knows to be committed; -1 when it must be read again.
    position: int

    def advance(self, position: int) -> None:
        """The position is committed at `position` (or further)."""

    def moved(self) -> bool:
        """Someone else moved the position: forget ours. Returns False (not caught up)."""
        ...


class PositionMoved(Exception):
    """Rolls a step back: its processor's position was not where the step started."""


class ProjectionSteps:
    """Steps one read model through the log, `batch_size` events at a time."""

    def __init__(
        self, database: Database, log: EventLog, projection: Projection, batch_size: int
    ) -> None:
        self.database = database
        self.log = log
        self.projection = projection
        self.batch_size = batch_size

    def step(self, conn: psycopg.Connection[Any], track: Track) -> bool:
        """Applies the next batch; returns True when it reached the end of the log."""
        projection = self.projection
        cur = conn.cursor()
        position = track.position if track.position >= 0 else read_position(cur, track.name)
        if position is None:  # someone removed its tracking row: set it up again
            prepare(self.database, [projection])
            return False
        batch = self.log.read(cur, position, projection.topics, self.batch_size)
        if batch.upto <= position:
            track.advance(position)
            return True
        try:
            with conn.transaction():
                # Moving the position from where we read it (compare-and-set) locks the
                # tracking row first (as a rebuild's swap does), so two runners that both
                # believed they owned the read model (a network partition) cannot both apply
                # the batch: the second finds the position moved and rolls back.
                if not set_position(cur, track.name, batch.upto, expected=position):
                    raise PositionMoved()
                # Held back and sent together: a run of one statement (a link of the hash
                # chain, a row of an order's history per event) goes as one executemany or
                # COPY, each statement converted once instead of once per event; the rest
                # pipelined. An error still rolls the whole step back.
                writer = BatchWriter(cur, LIVE_SCHEMA, projection.tables)
                for event_position, event in batch.events:
                    projection.apply(writer, event, event_position)
                writer.flush()
        except PositionMoved:
            return track.moved()
        track.advance(batch.upto)
        return len(batch.events) < self.batch_size
