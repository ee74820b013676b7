"""A tamper-evident hash chain over the event log, kept current by a projection.

Each stored event record, in position order, gets a link: sha256(previous link ||
sha256(record bytes)), the link before the first record being 32 zero bytes. The record
bytes are the row exactly as stored (ids, topic and the state bytes, encrypted fields
included), so the chain still verifies after personal data has been crypto-shredded:

    int8(notification_id) || uuid(originator_id) || int8(originator_version)
    || int4(length of the topic's UTF-8 bytes) || topic UTF-8 bytes || state

(big-endian, as PostgreSQL's `int8send`/`int4send`/`uuid_send` write them). The topic is
length-prefixed so that bytes cannot slide between topic and state and hash the same.
A NULL topic or state (which the library never writes) is hashed as empty, identically in
SQL and Python, so that a row nulled by hand is reported rather than crashing anything.

The projection computes each link inside PostgreSQL from the stored row (one INSERT ...
SELECT, no fetch: it runs in the runner's pipeline); `verify_chain` recomputes every link in
Python from the rows it streams, so the two implementations check each other.
"""

from __future__ import annotations

import hashlib
import re
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from ledger.storage import Database
from projections.audit.records import Row
from projections.base import LIVE_SCHEMA, DomainEvent, Projection, Writer
from projections.log import EVENTS_TABLE
from projections.store import ReadStore, connect
from projections.tracking import TRACKING

# A row as a server-side cursor yields it: a `Row`, or a (position, link) of the chain.
Fetched = tuple[Any, ...]
Digest = tuple[int, str]
Progress = Callable[[str], None]

NAME = "hash_chain"
TABLE = "hash_chain"
CHAIN_TABLE = sql.Identifier(LIVE_SCHEMA, TABLE)
GENESIS = bytes(32)
# Problems kept in a report; beyond this they are only counted (a wholesale rewrite of the log
# would otherwise hold one object per row in memory, and nobody reads a million lines).
MAX_PROBLEMS = 1000
PROGRESS_EVERY_SECONDS = 2.0
FETCH_ROWS = 5000

# notification_id, originator_id, originator_version, topic length: the fixed-size prefix.
_PREFIX = struct.Struct(">q16sqi")
_DIGEST_RE = re.compile(r"(\d+):([0-9a-fA-F]{64})")

_TOPIC = "convert_to(coalesce(e.topic, ''), 'UTF8')"
# The record bytes of the row aliased `e`, as `record_bytes` builds them in Python.
RECORD_BYTES_SQL = (
    "int8send(e.notification_id) || uuid_send(e.originator_id)"
    f" || int8send(e.originator_version) || int4send(octet_length({_TOPIC}))"
    f" || {_TOPIC} || coalesce(e.state, ''::bytea)"
)
_GENESIS_SQL = f"'\\x{GENESIS.hex()}'::bytea"
# `Writer.sql` fills in `{hash_chain}` only, so the events table goes into the text here.
# The previous link is the newest in the projection's own table (live or a rebuild's staging
# copy): the runner applies positions in order, exactly once each.
_APPLY = (
    "INSERT INTO {hash_chain} (position, link) SELECT e.notification_id, sha256("
    " coalesce((SELECT c.link FROM {hash_chain} c ORDER BY c.position DESC LIMIT 1),"
    f" {_GENESIS_SQL}) || sha256({RECORD_BYTES_SQL}))"
    f" FROM {EVENTS_TABLE.as_string(None)} e WHERE e.notification_id = %s"
)
_LINK_SQL = (
    sql.SQL(
        "SELECT sha256(%s::bytea || sha256({record})) FROM {events} e WHERE e.notification_id = %s"
    )
    .format(record=sql.SQL(RECORD_BYTES_SQL), events=EVENTS_TABLE)
    .as_bytes(None)
)
# NULLs as empty, as the SQL side hashes them; the rest exactly as stored.
_ROWS = (
    sql.SQL(
        "SELECT notification_id, originator_id, originator_version, coalesce(topic, ''),"
        " coalesce(state, ''::bytea) FROM {} ORDER BY notification_id"
    )
    .format(EVENTS_TABLE)
    .as_bytes(None)
)
_LINKS = (
    sql.SQL("SELECT position, link FROM {} ORDER BY position").format(CHAIN_TABLE).as_bytes(None)
)
_HEAD = (
    sql.SQL("SELECT position, link FROM {} ORDER BY position DESC LIMIT 1")
    .format(CHAIN_TABLE)
    .as_bytes(None)
)
_LOG_HEAD = (
    sql.SQL("SELECT coalesce(max(notification_id), 0) FROM {}").format(EVENTS_TABLE).as_bytes(None)
)
_COUNT_AFTER = (
    sql.SQL("SELECT count(*) FROM {} WHERE notification_id > %s")
    .format(EVENTS_TABLE)
    .as_bytes(None)
)
_TRACKED = sql.SQL("SELECT position FROM {} WHERE name = %s").format(TRACKING).as_bytes(None)


# ---- the link, in Python and in SQL ------------------------------------------------------------


def record_bytes(row: Row) -> bytes:
    """The bytes of one stored record that its link hashes (see the module's docstring)."""
    position, originator_id, version, topic, state = row
    topic_bytes = topic.encode("utf-8")
    return (
        _PREFIX.pack(position, originator_id.bytes, version, len(topic_bytes))
        + topic_bytes
        + bytes(state)
    )


def link(previous: bytes, row: Row) -> bytes:
    """The link of a stored record, following the link `previous`."""
    return hashlib.sha256(previous + hashlib.sha256(record_bytes(row)).digest()).digest()


def link_in_sql(cursor: psycopg.Cursor[Any], previous: bytes, position: int) -> bytes | None:
    """The link PostgreSQL computes for the stored record at `position` after `previous`
    (the projection's own expression), or None when there is no record there."""
    found = cursor.execute(_LINK_SQL, (previous, position)).fetchone()
    return None if found is None else bytes(found[0])


# ---- the projection ---------------------------------------------------------------------------


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


# ---- reading the chain --------------------------------------------------------------------------


def parse_digest(text: str) -> Digest:
    """`POSITION:HASH` (as `ledger audit digest` prints it) as (position, lower-case hex)."""
    match = _DIGEST_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"--digest must be POSITION:HASH (a position, a colon, 64 hex digits), not {text!r}"
        )
    position = int(match.group(1))
    if position < 1:
        raise ValueError(f"--digest position must be 1 or more, not {position}")
    return position, match.group(2).lower()


def format_digest(digest: Digest) -> str:
    return f"{digest[0]}:{digest[1]}"


def chain_head(database: Database) -> Digest | None:
    """The newest link: (its position, its hex), or None when there is no chain yet."""
    with connect(database, "audit-chain") as conn:
        cur = conn.cursor()
        if not _chain_exists(cur):
            return None
        found = cur.execute(_HEAD).fetchone()
    return None if found is None else (int(found[0]), bytes(found[1]).hex())


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
            newest = cur.execute(_HEAD).fetchone() if _chain_exists(cur) else None
            after = 0 if newest is None else int(newest[0])
            counted = cur.execute(_COUNT_AFTER, (after,)).fetchone()
    finally:
        reads.close()
    return 0 if counted is None else int(counted[0])


# ---- verifying it -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainProblem:
    """One violation: `kind` is `edited`, `deleted`, `inserted`, `chain_missing`,
    `digest_mismatch` or `digest_beyond_log`; `position` the log position involved."""

    kind: str
    position: int
    message: str

    def __str__(self) -> str:
        return f"hash chain: {self.kind} at position {self.position}: {self.message}"


@dataclass
class ChainReport:
    """What `verify_chain` found. `ok` when there is no problem."""

    records: int = 0  # stored records read
    linked: int = 0  # records checked against their stored link
    unlinked: int = 0  # records after the chain's reach: appended since the projection ran
    log_head: int = 0  # position of the newest record
    head: Digest | None = None  # the chain's newest stored link
    digest: Digest | None = None  # the digest checked, if any
    digest_ok: bool | None = None  # None without a digest
    problems: list[ChainProblem] = field(default_factory=list)
    omitted: int = 0  # problems beyond MAX_PROBLEMS, counted only

    @property
    def ok(self) -> bool:
        return not self.problems and not self.omitted

    def add(self, kind: str, position: int, message: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(ChainProblem(kind, position, message))
        else:
            self.omitted += 1

    def lines(self) -> list[str]:
        """One line per problem (and one for those omitted)."""
        out = [str(p) for p in self.problems]
        if self.omitted:
            out.append(f"hash chain: and {self.omitted} more problems")
        return out

    def summary(self) -> str:
        head = "no links yet" if self.head is None else f"head {format_digest(self.head)}"
        text = f"hash chain: {self.linked} of {self.records} records checked against it ({head})"
        if self.unlinked:
            text += f"; {self.unlinked} recorded after its head, not linked yet"
        if self.digest is not None:
            verdict = "matches" if self.digest_ok else "does NOT match"
            text += f"; digest {format_digest(self.digest)} {verdict}"
        if not self.ok:
            text += f"; {len(self.problems) + self.omitted} problems"
        return text


def _quiet(_: str) -> None:
    pass


def verify_chain(
    database: Database, digest: Digest | None = None, progress: Progress = _quiet
) -> ChainReport:
    """Recomputes every link from the stored records and compares it with the stored chain,
    reporting each record edited (or moved), deleted or inserted, by position; with a
    `digest` (position, hex), also proves from the records alone that the log up to that
    position is what it was when the digest was taken. Streams both sides in one snapshot:
    memory stays flat however long the log."""
    report = ChainReport(digest=digest)
    with connect(database, "audit-chain") as conn:
        conn.read_only = True
        # One snapshot for the chain, its tracking row and the log: the projection commits
        # links and its position together, so what is linked and what is not agree.
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            cur = conn.cursor()
            exists = _chain_exists(cur)
            tracked = _tracked_position(cur)
            report.log_head = _fetch_int(cur, _LOG_HEAD)
            newest = cur.execute(_HEAD).fetchone() if exists else None
            if newest is not None:
                report.head = (int(newest[0]), bytes(newest[1]).hex())
            if not exists and tracked:
                report.add(
                    "chain_missing",
                    tracked,
                    f"the {TABLE} table is gone, though the chain was kept up to this position",
                )
            # Records at or below this were linked when the projection passed them: a record
            # there without a link was put in afterwards (or its link was taken out).
            reach = max(report.head[0] if report.head else 0, tracked or 0)
            rows = _stream(conn, "chain_rows", _ROWS)
            links = _stream(conn, "chain_links", _LINKS) if exists else iter(())
            _compare(report, rows, links, reach, digest, progress)
    return report


def _compare(
    report: ChainReport,
    rows: Iterator[Fetched],
    links: Iterator[Fetched],
    reach: int,
    digest: Digest | None,
    progress: Progress,
) -> None:
    """Merges the records and the stored links by position (both ascending) and checks them."""
    end = (2**63, None, 0, "", b"")
    row = next(rows, end)
    stored = next(links, (2**63, b""))
    # Checked against the stored chain: re-seeded from each stored link, so one changed
    # record is reported once and the unchanged records after it still verify.
    seed = GENESIS
    # A mismatch may be the stored link's, not the record's: then the next record follows
    # the link recomputed here instead, and is not reported as well.
    recomputed: bytes | None = None
    # From the records alone, for the digest: what the chain was when the digest was taken.
    until = digest[0] if digest else 0
    pure = GENESIS
    pure_at = 0
    next_report = time.monotonic() + PROGRESS_EVERY_SECONDS
    while row[0] < 2**63 or stored[0] < 2**63:
        position = min(row[0], stored[0])
        has_row = row[0] == position
        has_link = stored[0] == position
        if has_row:
            report.records += 1
            if has_link:
                report.linked += 1
                computed = link(seed, row)
                if computed != stored[1] and not (
                    recomputed is not None and link(recomputed, row) == stored[1]
                ):
                    report.add(
                        "edited",
                        position,
                        "the record differs from the one linked here (edited, or moved here"
                        " from another position), or its stored link was altered",
                    )
                    recomputed = computed
                else:
                    recomputed = None
                next_pure = computed if pure == seed else None
                seed = bytes(stored[1])
            elif position <= reach:
                report.add(
                    "inserted",
                    position,
                    "a record the chain passed over has no link (put in afterwards,"
                    " or its link was removed)",
                )
                next_pure = None
            else:
                report.unlinked += 1
                next_pure = None
            if position <= until:
                pure = next_pure if next_pure is not None else link(pure, row)
                pure_at = position
            row = next(rows, end)
        else:
            report.add("deleted", position, "a linked record is no longer in the log")
            seed = bytes(stored[1])
            recomputed = None
        if has_link:
            stored = next(links, (2**63, b""))
        if digest is not None and report.digest_ok is None and min(row[0], stored[0]) > until:
            _check_digest(report, digest, pure, pure_at, row[0] < 2**63)
        if time.monotonic() >= next_report:
            next_report = time.monotonic() + PROGRESS_EVERY_SECONDS
            progress(f"hash chain: at position {position} of {report.log_head}")
    if digest is not None and report.digest_ok is None:
        _check_digest(report, digest, pure, pure_at, False)


def _check_digest(
    report: ChainReport, digest: Digest, pure: bytes, pure_at: int, more_rows: bool
) -> None:
    position, expected = digest
    if pure_at == position and pure.hex() == expected:
        report.digest_ok = True
        return
    report.digest_ok = False
    if pure_at < position and not more_rows:
        report.add(
            "digest_beyond_log",
            position,
            f"the digest is of position {position} but the log ends at {pure_at}"
            " (records at its end were removed, or the digest is of another log)",
        )
    elif pure_at != position:
        report.add(
            "digest_mismatch",
            position,
            "the digest names a record that is no longer in the log",
        )
    else:
        report.add(
            "digest_mismatch",
            position,
            "the log up to here is not what it was when the digest was taken"
            " (a record at or before this position was edited, removed, inserted or moved)",
        )


def _stream(conn: psycopg.Connection[Any], name: str, query: bytes) -> Iterator[Fetched]:
    # Server-side and binary: constant memory, and bytea arrives as bytes without hex decoding.
    with conn.cursor(name=name, binary=True) as cursor:
        cursor.itersize = FETCH_ROWS
        cursor.execute(query)
        yield from cursor


def _chain_exists(cur: psycopg.Cursor[Any]) -> bool:
    found = cur.execute("SELECT to_regclass(%s)", (CHAIN_TABLE.as_string(cur),)).fetchone()
    return found is not None and found[0] is not None


def _tracked_position(cur: psycopg.Cursor[Any]) -> int | None:
    if cur.execute("SELECT to_regclass(%s)", (TRACKING.as_string(cur),)).fetchone() == (None,):
        return None
    found = cur.execute(_TRACKED, (NAME,)).fetchone()
    return None if found is None else int(found[0])


def _fetch_int(cur: psycopg.Cursor[Any], query: bytes) -> int:
    found = cur.execute(query).fetchone()
    return 0 if found is None else int(found[0])
