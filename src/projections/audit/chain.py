"""The hash chain's table, kept current by a projection: one link per stored event record.

What a link is lives in `projections.audit.links`; checking the chain against the log, in
`projections.audit.chain_verification`. Here: the table, the projection that appends to it
inside PostgreSQL (one INSERT ... SELECT from the stored row, no fetch: it runs in the
runner's pipeline), and reading its head.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from ledger.storage import Database
from projections.audit.links import GENESIS_SQL, RECORD_BYTES_SQL, Digest
from projections.base import LIVE_SCHEMA, DomainEvent, Projection, Writer
from projections.log import EVENTS_TABLE
from projections.store import ReadStore, connect

NAME = "hash_chain"
TABLE = "hash_chain"
CHAIN_TABLE = sql.Identifier(LIVE_SCHEMA, TABLE)

# `Writer.sql` fills in `{hash_chain}` only, so the events table goes into the text here.
# The previous link is the newest in the projection's own table (live or a rebuild's staging
# copy): the runner applies positions in order, exactly once each.
_APPLY = (
    "INSERT INTO {hash_chain} (position, link) SELECT e.notification_id, sha256("
    " coalesce((SELECT c.link FROM {hash_chain} c ORDER BY c.position DESC LIMIT 1),"
    f" {GENESIS_SQL}) || sha256({RECORD_BYTES_SQL}))"
    f" FROM {EVENTS_TABLE.as_string(None)} e WHERE e.notification_id = %s"
)
_HEAD = (
    sql.SQL("SELECT position, link FROM {} ORDER BY position DESC LIMIT 1")
    .format(CHAIN_TABLE)
    .as_bytes(None)
)
_COUNT_AFTER = (
    sql.SQL("SELECT count(*) FROM {} WHERE notification_id > %s")
    .format(EVENTS_TABLE)
    .as_bytes(None)
)


class HashChainProjection(Projection):
    """Links every stored record to the chain, in position order, inside PostgreSQL."""

    name = NAME
    tables = (TABLE,)

    def create_tables(self, db: Writer) -> None:
        db.execute("CREATE TABLE {hash_chain} (position bigint PRIMARY KEY, link bytea NOT NULL)")

    def apply(self, db: Writer, event: DomainEvent, position: int) -> None:
        # The decoded event is not used: the link hashes the row as stored, read by the
        # database itself, so nothing the mapper does (or undoes) can change it.
        db.execute(_APPLY, (position,))


def chain_head(database: Database) -> Digest | None:
    """The newest link: (its position, its hex), or None when there is no chain yet."""
    with connect(database, "audit-chain") as conn:
        cur = conn.cursor()
        return newest_link(cur) if chain_exists(cur) else None


def wait_for_chain(database: Database, timeout: float) -> int:
    """Waits up to `timeout` seconds for the projection to link every record committed
    before the call, when some process runs it; returns how many records are still not
    linked (0: the chain's head is the log's)."""
    reads = ReadStore(database, min_size=1, max_size=1)
    try:
        head = reads.head()
        if head and reads.is_running(NAME):
            reads.wait_for_position(NAME, head, timeout)
        with reads.cursor() as cur:
            newest = newest_link(cur) if chain_exists(cur) else None
            after = 0 if newest is None else newest[0]
            counted = cur.execute(_COUNT_AFTER, (after,)).fetchone()
    finally:
        reads.close()
    return 0 if counted is None else int(counted[0])


def newest_link(cur: psycopg.Cursor[Any]) -> Digest | None:
    """The chain's newest stored link, or None when it has none (the table must exist)."""
    found = cur.execute(_HEAD).fetchone()
    return None if found is None else (int(found[0]), bytes(found[1]).hex())


def chain_exists(cur: psycopg.Cursor[Any]) -> bool:
    found = cur.execute("SELECT to_regclass(%s)", (CHAIN_TABLE.as_string(cur),)).fetchone()
    return found is not None and found[0] is not None
