"""Checking the hash chain: every link recomputed from the stored records and compared with
the stored chain, and a digest kept outside the database proved against the records alone.

Both sides are streamed, in one snapshot, merged by position: memory stays flat however long
the log.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg import sql

from ledger.storage import Database
from projections.audit.chain import CHAIN_TABLE, NAME, TABLE, chain_exists, newest_link
from projections.audit.chain_report import ChainReport
from projections.audit.links import GENESIS, Digest, link
from projections.log import EVENTS_TABLE
from projections.store import connect
from projections.tracking import TRACKING

# A row as a server-side cursor yields it: a `Row`, or a (position, link) of the chain.
Fetched = tuple[Any, ...]
Progress = Callable[[str], None]

PROGRESS_EVERY_SECONDS = 2.0
FETCH_ROWS = 5000

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
_LOG_HEAD = (
    sql.SQL("SELECT coalesce(max(notification_id), 0) FROM {}").format(EVENTS_TABLE).as_bytes(None)
)
_TRACKED = sql.SQL("SELECT position FROM {} WHERE name = %s").format(TRACKING).as_bytes(None)


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
            exists = chain_exists(cur)
            tracked = _tracked_position(cur)
            report.log_head = _fetch_int(cur, _LOG_HEAD)
            report.head = newest_link(cur) if exists else None
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


def _tracked_position(cur: psycopg.Cursor[Any]) -> int | None:
    if cur.execute("SELECT to_regclass(%s)", (TRACKING.as_string(cur),)).fetchone() == (None,):
        return None
    found = cur.execute(_TRACKED, (NAME,)).fetchone()
    return None if found is None else int(found[0])


def _fetch_int(cur: psycopg.Cursor[Any], query: bytes) -> int:
    found = cur.execute(query).fetchone()
    return 0 if found is None else int(found[0])
