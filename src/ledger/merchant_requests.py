"""The merchant's requests by idempotency key, with Stripe's semantics: the same key and body
answer what the first request answered and change nothing more; the same key with another body
(or on another endpoint) is refused.

A table beside the log keeps each key's fingerprint (what was asked) and first answer.
Requests with the same key take turns under a lock named by the key, so twenty identical
requests at once make one decision and twenty identical answers. The key is recorded before the
decision runs, so it can never be reused for something else even when the answer is lost; the
decision itself is idempotent too (its id is derived from the key), so a request retried after
a crash between the two finds its decision made and answers from it.

Answers of 5xx (the store or Stripe unavailable) are not kept: a retry may succeed, as at
Stripe. Keys are kept for a day, as Stripe keeps them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid5

import psycopg
from psycopg.types.json import Json
from psycopg_pool import ConnectionPool

from ledger.domain.errors import DomainError
from ledger.locks import AggregateLocks
from ledger.storage import Database, create_table, transient_store_errors

_CREATE = (
    "CREATE TABLE IF NOT EXISTS merchant_requests ("
    " idempotency_key text PRIMARY KEY,"
    " fingerprint text NOT NULL,"
    " status integer,"
    # json, not jsonb: the first answer is kept as it was written, its keys in their order,
    # so every answer to the key is the same text.
    " body json,"
    " created_at timestamptz NOT NULL DEFAULT now())"
)
_FIND = "SELECT fingerprint, status, body FROM merchant_requests WHERE idempotency_key = %s"
_CLAIM = (
    "INSERT INTO merchant_requests (idempotency_key, fingerprint) VALUES (%s, %s)"
    " ON CONFLICT (idempotency_key) DO NOTHING"
)
_ANSWER = "UPDATE merchant_requests SET status = %s, body = %s WHERE idempotency_key = %s"
_FORGET_OLD = "DELETE FROM merchant_requests WHERE created_at < now() - interval '1 day'"
# Names the lock of a key (ledger.locks locks by UUID).
_KEY_LOCKS = UUID("0d6c3f4e-8a8e-4c1b-b0a4-3f8f5a0c9e21")
# Forget old keys on about one claim in this many: cheap, and the table stays a day's worth.
_FORGET_EVERY = 500


class IdempotencyKeyReused(DomainError):
    code = "idempotency_key_reused"

    def __init__(self) -> None:
        super().__init__(
            "This Idempotency-Key was used for another request; use a new key for a new request."
        )


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]


class MerchantRequests:
    def __init__(self, database: Database, locks: AggregateLocks, *, max_size: int = 4) -> None:
        self.locks = locks
        self.pool: ConnectionPool[psycopg.Connection[Any]] = database.pool(
            "ledger-merchant-requests", max_size=max_size
        )
        self._claims = 0
        with self._cursor() as cur:
            create_table(cur, _CREATE)

    def answer(self, key: str, fingerprint: str, act: Callable[[], Answer]) -> Answer:
        """The answer to the request `fingerprint` under `key`: the first one's, or `act()`'s
        when this is the first. Raises IdempotencyKeyReused for another request's key."""
        with self.locks.held([uuid5(_KEY_LOCKS, key)]):
            with self._cursor() as cur:
                row = cur.execute(_FIND, (key,)).fetchone()
                if row is None:
                    cur.execute(_CLAIM, (key, fingerprint))
                    self._forget_old(cur)
            if row is not None:
                known, status, body = row
                if known != fingerprint:
                    raise IdempotencyKeyReused()
                if status is not None:
                    return Answer(status, body)
            answer = act()
            if answer.status < 500:
                with self._cursor() as cur:
                    cur.execute(_ANSWER, (answer.status, Json(answer.body), key))
            return answer

    def close(self) -> None:
        self.pool.close()

    def _forget_old(self, cur: psycopg.Cursor[Any]) -> None:
        self._claims += 1
        if self._claims % _FORGET_EVERY == 0:
            cur.execute(_FORGET_OLD)

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[psycopg.Cursor[Any]]:
        with transient_store_errors(), self.pool.connection() as conn, conn.cursor() as cur:
            yield cur
