"""How every command runs: read, decide, save in one commit, holding the locks of what it
writes, and deciding again on fresh state after a version conflict.

The commands (`ledger.commands`) are written on top of this; nothing here knows a rule.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Collection, Iterable
from copy import deepcopy
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate, OriginatorVersionError
from eventsourcing.persistence import IntegrityError, Recording
from eventsourcing.utils import EnvType

from ledger.bulk_reads import BulkReader
from ledger.domain import Cart, InventoryItem, Order
from ledger.domain.errors import DomainError
from ledger.locks import AggregateLocks, ConcurrentModification
from ledger.metrics import VERSION_CONFLICTS
from ledger.storage import LedgerPostgresFactory, StoreUnavailable

T = TypeVar("T")
A = TypeVar("A")

# Writers take turns (see ledger.locks), so a version conflict means a writer without the
# locks changed one of our aggregates between our read and our save. Deciding again on fresh
# state is always safe; the bound keeps a pathological race from spinning forever (it then
# surfaces as a retryable failure).
MAX_ATTEMPTS = 10


class DecidingApplication(Application[UUID]):
    """The store, the aggregate locks and the decide-and-save loop the commands share."""

    def __init__(self, env: EnvType | None = None) -> None:
        super().__init__(env)
        factory = self.factory
        self.locks = AggregateLocks(
            factory.lock_pool if isinstance(factory, LedgerPostgresFactory) else None
        )
        self._bulk = BulkReader(self)
        # Decisions decided again after a version conflict: the safety net at work, which
        # should stay near zero while every writer takes its locks.
        self.version_conflicts = 0

    def close(self) -> None:
        self.locks.close()
        super().close()

    def save(
        self, *objs: Any, handed_over: Collection[Any] = (), **kwargs: Any
    ) -> list[Recording[UUID]]:
        """The library's `save`, then each saved aggregate cached. `handed_over`: those of
        `objs` the caller lets go of once saved (it neither reads nor changes them again)."""
        try:
            recordings = super().save(*objs, **kwargs)
        except BaseException:
            # A commit in doubt (the connection lost after COMMIT was sent) or refused (a
            # version conflict, or versions the log does not hold: `ledger.event_recorder`):
            # what the cache holds of these aggregates is no guide to what the log holds now,
            # so the next read, the decision made again included, takes it from the log.
            self.forget(*(obj.id for obj in objs if isinstance(obj, Aggregate)))
            raise
        # What was just saved is each aggregate's latest version (its writer holds its lock):
        # cached, the next read fast-forwards from it instead of decoding what we just wrote.
        # (The library caches on save only when it does not fast-forward.) A copy, so that
        # what the caller holds and what the cache brings up to date stay apart; but for an
        # aggregate the caller hands over, which nothing else holds (the copies cost a fifth of
        # the CPU of a batch of orders).
        cache = self.repository.cache
        if cache is not None:
            for obj in objs:
                if isinstance(obj, Aggregate):
                    given = any(obj is other for other in handed_over)
                    cache.put(obj.id, obj if given else deepcopy(obj))
        return recordings

    def forget(self, *aggregate_ids: UUID) -> None:
        """Drops these aggregates from the cache: their next read is from the log."""
        cache = self.repository.cache
        if cache is not None:
            for aggregate_id in aggregate_ids:
                with contextlib.suppress(KeyError):
                    cache.get(aggregate_id, evict=True)

    def _find(self, kind: type[A], aggregate_id: UUID, *, to_change: bool = True) -> A | None:
        """The aggregate, or None. `to_change=False`: only to be read, so the cached object
        itself may be returned, not a copy (a deep copy costs more than the rest of a read)."""
        try:
            aggregate: object = self.repository.get(aggregate_id, deepcopy_from_cache=to_change)
        except AggregateNotFoundError:
            return None
        except OriginatorVersionError:
            aggregate = self._read_afresh(aggregate_id)
        if not isinstance(aggregate, kind):
            return None
        return aggregate

    def _read_afresh(self, aggregate_id: UUID) -> object:
        """The aggregate from the log alone, for a cached one that the log's events do not
        follow on from (cached at a version the log never committed, or a read that raced):
        dropped from the cache and read again. A log that cannot be read through is a
        retryable failure, never an error of the request."""
        self.forget(aggregate_id)
        try:
            return self.repository.get(aggregate_id)
        except OriginatorVersionError as error:
            raise StoreUnavailable(f"the log of {aggregate_id} does not read through") from error

    def _decide(self, aggregate_ids: Iterable[UUID], decide: Callable[[], T]) -> T:
        """Runs `decide` (read, decide, save) holding the locks of the aggregates it writes."""
        with self.locks.held(aggregate_ids):
            return self._retrying(decide)

    def _retrying(self, decide: Callable[[], T]) -> T:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return decide()
            except IntegrityError:
                self.version_conflicts += 1
                VERSION_CONFLICTS.inc()
                if attempt == MAX_ATTEMPTS:
                    break
                # Full jitter keeps racing writers from colliding again in lockstep.
                time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
        raise ConcurrentModification("The records kept changing; please retry.")


class Commit:
    """The aggregates one commit reads and changes, each read once, so that several decisions
    in one commit see each other's changes."""

    def __init__(self, app: DecidingApplication) -> None:
        self.app = app
        self.aggregates: dict[UUID, Any] = {}

    def find(self, kind: type[A], aggregate_id: UUID) -> A | None:
        if aggregate_id not in self.aggregates:
            self.aggregates[aggregate_id] = self.app._find(kind, aggregate_id)
        found = self.aggregates[aggregate_id]
        return found if isinstance(found, kind) else None

    def get(self, kind: type[A], aggregate_id: UUID, missing: DomainError) -> A:
        found = self.find(kind, aggregate_id)
        if found is None:
            raise missing
        return found

    def add(self, aggregate: A) -> A:
        assert isinstance(aggregate, Aggregate)
        self.aggregates[aggregate.id] = aggregate
        return aggregate

    def changed(self) -> list[Aggregate]:
        """What the commit changed, orders first: the log then reads as the decision does
        (the order placed, the stock it took, its cart converted)."""
        changed = [a for a in self.aggregates.values() if a is not None and a.pending_events]
        return sorted(changed, key=lambda a: _SAVE_ORDER.get(type(a), len(_SAVE_ORDER)))


_SAVE_ORDER: dict[type[Aggregate], int] = {Order: 0, InventoryItem: 1, Cart: 2}
