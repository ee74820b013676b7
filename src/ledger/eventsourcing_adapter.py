"""The one place the ledger reaches into eventsourcing's private parts.

Checked against eventsourcing 9.5.6. tests/test_eventsourcing_adapter.py pins every library
behaviour relied on here, so an upgrade that changes one of them fails there, loudly, rather
than as a rare race in production.

`Repository._use_fastforward_lock` and `Repository._disuse_fastforward_lock`
    `Repository.get` brings a cached aggregate up to date *in place*: the cache holds one
    object, and `get` projects the events stored since its version onto that object (then
    hands out a copy). It does so holding a per-aggregate lock, taken and given back through
    these two methods, so that two readers never apply the same event twice nor see one half
    applied. The bulk reads (`ledger.bulk_reads`) bring many cached aggregates up to date from
    one query instead of one query each; applying those events to the cache's objects is
    safe only under the very same lock. No public API does this: `get` takes a projector
    function, but always runs its own query for the new events first.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from eventsourcing.application import Repository, project_aggregate


@contextmanager
def fastforward_turn(repository: Repository[UUID], aggregate_id: UUID) -> Iterator[None]:
    """Holds the lock under which `repository.get` fast-forwards the cached `aggregate_id`."""
    lock = repository._use_fastforward_lock(aggregate_id)
    try:
        with lock:
            yield
    finally:
        repository._disuse_fastforward_lock(aggregate_id)


@contextmanager
def fast_forwarded(
    repository: Repository[UUID], cached: Any, events: Sequence[Any]
) -> Iterator[Any | None]:
    """The cache's own aggregate `cached` brought up to date in place with those of `events`
    it has not seen yet, as `repository.get` would; held still (no other reader changes it)
    until the block ends, so read what is needed inside it. `events` are the aggregate's
    stored events after some version at or below its own, in order; a `get` may have applied
    some of them since the caller read its version."""
    with fastforward_turn(repository, cached.id):
        unseen = [e for e in events if e.originator_version > cached.version]
        yield project_aggregate(cached, unseen)
