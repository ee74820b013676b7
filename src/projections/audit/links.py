"""The hash chain's arithmetic: what a link is, in Python and in SQL, and how a digest is written.

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

The projection (`projections.audit.chain`) computes each link inside PostgreSQL from the
stored row; the verification (`projections.audit.chain_verification`) recomputes every link
in Python from the rows it streams, so the two implementations check each other.

A digest, `POSITION:HASH`, names one link: kept outside the database, it proves later that
the log up to that position is unchanged.
"""

from __future__ import annotations

import hashlib
import re
import struct
from typing import Any

import psycopg
from psycopg import sql

from projections.audit.records import Row
from projections.log import EVENTS_TABLE

# A link named by its position and its hex: what `ledger audit digest` prints.
Digest = tuple[int, str]

GENESIS = bytes(32)
GENESIS_SQL = f"'\\x{GENESIS.hex()}'::bytea"

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
_LINK_SQL = (
    sql.SQL(
        "SELECT sha256(%s::bytea || sha256({record})) FROM {events} e WHERE e.notification_id = %s"
    )
    .format(record=sql.SQL(RECORD_BYTES_SQL), events=EVENTS_TABLE)
    .as_bytes(None)
)


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
