"""The e-mails the notifications worker has sent, by Message-ID: checked before sending and
written after, so a replay of the log sends nothing twice.

Sending and recording cannot be one transaction (the SMTP server is not in the database): a
crash between the two sends that message once more, with the same Message-ID, which is SMTP's
own at-least-once and lets a mail client or a person recognise the duplicate. Only the worker
that holds the notifications lock writes here, so a check-then-insert needs no locking.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from ledger.storage import create_table
from projections.base import LIVE_SCHEMA, compose
from projections.store import ReadStore

SENT_MESSAGES_TABLE = "sent_messages"


def _q(query: str) -> bytes:
    return compose(query, LIVE_SCHEMA, (SENT_MESSAGES_TABLE,))


_CREATE = _q(
    "CREATE TABLE IF NOT EXISTS {sent_messages} ("
    " message_id text PRIMARY KEY,"
    " sent_at timestamptz NOT NULL DEFAULT now())"
)
_CONTAINS = _q("SELECT 1 FROM {sent_messages} WHERE message_id = %s")
_RECORD = _q(
    "INSERT INTO {sent_messages} (message_id) VALUES (%s) ON CONFLICT (message_id) DO NOTHING"
)


class SentMessages:
    """The sent-messages table, on the read store's pool (created on first use). Raises
    StoreUnavailable when the database does not answer: the worker's event is retried."""

    def __init__(self, store: ReadStore) -> None:
        self.store = store
        self._ready = False
        self._lock = threading.Lock()

    def was_sent(self, message_id: str) -> bool:
        with self.store.cursor() as cur:
            self._ensure(cur)
            return cur.execute(_CONTAINS, (message_id,)).fetchone() is not None

    def record(self, message_id: str) -> None:
        with self.store.cursor() as cur:
            self._ensure(cur)
            cur.execute(_RECORD, (message_id,))

    def _ensure(self, cur: psycopg.Cursor[Any]) -> None:
        with self._lock:
            if self._ready:
                return
            create_table(cur, _CREATE)
            self._ready = True


__all__ = ["SENT_MESSAGES_TABLE", "SentMessages"]
