"""Reading many aggregates in one round trip to the store, for a cart's products.

The library reads one aggregate per query (and with its cache, still one query each to bring
a cached one up to date). A cart of 100 lines would make 100 round trips; these reads make one
for the cached aggregates (and one more for the snapshots of those not cached), decoding the
stored events with the application's own mapper.

Bringing the cache's own aggregates up to date takes the library's fast-forward lock, through
`ledger.eventsourcing_adapter`; tests/test_eventsourcing_adapter.py checks that these reads
equal `repository.get`, which pins the library's table layout read here too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, project_aggregate
from eventsourcing.domain import OriginatorVersionError
from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder
from eventsourcing.utils import retry
from psycopg.sql import SQL, Composed, Identifier

from ledger.eventsourcing_adapter import fast_forwarded
from ledger.storage import StoreUnavailable

A = TypeVar("A")
T = TypeVar("T")


class BulkReader:
    def __init__(self, app: Application[UUID]) -> None:
        self.app = app

    def read_many(
        self, kind: type[A], ids: Iterable[UUID], read: Callable[[A], T]
    ) -> dict[UUID, T]:
        """`read(aggregate)` for each of `ids` that is an aggregate of `kind`, each at least as
        fresh as `repository.get` would give it, in one round trip to the store however many
        they are: one query brings every cached one up to date from the events table (those
        not cached take one more, for their snapshots).

        `read` may be given the cache's own aggregate: it copies out what it needs and changes
        nothing.
        """
        wanted = list(dict.fromkeys(ids))
        recorder = self.app.recorder
        if not wanted:
            return {}
        if not isinstance(recorder, PostgresAggregateRecorder):  # the in-memory store
            found = ((i, _find(self.app, kind, i)) for i in wanted)
            return {i: read(a) for i, a in found if a is not None}
        cache = self.app.repository.cache
        cached: dict[UUID, Any] = {}
        if cache is not None:
            for aggregate_id in wanted:
                with contextlib.suppress(KeyError):
                    cached[aggregate_id] = cache.get(aggregate_id)
        cold = [i for i in wanted if i not in cached]
        snapshots = {s.originator_id: s for s in self._latest_snapshots(cold)}
        after = {i: a.version for i, a in cached.items()}
        after |= {i: snapshots[i].originator_version if i in snapshots else 0 for i in cold}
        events: dict[UUID, list[Any]] = {}
        for e in self._select(recorder, self._events_after_query(recorder), _unnest(after)):
            events.setdefault(e.originator_id, []).append(e)
        read_values: dict[UUID, T] = {}
        for aggregate_id in wanted:
            new = events.get(aggregate_id, [])
            if aggregate_id in cached:
                try:
                    value = self._fast_forward(cached[aggregate_id], new, kind, read)
                except OriginatorVersionError:
                    # The log's events do not follow on from the cached aggregate (cached at
                    # a version the log never committed): read from the log alone instead.
                    value = self._read_afresh(kind, aggregate_id, read)
            else:
                try:
                    value = self._reconstruct(snapshots.get(aggregate_id), new, kind, read)
                except OriginatorVersionError as error:
                    raise StoreUnavailable(
                        f"the log of {aggregate_id} does not read through"
                    ) from error
            if value is not None:
                read_values[aggregate_id] = value[0]
        return read_values

    def _fast_forward(
        self, aggregate: Any, events: list[Any], kind: type[A], read: Callable[[A], T]
    ) -> tuple[T] | None:
        with fast_forwarded(self.app.repository, aggregate, events) as aggregate:
            return (read(aggregate),) if isinstance(aggregate, kind) else None

    def _read_afresh(
        self, kind: type[A], aggregate_id: UUID, read: Callable[[A], T]
    ) -> tuple[T] | None:
        cache = self.app.repository.cache
        if cache is not None:
            with contextlib.suppress(KeyError):
                cache.get(aggregate_id, evict=True)
        try:
            found = _find(self.app, kind, aggregate_id)
        except OriginatorVersionError as error:
            raise StoreUnavailable(f"the log of {aggregate_id} does not read through") from error
        return None if found is None else (read(found),)

    def _reconstruct(
        self, snapshot: Any | None, events: list[Any], kind: type[A], read: Callable[[A], T]
    ) -> tuple[T] | None:
        aggregate = project_aggregate(None, [snapshot, *events] if snapshot else events)
        if aggregate is None:
            return None
        value = (read(aggregate),) if isinstance(aggregate, kind) else None
        # Read first: once cached, another reader may bring it up to date in place.
        if self.app.repository.cache is not None:
            self.app.repository.cache.put(aggregate.id, aggregate)
        return value

    def _latest_snapshots(self, ids: list[UUID]) -> list[Any]:
        store = self.app.snapshots
        if not ids or store is None or not isinstance(store.recorder, PostgresAggregateRecorder):
            return []
        recorder = store.recorder
        query = SQL(
            "SELECT DISTINCT ON (originator_id) originator_id, originator_version, topic, state"
            " FROM {schema}.{table} WHERE originator_id = ANY(%s::{id_type}[])"
            " ORDER BY originator_id, originator_version DESC"
        ).format(**_names(recorder))
        return self._select(recorder, query, [ids])

    @staticmethod
    def _events_after_query(recorder: PostgresAggregateRecorder) -> Composed:
        return SQL(
            "SELECT e.originator_id, e.originator_version, e.topic, e.state"
            " FROM unnest(%s::{id_type}[], %s::bigint[]) AS w(originator_id, after)"
            " JOIN {schema}.{table} AS e"
            " ON e.originator_id = w.originator_id AND e.originator_version > w.after"
            " ORDER BY e.originator_id, e.originator_version"
        ).format(**_names(recorder))

    def _select(
        self, recorder: PostgresAggregateRecorder, query: Composed, params: Sequence[Any]
    ) -> list[Any]:
        """The stored events (or snapshots) `query` selects, decoded as the library does."""

        # The library's own reads retry like this: a connection a database restart broke
        # fails its first statement, and the next attempt takes another.
        @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
        def select() -> list[Any]:
            with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute(query, params, prepare=True)
                return curs.fetchall()

        return [
            self.app.mapper.to_domain_event(
                StoredEvent(
                    originator_id=row["originator_id"],
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(row["state"]),
                )
            )
            for row in select()
        ]


def _find(app: Application[UUID], kind: type[A], aggregate_id: UUID) -> A | None:
    try:
        aggregate: object = app.repository.get(aggregate_id)
    except AggregateNotFoundError:
        return None
    return aggregate if isinstance(aggregate, kind) else None


def _names(recorder: PostgresAggregateRecorder) -> dict[str, Identifier]:
    datastore = recorder.datastore
    return {
        "schema": Identifier(datastore.schema),
        "table": Identifier(recorder.events_table_name),
        "id_type": Identifier(datastore.originator_id_type),
    }


def _unnest(after: dict[UUID, int]) -> list[list[Any]]:
    """`after` as the two arrays the events query unnests: ids, and the version each has."""
    return [list(after), list(after.values())]
