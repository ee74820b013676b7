"""The customers' keys, in a table of their own beside the log: the only place that links an
address to the envelopes in the log, and the only row `ledger customers forget` deletes.

A row holds the SHA-256 of the normalized address (to find the customer by address), a random
customer id (what envelopes name) and the key. Deleting the row leaves nothing that leads from
the address to the log, nor anything that opens what the log holds for that customer.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import psycopg
from psycopg_pool import ConnectionPool

from ledger.personal_data import CustomerKey, new_key, normalized_email
from ledger.storage import Database, create_table, transient_store_errors

_CREATE = (
    "CREATE TABLE IF NOT EXISTS customer_keys ("
    " email_digest bytea PRIMARY KEY,"
    " customer_id uuid NOT NULL UNIQUE,"
    " key bytea NOT NULL,"
    " created_at timestamptz NOT NULL DEFAULT now())"
)
_BY_EMAIL = "SELECT customer_id, key FROM customer_keys WHERE email_digest = %s"
_BY_CUSTOMER = "SELECT customer_id, key FROM customer_keys WHERE customer_id = %s"
_INSERT = (
    "INSERT INTO customer_keys (email_digest, customer_id, key) VALUES (%s, %s, %s)"
    " ON CONFLICT (email_digest) DO NOTHING RETURNING customer_id, key"
)
_DELETE = "DELETE FROM customer_keys WHERE email_digest = %s RETURNING customer_id"
# The deleted row stays in the table's files until vacuumed: vacuum at once, so the key is
# gone from the live database, not only from view (backups and WAL keep it until they age out).
_VACUUM = "VACUUM customer_keys"


def _digest(email: str) -> bytes:
    return hashlib.sha256(normalized_email(email).encode()).digest()


def _key(row: tuple[Any, ...] | None) -> CustomerKey | None:
    return None if row is None else CustomerKey(customer_id=row[0], key=bytes(row[1]))


class PostgresCustomerKeys:
    """`CustomerKeys` in PostgreSQL, on a small pool of its own. A database that does not
    answer raises StoreUnavailable (retryable), like every other store call."""

    def __init__(self, database: Database, *, max_size: int = 4) -> None:
        self.pool: ConnectionPool[psycopg.Connection[Any]] = database.pool(
            "ledger-customer-keys", max_size=max_size
        )
        with self._cursor() as cur:
            create_table(cur, _CREATE)

    def key_for(self, email: str) -> CustomerKey:
        digest = _digest(email)
        with self._cursor() as cur:
            # Read first: a returning customer (the usual case) costs one primary-key lookup.
            # A concurrent first insert makes ours return nothing; the read after finds it.
            for query, params in (
                (_BY_EMAIL, (digest,)),
                (_INSERT, (digest, uuid.uuid4(), new_key())),
                (_BY_EMAIL, (digest,)),
            ):
                key = _key(cur.execute(query, params).fetchone())
                if key is not None:
                    return key
        raise RuntimeError("a customer key was neither found nor created")

    def key_of(self, customer_id: UUID) -> CustomerKey | None:
        with self._cursor() as cur:
            return _key(cur.execute(_BY_CUSTOMER, (customer_id,)).fetchone())

    def forget(self, email: str) -> UUID | None:
        with self._cursor() as cur:
            row = cur.execute(_DELETE, (_digest(email),)).fetchone()
            if row is None:
                return None
            cur.execute(_VACUUM)
            customer_id: UUID = row[0]
            return customer_id

    def close(self) -> None:
        self.pool.close()

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[psycopg.Cursor[Any]]:
        with transient_store_errors(), self.pool.connection() as conn, conn.cursor() as cur:
            yield cur


__all__ = ["PostgresCustomerKeys"]
