"""Writers of the same aggregates take turns instead of racing.

Optimistic concurrency alone turns a hot aggregate (the last units of a product in a flash
sale) into a retry storm: every loser replays, decides again and collides again. So a command
first takes a lock on each aggregate it will write, in one fixed order (no deadlocks):

- an in-process lock per aggregate, so the threads of one process queue in memory, and
- a PostgreSQL advisory lock per aggregate, held on a connection of its own until the
  decision is saved, so the processes sharing the database queue too (a process that dies
  drops its locks with its connection).

A command that locks in two steps (its carts, then the items their lines name) takes the
second step's advisory locks on the connection that holds the first's: one connection per
writer, so a burst of writers waiting for the same item cannot take every pooled connection
and leave none for the writer they wait for.

The version check on save stays as the safety net: a writer that holds no lock (or lost its
lock connection) still cannot overwrite a decision, it gets a conflict and decides again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from uuid import UUID

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool, PoolTimeout

from ledger.storage import StoreUnavailable

# How long a command waits for its turn before it gives up with a retryable ConcurrentModification.
WAIT_SECONDS = 4.0
_TOO_LONG = "Other writers held these records for too long; please retry."
# One round trip for all the keys, taken in key order (PostgreSQL evaluates a volatile function
# in the select list after sorting).
_LOCK = "SELECT pg_advisory_lock(k) FROM unnest(%s::bigint[]) AS k ORDER BY k"


class ConcurrentModification(Exception):
    """Other writers kept the records a command needs locked or changing; retry later."""


class AggregateLocks:
    """Locks on aggregates by id: `with locks.held(ids): read, decide, save`."""

    def __init__(
        self,
        open_pool: Callable[[float], ConnectionPool[Any]] | None,
        wait_seconds: float = WAIT_SECONDS,
    ):
        """`open_pool(lock_timeout)`: opens a pool of autocommit connections to the event
        store's database for the advisory locks, on first use (None when the store is not
        PostgreSQL: then only this process's writers queue)."""
        self.open_pool = open_pool
        self.wait_seconds = wait_seconds
        self._pool: ConnectionPool[Any] | None = None
        # The connection holding this thread's advisory locks, while it holds some.
        self._thread = threading.local()
        self._mutex = threading.Lock()
        self._local: dict[int, tuple[threading.Lock, int]] = {}

    @contextmanager
    def held(self, aggregate_ids: Iterable[UUID]) -> Iterator[None]:
        keys = sorted({advisory_lock_key(i) for i in aggregate_ids})
        with ExitStack() as stack:
            for key in keys:
                stack.enter_context(self._local_lock(key))
            pool = self._shared_pool()
            if pool is not None and keys:
                holding: psycopg.Connection[Any] | None = getattr(self._thread, "conn", None)
                if holding is None:
                    stack.enter_context(self._advisory_locks(pool, keys))
                else:
                    stack.enter_context(self._more_advisory_locks(holding, keys))
            yield

    def close(self) -> None:
        with self._mutex:
            pool, self._pool, self.open_pool = self._pool, None, None
        if pool is not None:
            pool.close()

    def _shared_pool(self) -> ConnectionPool[Any] | None:
        with self._mutex:
            if self._pool is None and self.open_pool is not None:
                self._pool = self.open_pool(self.wait_seconds)
            return self._pool

    @contextmanager
    def _local_lock(self, key: int) -> Iterator[None]:
        with self._mutex:
            lock, users = self._local.get(key, (None, 0))
            lock = lock or threading.Lock()
            self._local[key] = (lock, users + 1)
        try:
            if not lock.acquire(timeout=self.wait_seconds):
                raise ConcurrentModification(_TOO_LONG)
            try:
                yield
            finally:
                lock.release()
        finally:
            with self._mutex:
                lock, users = self._local[key]
                if users == 1:
                    del self._local[key]
                else:
                    self._local[key] = (lock, users - 1)

    @contextmanager
    def _advisory_locks(self, pool: ConnectionPool[Any], keys: list[int]) -> Iterator[None]:
        conn = self._locked_connection(pool, keys)
        self._thread.conn = conn
        try:
            yield
        finally:
            self._thread.conn = None
            _release(pool, conn)

    @contextmanager
    def _more_advisory_locks(
        self, conn: psycopg.Connection[Any], keys: list[int]
    ) -> Iterator[None]:
        """Takes `keys` too on the connection holding this thread's locks; releases only them
        (PostgreSQL counts a session's advisory locks, so a key held twice stays held once)."""
        try:
            conn.execute(_LOCK, (keys,))
        except psycopg.errors.LockNotAvailable:
            raise ConcurrentModification(_TOO_LONG) from None
        except psycopg.OperationalError as error:
            raise StoreUnavailable(f"cannot lock the records: {error}") from error
        try:
            yield
        finally:
            try:
                conn.execute("SELECT pg_advisory_unlock(k) FROM unnest(%s::bigint[]) AS k", (keys,))
            except psycopg.Error:
                conn.close()  # its locks go with it; the outer release hands it back

    def _locked_connection(
        self, pool: ConnectionPool[Any], keys: list[int]
    ) -> psycopg.Connection[Any]:
        """A pooled connection holding the locks of `keys`. Connections that a database restart
        broke are handed back (the pool replaces them) and the next one is tried."""
        for _ in range(pool.max_size + 1):
            try:
                conn = pool.getconn(timeout=self.wait_seconds)
            except PoolTimeout as error:
                raise StoreUnavailable(f"no connection for the record locks: {error}") from error
            try:
                conn.execute(_LOCK, (keys,))
                return conn
            except psycopg.errors.LockNotAvailable:
                _release(pool, conn)
                raise ConcurrentModification(_TOO_LONG) from None
            except psycopg.OperationalError as error:
                broken = conn.broken
                _release(pool, conn)
                if not broken:
                    raise StoreUnavailable(f"cannot lock the records: {error}") from error
        raise StoreUnavailable("cannot lock the records: every connection was broken")


def _release(pool: ConnectionPool[Any], conn: psycopg.Connection[Any]) -> None:
    """Releases the connection's advisory locks and hands it back to the pool; a connection
    that cannot unlock is closed, which releases them too (the pool then replaces it)."""
    try:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock_all()")
    except psycopg.Error:
        conn.close()
    pool.putconn(conn)


def advisory_lock_key(aggregate_id: UUID) -> int:
    """The aggregate's advisory-lock key: 64 bits of its (random or hashed) UUID."""
    return int.from_bytes(aggregate_id.bytes[:8], "big", signed=True)
