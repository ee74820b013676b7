"""Pins what `projections.log` assumes of eventsourcing's PostgreSQL recorder (checked against
9.5.6): where it keeps the ledger's events, and that writers take turns on that table, so that
positions become visible in commit order. An upgrade that changes either fails here."""

from __future__ import annotations

import threading
import time

from eventsourcing.postgres import PostgresApplicationRecorder

from ledger.application import Ledger
from ledger.storage import Database
from projections.base import LIVE_SCHEMA
from projections.log import EVENTS_TABLE, EventLog

_WAITING_WRITER = (
    "SELECT count(*) FROM pg_locks WHERE relation = 'ledger_events'::regclass"
    " AND mode = 'ExclusiveLock' AND NOT granted"
)


def test_the_events_table_is_where_the_log_reads(database: Database) -> None:
    log = EventLog.of(database)
    assert (log.schema, log.table) == (LIVE_SCHEMA, "ledger_events")
    assert EVENTS_TABLE.as_string(None) == f'"{log.schema}"."{log.table}"'


def test_a_writer_waits_for_the_events_table_before_drawing_positions(
    database: Database, ledger: Ledger
) -> None:
    # The library's database functions insert without that lock: they must stay off.
    assert isinstance(ledger.recorder, PostgresApplicationRecorder)
    assert ledger.recorder.datastore.enable_db_functions is False
    with database.connect() as holder:
        # Conflicts with the EXCLUSIVE lock a writer takes, not with a plain INSERT's.
        holder.execute("LOCK TABLE ledger_events IN ROW SHARE MODE")
        writer = threading.Thread(
            target=ledger.put_product, args=("cup", "Cup", 500, "eur", "test")
        )
        writer.start()
        try:
            with database.connect(autocommit=True) as watcher:
                deadline = time.monotonic() + 30
                waiting = 0
                while not waiting and time.monotonic() < deadline:
                    row = watcher.execute(_WAITING_WRITER).fetchone()
                    waiting = row[0] if row else 0
                    time.sleep(0.05)
            assert waiting == 1
        finally:
            holder.rollback()
            writer.join(30)
    assert ledger.get_product("cup").name == "Cup"
