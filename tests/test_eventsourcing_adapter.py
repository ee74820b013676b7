"""Pins what `ledger.eventsourcing_adapter` relies on in eventsourcing (checked against 9.5.6):
an upgrade that changes it fails here rather than as a rare race in production."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from ledger.application import Ledger
from ledger.bulk_reads import BulkReader
from ledger.domain import InventoryItem, inventory_item_id
from ledger.eventsourcing_adapter import fast_forwarded, fastforward_turn
from ledger.storage import Database


class Counter(Aggregate):
    def __init__(self) -> None:
        self.count = 0

    @event("Incremented")
    def increment(self) -> None:
        self.count += 1


@pytest.fixture
def app() -> Iterator[Application[UUID]]:
    application: Application[UUID] = Application(env={"AGGREGATE_CACHE_MAXSIZE": "10"})
    try:
        yield application
    finally:
        application.close()


def stale_in_cache(app: Application[UUID], newer: int) -> Counter:
    """A counter cached at version 1 while `newer` more events are stored after it; the
    cache's own object (not the copy `get` hands out)."""
    counter = Counter()
    app.save(counter)
    app.repository.get(counter.id)  # caches it: the library caches on read when it fast-forwards
    # Changed on a copy and saved in one go: a `get` between saves would bring the cache along.
    copy: Counter = app.repository.get(counter.id)
    for _ in range(newer):
        copy.increment()
    app.save(copy)
    assert app.repository.cache is not None
    cached = app.repository.cache.get(counter.id)
    assert isinstance(cached, Counter)
    return cached


def test_get_brings_the_caches_own_object_up_to_date_in_place(app: Application[UUID]) -> None:
    # Why the bulk reads need the library's lock at all: the object they fast-forward is the
    # one `get` changes, not a copy.
    cached = stale_in_cache(app, newer=3)
    assert cached.version == 1
    handed_out: Counter = app.repository.get(cached.id)
    assert app.repository.cache is not None
    assert app.repository.cache.get(cached.id) is cached
    assert handed_out is not cached
    assert (cached.version, cached.count) == (handed_out.version, handed_out.count) == (4, 3)


def test_get_fast_forwards_under_the_lock_the_adapter_takes(app: Application[UUID]) -> None:
    cached = stale_in_cache(app, newer=2)
    with fastforward_turn(app.repository, cached.id):
        # A `get` that skips rather than waits for the lock: it finds it held, so leaves the
        # cached aggregate as it was.
        skipped: Counter = app.repository.get(cached.id, fastforward_skipping=True)
        assert skipped.version == cached.version == 1
    # Given back: the next `get` takes it and brings the aggregate up to date.
    caught_up: Counter = app.repository.get(cached.id, fastforward_skipping=True)
    assert caught_up.version == cached.version == 3


def test_fast_forwarded_equals_a_replay_and_skips_events_a_get_applied_meanwhile(
    app: Application[UUID],
) -> None:
    cached = stale_in_cache(app, newer=4)
    events = list(app.events.get(cached.id, gt=cached.version))
    app.repository.get(cached.id)  # another reader fast-forwards the cache first
    with fast_forwarded(app.repository, cached, events) as aggregate:
        assert aggregate is cached
        replayed: Counter = app.repository.get(cached.id, version=5)  # from the store alone
        assert (aggregate.version, aggregate.count) == (replayed.version, replayed.count) == (5, 4)


def test_fast_forwarded_holds_the_lock_only_inside_its_block(app: Application[UUID]) -> None:
    cached = stale_in_cache(app, newer=1)
    with fast_forwarded(app.repository, cached, []) as aggregate:
        assert aggregate is not None and aggregate.version == 1
        assert app.repository.get(cached.id, fastforward_skipping=True).version == 1
    assert app.repository.get(cached.id, fastforward_skipping=True).version == 2


# ---- against the real store: the bulk reads' view of the library's tables -------------------


def state(item: InventoryItem) -> dict[str, Any]:
    return dict(vars(item))


def test_a_bulk_read_equals_repository_get_for_cached_and_cold_aggregates(
    database: Database, ledger: Ledger
) -> None:
    ledger.put_product("cup", "Cup", 500, "eur", "test")
    ledger.put_product("jug", "Jug", 900, "eur", "test")
    ledger.get_product("cup")  # cached here; the writes below go through another application
    writer = Ledger(env=database.eventsourcing_env())
    try:
        for _ in range(3):
            writer.adjust_stock("cup", 2, None, "test")
        # Past the snapshot interval: a cold read starts from the snapshot table.
        for _ in range(Ledger.SNAPSHOT_INTERVAL + 5):
            writer.adjust_stock("jug", 1, None, "test")
        ids = [inventory_item_id("cup"), inventory_item_id("jug")]
        assert writer.snapshots is not None
        assert list(writer.snapshots.get(ids[1], desc=True, limit=1))
        expected = {i: state(writer.repository.get(i)) for i in ids}
    finally:
        writer.close()
    read = BulkReader(ledger).read_many(InventoryItem, ids, state)
    assert read == expected
    assert read[ids[0]]["on_hand"] == 6
    assert read[ids[1]]["on_hand"] == Ledger.SNAPSHOT_INTERVAL + 5
    # Read again, now from the cache each read left up to date: nothing applied twice.
    assert BulkReader(ledger).read_many(InventoryItem, ids, state) == expected
    assert {i: state(ledger.repository.get(i)) for i in ids} == expected
