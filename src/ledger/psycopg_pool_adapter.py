"""The one place the ledger changes a psycopg_pool pool after it was built.

Checked against psycopg_pool 3.3.3 (with eventsourcing 9.5.6, which builds the pool).
tests/test_psycopg_pool_adapter.py pins each behaviour relied on here.

Changing `ConnectionPool.kwargs` after the pool was made
    eventsourcing's `PostgresDatastore` builds the event store's pool itself and takes only
    dbname, host, port, user and password: the database URL's other libpq parameters (sslmode,
    application_name, options, ...) and the ledger's statement timeout have no way in. The
    pool is built closed (it opens on first use), and psycopg_pool reads `kwargs` afresh for
    every connection it makes (`ConnectionPool._connect`), so parameters put there before the
    first use reach every connection, the ones replacing connections a restart broke too.
    (eventsourcing's own pool subclass relies on the same to refresh passwords.) `kwargs` is a
    public attribute, but that changing it after construction takes effect is not documented.
    psycopg_pool 3.3 also takes `kwargs` as a callable, but the pool is eventsourcing's to
    build, and the ledger still allows psycopg_pool 3.2.

Changing `ConnectionPool.reconnect_timeout` after the pool was made
    eventsourcing builds its pool with psycopg_pool's default (five minutes of retries with a
    backoff doubling from 1 s), and a replacement being retried keeps its slot in the pool.
    `_add_connection` reads `reconnect_timeout` when each replacement starts (it is a public
    attribute, set from the constructor's argument), so a value set before the first
    connection is lost governs every replacement.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg_pool import ConnectionPool


def connection_params(pool: ConnectionPool[Any]) -> dict[str, Any]:
    """A copy of the keyword arguments `pool` passes to each new connection."""
    kwargs = pool.kwargs
    if not isinstance(kwargs, dict):
        raise TypeError(f"the pool's connection parameters are a {type(kwargs).__name__}")
    return dict(kwargs)


def update_connection_params(pool: ConnectionPool[Any], changes: Mapping[str, Any]) -> None:
    """Every connection `pool` makes from now on gets `changes` (over what it had)."""
    kwargs = pool.kwargs
    if not isinstance(kwargs, dict):
        raise TypeError(f"the pool's connection parameters are a {type(kwargs).__name__}")
    # In place: the library's pool subclass writes the password into this very dict.
    kwargs.update(changes)


def shorten_reconnect(pool: ConnectionPool[Any], seconds: float) -> None:
    """`pool` gives up replacing a lost connection after `seconds` (and so frees its slot for a
    fresh attempt on the next request) instead of retrying with a growing backoff."""
    pool.reconnect_timeout = seconds
