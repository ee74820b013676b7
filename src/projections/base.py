"""What a read model is: its tables, and how each event changes them, applied with its tracking
position in one transaction (exactly once). (Side effects, which follow the same log at least
once, are `side_effects.base`.)

A read model is a `Projection` subclass: it names its tables, creates them, and says how each
event changes them with `@handles(Aggregate, "EventName")` methods. It writes SQL with its table
names in braces (`"UPDATE {order_status} SET ..."`), and the `Writer` it is given fills them in
with the live schema or a rebuild's staging schema, so the same code serves both.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any, ClassVar, TypeVar

import psycopg
from eventsourcing.utils import get_topic
from psycopg import sql

# The schema the library keeps the event log in (its default), and where live read models live.
LIVE_SCHEMA = "public"
# One row per processor: how far through the log it has got (every event at or below
# `position` has been processed) and, for read models, the version of its table layout.
TRACKING_TABLE = "projection_tracking"
# The events a set-based replay reads (`Projection.replay_in_sql`): a session's own view,
# made by the replay's caller (`projections.verification`).
REPLAY_EVENTS = sql.Identifier("pg_temp", "replay_events")

# Domain events are classes the `eventsourcing` library makes from decorated methods at run
# time (`Cart.CheckoutStarted`, ...): their attributes are not visible to a type checker.
DomainEvent = Any

Params = Sequence[Any] | Mapping[str, Any] | None
F = TypeVar("F", bound=Callable[..., None])


def topic_of(aggregate: type, event_name: str) -> str:
    """The stored topic of one of an aggregate's event classes (raises if it has none)."""
    event_class = getattr(aggregate, event_name, None)
    if not isinstance(event_class, type):
        raise AttributeError(f"{aggregate.__qualname__} has no event class {event_name!r}")
    return get_topic(event_class)


def topics_of(aggregate: type, *event_names: str) -> tuple[str, ...]:
    """Topics of several of an aggregate's events."""
    return tuple(topic_of(aggregate, name) for name in event_names)


def handles(aggregate: type, event_name: str) -> Callable[[F], F]:
    """Marks a `Projection` method as the one that applies `aggregate.<event_name>` events.

    The method is called as `method(db: Writer, event, position: int)`.
    """
    topic = topic_of(aggregate, event_name)

    def mark(method: F) -> F:
        topics: list[str] = list(getattr(method, "__handles__", []))
        method.__handles__ = [*topics, topic]  # type: ignore[attr-defined]
        return method

    return mark


def storable(text: str) -> bool:
    """Whether PostgreSQL can hold this text (no NUL, valid UTF-8): a key that is not
    cannot name anything stored, and must not reach the driver, which refuses it."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def lock_key(kind: str, name: str) -> int:
    """A stable 64-bit advisory-lock key for a processor (or its rebuild)."""
    digest = hashlib.blake2b(f"ledger.{kind}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Writer:
    """A cursor bound to where a projection's tables are (live, or a rebuild's staging schema)."""

    def __init__(self, cursor: psycopg.Cursor[Any], schema: str, tables: Sequence[str]) -> None:
        self.cursor = cursor
        self.schema = schema
        self.tables = tuple(tables)

    def sql(self, query: str) -> bytes:
        """`query` with each `{table}` replaced by that table's qualified name."""
        return compose(query, self.schema, self.tables)

    def execute(self, query: str, params: Params = None) -> psycopg.Cursor[Any]:
        return self.cursor.execute(self.sql(query), params)

    def fetchone(self, query: str, params: Params = None) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.execute(query, params).fetchone()
        return row


class BatchWriter(Writer):
    """A `Writer` that holds the statements back until `flush`, then sends them in the order
    they were made, each run of the same statement in one go: a plain `INSERT ... VALUES` as
    one COPY, any other as one `executemany` (pipelined). For a live step and for replays (a
    rebuild's staging tables, a verification's scratch copy), where statements one at a time
    cost more than applying them: the handlers are the read model's own, unchanged, and only
    write (none reads what `execute` returns; `fetchone` sends what is held back first, then
    reads)."""

    def __init__(self, cursor: psycopg.Cursor[Any], schema: str, tables: Sequence[str]) -> None:
        super().__init__(cursor, schema, tables)
        self._held: list[tuple[bytes, Params]] = []

    def execute(self, query: str, params: Params = None) -> psycopg.Cursor[Any]:
        self._held.append((self.sql(query), params))
        return self.cursor

    def fetchone(self, query: str, params: Params = None) -> tuple[Any, ...] | None:
        self.flush()
        row: tuple[Any, ...] | None = self.cursor.execute(self.sql(query), params).fetchone()
        return row

    def flush(self) -> None:
        """Sends every statement held back, in order; call inside the batch's transaction."""
        self.send(self.take())

    def take(self) -> list[tuple[bytes, Params]]:
        """The statements held back (no longer held), to `send` later."""
        held, self._held = self._held, []
        return held

    def send(self, held: list[tuple[bytes, Params]]) -> None:
        """Sends statements `take` gave, in order (on this writer's cursor)."""
        runs: list[tuple[bytes, list[Params]]] = []
        for query, params in held:
            if runs and runs[-1][0] == query:
                runs[-1][1].append(params)
            else:
                runs.append((query, [params]))
        cur = self.cursor
        start = 0
        while start < len(runs):
            query, rows = runs[start]
            copy = _copy_of(query)
            if copy is not None and len(rows) > 1:
                # COPY inserts the same rows, checked by the same constraints, as the
                # INSERTs one by one would (the tables have no rules or triggers).
                with cur.copy(copy) as out:
                    for row in rows:
                        out.write_row(row)  # type: ignore[arg-type]
                start += 1
                continue
            # The runs up to the next COPY, pipelined (COPY cannot be in a pipeline).
            end = start + 1
            while end < len(runs) and (_copy_of(runs[end][0]) is None or len(runs[end][1]) < 2):
                end += 1
            with cur.connection.pipeline():
                for query, rows in runs[start:end]:
                    if len(rows) == 1:
                        cur.execute(query, rows[0])
                    else:
                        cur.executemany(query, rows)  # type: ignore[arg-type]
            start = end


# `INSERT INTO <table> (<columns>) VALUES (%s, ...)` and nothing more: no ON CONFLICT, no
# RETURNING, no expressions, one placeholder per column.
_PLAIN_INSERT = re.compile(rb"INSERT INTO (\S+) \(([^()%]*)\) VALUES \((%s(?:, %s)*)\)")


@lru_cache(maxsize=256)
def _copy_of(query: bytes) -> bytes | None:
    """The COPY that inserts what a run of `query` would, when it is a plain INSERT."""
    found = _PLAIN_INSERT.fullmatch(query)
    if found is None or found[2].count(b",") != found[3].count(b","):
        return None
    return b"COPY " + found[1] + b" (" + found[2] + b") FROM STDIN"


@lru_cache(maxsize=1024)
def compose(query: str, schema: str, tables: tuple[str, ...]) -> bytes:
    """`query` with each `{table}` replaced by that table's name qualified by `schema`."""
    # Composed once to bytes: psycopg would compose an `sql.Composed` on every execution.
    names = {t: sql.Identifier(schema, t) for t in tables}
    return sql.SQL(query).format(replay_events=REPLAY_EVENTS, **names).as_bytes(None)


class Projection(ABC):
    """A read model: its tables and how each event changes them.

    Subclasses set `name` (unique among processors; its tracking row and lock are named after
    it), `tables` (every table it owns; each `{table}` in its SQL) and, when the layout of
    those tables changes, a higher `version` (the workers then rebuild it before going on).
    The workers apply a batch of events and the new tracking position in one transaction, so
    each event changes the rows exactly once, whatever crashes. (A projection with no @handles
    methods is given every event: override `apply`.)
    """

    name: ClassVar[str]
    tables: ClassVar[tuple[str, ...]]
    version: ClassVar[int] = 1
    # Whether it steps as soon as a commit wakes it, rather than gathering the commits of a
    # moment in one step (`workers.control`): for a read model that requests wait for.
    prompt: ClassVar[bool] = False
    # Filled in from the @handles methods: only these events are read from the log for it.
    topics: ClassVar[tuple[str, ...]] = ()
    _handlers: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                for topic in getattr(value, "__handles__", ()):
                    handlers[topic] = attr
        cls._handlers = handlers
        cls.topics = tuple(handlers)

    @abstractmethod
    def create_tables(self, db: Writer) -> None:
        """Creates this read model's (empty) tables, e.g. `db.execute("CREATE TABLE {t} ...")`."""

    def replay_in_sql(self, db: Writer) -> bool:
        """Fills this read model's (empty) tables from the log in a few set-based statements,
        as applying every event in order would, and returns True; False when it has no such
        replay (the default: it is replayed event by event).

        For `ledger audit verify`, whose replay of a long log one event at a time costs more
        than everything else it checks. A second definition of the read model, written from
        the events rather than from the handlers: verify compares the two. The statements
        read `{replay_events}`: `(position, stream_id uuid, topic, data jsonb)`, the events to
        replay (the library's typed values as stored: `data->'timestamp'->>'_data_'`)."""
        return False

    def apply(self, db: Writer, event: DomainEvent, position: int) -> None:
        """Applies one event (inside the step's transaction, `projections.stepping`)."""
        method = self._handlers.get(get_topic(type(event)))
        if method is not None:
            getattr(self, method)(db, event, position)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} v{self.version}>"
