"""Pins what `ledger.psycopg_pool_adapter` relies on in psycopg_pool (checked against 3.3.3) and
in how eventsourcing (9.5.6) builds its pool: an upgrade that changes it fails here."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg_pool import ConnectionPool

from ledger.application import Ledger
from ledger.psycopg_pool_adapter import (
    connection_params,
    shorten_reconnect,
    update_connection_params,
)
from ledger.storage import (
    LOCK_TIMEOUT_SECONDS,
    RECONNECT_TIMEOUT_SECONDS,
    Database,
    LedgerPostgresFactory,
)
from tests.shop import free_port


def setting(conn: Any, name: str) -> str:
    row = conn.execute(f"SHOW {name}").fetchone()
    assert row is not None
    return str(row[0] if isinstance(row, tuple) else next(iter(row.values())))


@pytest.fixture
def pool(database: Database) -> Iterator[ConnectionPool[Any]]:
    made: ConnectionPool[Any] = ConnectionPool(
        database.conninfo,
        kwargs={"application_name": "before"},
        min_size=1,
        max_size=2,
        open=False,
    )
    try:
        yield made
    finally:
        made.close()


def test_parameters_changed_before_the_pool_opens_reach_its_connections(
    pool: ConnectionPool[Any],
) -> None:
    update_connection_params(pool, {"application_name": "after"})
    pool.open(wait=True)
    with pool.connection() as conn:
        assert setting(conn, "application_name") == "after"


def test_the_pool_reads_its_parameters_afresh_for_every_new_connection(
    pool: ConnectionPool[Any],
) -> None:
    # So a connection that replaces one a database restart broke has them too.
    pool.open(wait=True)
    update_connection_params(pool, {"application_name": "after"})
    with pool.connection() as first, pool.connection() as second:  # the second one is new
        names = {setting(first, "application_name"), setting(second, "application_name")}
    assert names == {"before", "after"}
    assert connection_params(pool) == {"application_name": "after"}


def test_the_event_stores_pool_is_built_closed_with_its_parameters_in_a_dict(
    database: Database,
) -> None:
    factory = LedgerPostgresFactory(database.eventsourcing_env())
    try:
        pool = factory.datastore.pool
        assert isinstance(pool.kwargs, dict)
        assert pool.closed  # not one connection made yet: each gets the ledger's parameters
        assert {"dbname", "host", "port", "user", "password"} <= set(connection_params(pool))
    finally:
        factory.close()


def test_the_urls_parameters_and_the_timeouts_reach_the_stores_and_the_locks_connections(
    database: Database,
) -> None:
    configured = Database(
        {**database.params, "application_name": "ledger-app", "options": "-c work_mem=8MB"}
    )
    app = Ledger(env=configured.eventsourcing_env())
    try:
        factory = app.factory
        assert isinstance(factory, LedgerPostgresFactory)
        with factory.datastore.get_connection() as conn:
            assert setting(conn, "application_name") == "ledger-app"
            assert setting(conn, "work_mem") == "8MB"
            assert setting(conn, "statement_timeout") == "10s"
        locks = factory.lock_pool(LOCK_TIMEOUT_SECONDS)
        try:
            with locks.connection(timeout=10) as conn:
                assert setting(conn, "application_name") == "ledger-locks"
                assert setting(conn, "work_mem") == "8MB"
                assert setting(conn, "lock_timeout") == f"{LOCK_TIMEOUT_SECONDS}s"
        finally:
            locks.close()
    finally:
        app.close()


def test_a_pool_with_a_short_reconnect_timeout_frees_the_slot_of_a_connection_it_cannot_make() -> (
    None
):
    # So that, once the server is back, the next request grows the pool with a fresh connection
    # at once instead of waiting for a replacement's next try (1, 2, 4, 8 s apart by default).
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres?connect_timeout=1"
    pool: ConnectionPool[Any] = ConnectionPool(dead, min_size=1, max_size=2, open=False)
    shorten_reconnect(pool, 0.2)
    pool.open(wait=False)
    try:
        deadline = time.monotonic() + 5
        while pool.get_stats()["pool_size"] > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool.get_stats()["pool_size"] == 0
    finally:
        pool.close()


def test_the_event_stores_pool_gives_up_a_lost_connection_soon(database: Database) -> None:
    factory = LedgerPostgresFactory(database.eventsourcing_env())
    try:
        assert factory.datastore.pool.reconnect_timeout == RECONNECT_TIMEOUT_SECONDS
    finally:
        factory.close()
