"""Pins what `projections.log` assumes of eventsourcing's PostgreSQL recorder (checked against
9.5.6): where it keeps the ledger's events, and that writers take turns on that table, so that
positions become visible in commit order. An upgrade that changes either fails here."""

from __future__ import annotations

import threading
import time

from eventsourcing.postgres import PostgresApplicationRecorder

from ledger.application import Ledger
from ledger.domain import InventoryItem
from ledger.storage import Database
from projections.base import LIVE_SCHEMA, topic_of
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


def _positions(log: EventLog, database: Database, topics: list[str], *, scan: bool) -> list[int]:
    """Every position a pass of small reads yields, checking `more` and `upto` on the way."""
    seen: list[int] = []
    with database.connect() as conn:
        cur = conn.cursor()
        after = 0
        while True:
            batch = log.read(cur, after, topics, 3, scan=scan)
            assert all(after < p <= batch.upto for p, _ in batch.events)
            assert batch.upto >= after
            seen += [p for p, _ in batch.events]
            after = batch.upto
            if not batch.more:
                break
        assert after == log.head(cur)
    return seen


def test_a_scanning_read_yields_what_a_filtered_read_does_across_gaps(
    database: Database, ledger: Ledger
) -> None:
    log = EventLog.of(database)
    for i in range(4):
        ledger.put_product(f"cup{i}", "Cup", 500, "eur", "test")
        ledger.adjust_stock(f"cup{i}", 5, None, "test")
        with database.connect() as conn:  # positions drawn and never used: gaps in the log
            conn.execute(
                "SELECT nextval(pg_get_serial_sequence('ledger_events', 'notification_id'))"
                " FROM generate_series(1, %s)",
                (i * 2,),
            )
    stock = [topic_of(InventoryItem, "StockReceived")]
    everything = _positions(log, database, [], scan=False)
    assert len(everything) == 8
    assert _positions(log, database, [], scan=True) == everything
    received = _positions(log, database, stock, scan=False)
    assert len(received) == 4
    assert _positions(log, database, stock, scan=True) == received
    with database.connect() as conn:
        stopped = log.read(conn.cursor(), 0, stock, 100, stop=everything[3], scan=True)
    assert ([p for p, _ in stopped.events], stopped.upto, stopped.more) == (
        received[:2],
        everything[3],
        False,
    )
