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


@lru_cache(maxsize=1024)
def compose(query: str, schema: str, tables: tuple[str, ...]) -> bytes:
    """`query` with each `{table}` replaced by that table's name qualified by `schema`."""
    # Composed once to bytes: psycopg would compose an `sql.Composed` on every execution.
    return sql.SQL(query).format(**{t: sql.Identifier(schema, t) for t in tables}).as_bytes(None)


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

    def apply(self, db: Writer, event: DomainEvent, position: int) -> None:
        """Applies one event (inside the step's transaction, `projections.stepping`)."""
        method = self._handlers.get(get_topic(type(event)))
        if method is not None:
            getattr(self, method)(db, event, position)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} v{self.version}>"
