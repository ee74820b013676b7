"""The read side on a real PostgreSQL: read models, the runner, rebuilds, side-effect workers.

Runners run as real threads and, where crashes and takeovers matter, as real processes killed
with SIGKILL (`python -m tests.test_projections worker ...` is that process).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ledger.application import Ledger
from ledger.domain import Cart, PaidSession, order_id_for
from ledger.domain.errors import UnknownProduct
from ledger.payments import Refund
from ledger.storage import Database
from projections import (
    DomainEvent,
    OrderStatuses,
    ProductCatalog,
    Projection,
    ReadStore,
    Writer,
    default_projections,
    rebuild_all,
    topics_of,
    verify_all,
    wait_for_position,
)
from projections.base import lock_key
from tests.waiting import wait_until
from workers import Workers
from workers.control import WAITER_DB_CHECK

ROOT = Path(__file__).resolve().parent.parent


# ---- helpers ---------------------------------------------------------------------------------


class AppliedOnce(Projection):
    """Records every event it is given under a primary key: applying one twice fails loudly
    (the runner then retries forever and never catches up), so "caught up with one row per
    event" proves exactly-once. Slow on purpose, to widen the windows a kill can land in."""

    name = "applied_once"
    tables = ("applied_once",)
    delay = 0.0

    def create_tables(self, db: Writer) -> None:
        db.execute(
            "CREATE TABLE {applied_once} (position bigint PRIMARY KEY, runner integer NOT NULL)"
        )

    def apply(self, db: Writer, event: DomainEvent, position: int) -> None:
        db.execute("INSERT INTO {applied_once} VALUES (%s, %s)", (position, os.getpid()))
        if self.delay:
            db.execute("SELECT pg_sleep(%s)", (self.delay,))


def stock(app: Ledger, sku: str, quantity: int, unit_amount: int = 500) -> None:
    app.put_product(sku, f"Product {sku}", unit_amount, "usd", "test")
    if quantity:
        app.adjust_stock(sku, quantity, "delivery", "test")


def start_checkout(app: Ledger, session_id: str, **lines: int) -> PaidSession:
    cart = app.create_cart(None, "test")
    for sku, quantity in lines.items():
        app.set_cart_line(cart.id, sku, quantity, "test")
    priced = app.price(app.get_cart(cart.id))
    app.start_checkout(priced, session_id, "test")
    return PaidSession(session_id, cart.id, priced.amount_total, "usd", f"pi_{session_id}")


def churn(app: Ledger, stop: threading.Event, tag: str, pause: float = 0.0) -> int:
    """Checkouts paid (confirmed, or rejected once stock runs out), refunds, deliveries."""
    n = 0
    while not stop.is_set():
        n += 1
        paid = start_checkout(app, f"cs_{tag}_{n}", mug=1)
        if n % 3 == 0:
            app.adjust_stock("mug", 2, "delivery", "test")
        order = app.place_order(paid, "test")
        if order.status == "refund_pending" and n % 2 == 0:
            refund = Refund(f"re_{tag}_{n}", "succeeded", 1, "usd", "pi", str(order.id))
            app.record_refund(order.id, refund, "test")
        if pause:
            time.sleep(pause)
    return n


def head(database: Database) -> int:
    with database.connect() as conn:
        row = conn.execute("SELECT coalesce(max(notification_id), 0) FROM ledger_events").fetchone()
    assert row is not None
    return int(row[0])


def query(database: Database, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with database.connect() as conn:
        return conn.execute(sql, params or None).fetchall()


def applied_count(database: Database) -> int:
    rows = query(database, "SELECT to_regclass('applied_once') IS NOT NULL")
    if not rows[0][0]:
        return 0
    return int(query(database, "SELECT count(*) FROM applied_once")[0][0])


def assert_equal_to_a_fresh_replay(database: Database) -> None:
    assert verify_all(database) == {p.name: [] for p in default_projections()}


def assert_each_event_applied_once(database: Database) -> None:
    events = [r[0] for r in query(database, "SELECT notification_id FROM ledger_events ORDER BY 1")]
    applied = [r[0] for r in query(database, "SELECT position FROM applied_once ORDER BY 1")]
    assert applied == events


@contextmanager
def store(database: Database) -> Iterator[ReadStore]:
    reads = ReadStore(database)
    try:
        yield reads
    finally:
        reads.close()


@contextmanager
def workers(
    database: Database, processors: Sequence[Any] = (), **options: Any
) -> Iterator[Workers]:
    options.setdefault("poll_interval", 0.2)
    options.setdefault("lock_interval", 0.2)
    runner = Workers(database, list(processors) or default_projections(), **options)
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


class WorkerProcess:
    """`ledger work`, in effect: a separate Python process running the default read models and
    AppliedOnce until it is killed."""

    def __init__(self, database: Database, batch_size: int = 5, delay: float = 0.002) -> None:
        spec = json.dumps({"params": database.params, "batch_size": batch_size, "delay": delay})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.test_projections", "worker", spec],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(10)


def caught_up(database: Database, names: Sequence[str], timeout: float) -> bool:
    """From this process (no runner here): polls the tracking table."""
    deadline = time.monotonic() + timeout
    target = head(database)
    return all(
        wait_for_position(database, name, target, max(0.0, deadline - time.monotonic()))
        for name in names
    )


ALL = ["order_status", "products", "applied_once"]


# ---- the read models ---------------------------------------------------------------------------


def test_order_status_answers_every_status_like_the_contract(
    database: Database, ledger: Ledger
) -> None:
    stock(ledger, "mug", 10, unit_amount=1250)
    stock(ledger, "pen", 10, unit_amount=300)
    start_checkout(ledger, "cs_processing", mug=1)
    waiting = start_checkout(ledger, "cs_awaiting", pen=2)
    ledger.record_awaiting_payment("cs_awaiting", waiting.cart_id, None, "test")
    paid = start_checkout(ledger, "cs_confirmed", mug=2, pen=1)
    ledger.place_order(paid, "test")
    failed = start_checkout(ledger, "cs_failed", pen=1)
    ledger.record_awaiting_payment("cs_failed", failed.cart_id, None, "test")
    ledger.record_payment_failed("cs_failed", failed.cart_id, "test")
    expired = start_checkout(ledger, "cs_expired", mug=1)
    ledger.record_expired("cs_expired", expired.cart_id, "test")
    mismatch = start_checkout(ledger, "cs_refund_pending", mug=1)
    ledger.place_order(PaidSession("cs_refund_pending", mismatch.cart_id, 1, "usd", "pi"), "test")
    refunded = start_checkout(ledger, "cs_refunded", pen=3)
    ledger.place_order(PaidSession("cs_refunded", refunded.cart_id, 1, "usd", "pi"), "test")
    refunded_id = order_id_for("cs_refunded")
    refund = Refund("re_1", "succeeded", 1, "usd", "pi", str(refunded_id))
    ledger.record_refund(refunded_id, refund, "test")
    refused = start_checkout(ledger, "cs_refund_failed", pen=1)
    ledger.place_order(PaidSession("cs_refund_failed", refused.cart_id, 1, "usd", "pi"), "test")
    ledger.refuse_refund(order_id_for("cs_refund_failed"), "charge_disputed", "test")

    with workers(database), store(database) as reads:
        assert reads.wait_for_head(["order_status"], timeout=5)
        statuses = OrderStatuses(reads)
        got = {sid: statuses.get(sid) for sid in [
            "cs_processing", "cs_awaiting", "cs_confirmed", "cs_failed", "cs_expired",
            "cs_refund_pending", "cs_refunded", "cs_refund_failed",
        ]}  # fmt: skip
        assert statuses.get("cs_never_created") is None

    assert {sid: body["status"] for sid, body in got.items() if body} == {
        "cs_processing": "processing",
        "cs_awaiting": "awaiting_payment",
        "cs_confirmed": "confirmed",
        "cs_failed": "payment_failed",
        "cs_expired": "expired",
        "cs_refund_pending": "refund_pending",
        "cs_refunded": "refunded",
        "cs_refund_failed": "refund_failed",
    }
    assert got["cs_confirmed"] == {
        "checkout_session_id": "cs_confirmed",
        "status": "confirmed",
        "order_id": str(order_id_for("cs_confirmed")),
        "amount_total": 2 * 1250 + 300,
        "currency": "usd",
        "items": [
            {"sku": "mug", "name": "Product mug", "quantity": 2, "unit_amount": 1250},
            {"sku": "pen", "name": "Product pen", "quantity": 1, "unit_amount": 300},
        ],
    }
    for sid in ["cs_processing", "cs_awaiting", "cs_failed", "cs_expired"]:
        assert got[sid]["order_id"] is None  # type: ignore[index]
    for sid in ["cs_refund_pending", "cs_refunded", "cs_refund_failed"]:
        assert got[sid]["order_id"] == str(order_id_for(sid))  # type: ignore[index]
    assert_equal_to_a_fresh_replay(database)


def test_products_show_what_a_new_checkout_may_take(database: Database, ledger: Ledger) -> None:
    stock(ledger, "mug", 10, unit_amount=1250)
    stock(ledger, "b-pen", 0, unit_amount=300)
    stock(ledger, "Z-cap", 4, unit_amount=900)
    ledger.put_product("mug", "Big mug", 1500, "usd", "test")
    ledger.adjust_stock("mug", -3, "broken", "test")
    ledger.place_order(start_checkout(ledger, "cs_1", mug=2), "test")  # reserves 2

    with workers(database), store(database) as reads:
        assert reads.wait_for_head(["products"], timeout=5)
        catalog = ProductCatalog(reads)
        mug = catalog.product("mug")
        listing = catalog.products()
        with pytest.raises(UnknownProduct):
            catalog.product("nope")

    assert mug == {
        "sku": "mug",
        "name": "Big mug",
        "unit_amount": 1500,
        "currency": "usd",
        "available": 5,
    }
    assert [(p["sku"], p["available"]) for p in listing] == [("Z-cap", 4), ("b-pen", 0), ("mug", 5)]
    assert [p["available"] for p in listing] == [
        ledger.get_product(p["sku"]).on_hand for p in listing
    ]
    assert_equal_to_a_fresh_replay(database)


def test_queries_see_every_write_committed_before_them_whichever_process_runs_the_workers(
    database: Database, ledger: Ledger
) -> None:
    stock(ledger, "mug", 1)
    worker = WorkerProcess(database, batch_size=500, delay=0.0)
    try:
        assert caught_up(database, ALL, timeout=10)
        with store(database) as reads:
            catalog, statuses = ProductCatalog(reads), OrderStatuses(reads)
            for n in range(15):
                ledger.adjust_stock("mug", 1, "delivery", "test")
                assert catalog.product("mug")["available"] == n + 2
                start_checkout(ledger, f"cs_{n}", mug=1)
                assert statuses.get(f"cs_{n}") == {
                    "checkout_session_id": f"cs_{n}",
                    "status": "processing",
                    "order_id": None,
                    "amount_total": 500,
                    "currency": "usd",
                    "items": [
                        {"sku": "mug", "name": "Product mug", "quantity": 1, "unit_amount": 500}
                    ],
                }
    finally:
        worker.terminate()


def test_a_status_read_waits_for_its_own_session_not_for_everyone_elses_writes(
    database: Database, ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    stock(ledger, "mug", 5)
    start_checkout(ledger, "cs_mine", mug=1)
    with workers(database):
        assert caught_up(database, ["order_status"], timeout=5)
    # Others keep writing while the read model's runner is alive but stuck (we hold its lock).
    with database.connect(autocommit=True) as stuck_runner, store(database) as reads:
        stuck_runner.execute(
            "SELECT pg_advisory_lock(%s)", (lock_key("processor", "order_status"),)
        )
        stock(ledger, "tea", 5)
        start_checkout(ledger, "cs_theirs", tea=1)
        statuses = OrderStatuses(reads, wait_seconds=0.5)
        with caplog.at_level("WARNING", logger="projections.store"):
            mine = statuses.get("cs_mine")
        # Everything cs_mine depends on is applied: it answers without waiting for the rest.
        assert mine is not None and mine["status"] == "processing"
        assert not [r for r in caplog.records if "is behind" in r.getMessage()]
        with caplog.at_level("WARNING", logger="projections.store"):
            assert statuses.get("cs_theirs") is None  # not applied yet: waited, then said so
        assert [r for r in caplog.records if "is behind" in r.getMessage()]


def test_a_status_read_costs_the_same_however_much_was_written_since_its_session(
    database: Database, ledger: Ledger
) -> None:
    stock(ledger, "mug", 5)
    paid = start_checkout(ledger, "cs_old", mug=1)
    ledger.place_order(paid, "test")
    ledger.save(*(Cart(user_id=None, cause="test") for _ in range(3000)))  # the log moves on
    with workers(database):
        assert caught_up(database, ["order_status"], timeout=10)
    statement, params = OrderStatuses.query("cs_old")
    with database.connect() as conn:
        row = conn.execute(b"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, params)
        plan = row.fetchone()[0][0]["Plan"]  # type: ignore[index]
    # Read down the two streams' keys (11 buffers): a walk back from the log's head through
    # the 3,000 events since touched 121, and more the longer the log.
    assert plan["Shared Hit Blocks"] + plan["Shared Read Blocks"] < 40, plan
    with store(database) as reads:
        assert OrderStatuses(reads).get("cs_old")["status"] == "confirmed"  # type: ignore[index]


def test_the_read_side_works_on_the_embedded_default_store_too(any_database: Database) -> None:
    app = Ledger(env=any_database.eventsourcing_env())
    try:
        stock(app, "mug", 2)
        with workers(any_database), store(any_database) as reads:
            start_checkout(app, "cs_1", mug=1)
            assert ProductCatalog(reads).product("mug")["available"] == 2
            assert OrderStatuses(reads).get("cs_1")["status"] == "processing"  # type: ignore[index]
            assert rebuild_all(any_database)["products"] == head(any_database)
        assert_equal_to_a_fresh_replay(any_database)
    finally:
        app.close()


def test_a_new_read_model_catches_up_from_the_start_and_queries_before_setup_are_empty(
    database: Database, ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    def answered_without_waiting() -> bool:
        """The read said it is behind with nobody to wait for, and so waited 0.0 s."""
        return any(
            "products is behind" in r.getMessage() and "waited 0.0s" in r.getMessage()
            for r in caplog.records
        )

    with store(database) as reads:  # no runner has ever run here: no tables yet
        assert OrderStatuses(reads).get("cs_x") is None
        assert ProductCatalog(reads).products() == []
        assert not reads.wait_for_position("order_status", 1, timeout=0.05)
    stock(ledger, "mug", 3)
    caplog.clear()
    with (
        store(database) as reads,  # behind, and no runner anywhere: answers at once, stale
        caplog.at_level("WARNING", logger="projections.store"),
    ):
        assert ProductCatalog(reads).products() == []
    assert answered_without_waiting()
    with workers(database):
        assert caught_up(database, ["order_status", "products"], timeout=5)
    caplog.clear()
    with (
        store(database) as reads,  # tables there, no runner: stale at once, not after 1 s
        caplog.at_level("WARNING", logger="projections.store"),
    ):
        ledger.adjust_stock("mug", 1, "delivery", "test")
        assert ProductCatalog(reads).product("mug")["available"] == 3
    assert answered_without_waiting()
    with workers(database, [*default_projections(), AppliedOnce()]):  # added later
        assert caught_up(database, ALL, timeout=5)
    assert_each_event_applied_once(database)


# ---- the runner ------------------------------------------------------------------------------


def test_reading_your_own_write_waits_on_the_commit_not_on_a_sleep(
    database: Database, ledger: Ledger
) -> None:
    stock(ledger, "mug", 100)
    with workers(database, poll_interval=30.0) as runner, store(database) as waits:
        # Only NOTIFY can wake the runner in time; its commit wakes the waiter, which is wired
        # to it as web.bootstrap wires the service's read store to its workers.
        waits.wait_on(runner)
        assert caught_up(database, ["order_status"], timeout=5)
        lags = []
        for n in range(20):
            cart = Cart(user_id=None, cause="test")
            cart.start_checkout(f"cs_{n}", [{"sku": "mug", "name": "Mug", "quantity": 1,
                                             "unit_amount": 500}], 500, "usd", "test")  # fmt: skip
            position = ledger.save(cart)[-1].notification.id
            started = time.perf_counter()
            assert wait_for_position(waits, "order_status", position, timeout=2)
            lags.append(time.perf_counter() - started)
            assert runner.status()["order_status"]["position"] >= position
        with store(database) as reads:
            assert OrderStatuses(reads).get("cs_19") is not None
    # The one timing check kept, because it is what this test is about: the runner's poll is
    # 30 s, so only the commit's NOTIFY can have woken it (a failed wait above says so), and
    # a waiter not woken by the runner's commit would find out only at its next look at the
    # tracking table, WAITER_DB_CHECK (0.25 s) later. The typical wait is far below that.
    assert sorted(lags)[len(lags) // 2] < WAITER_DB_CHECK, lags


def test_a_lingering_read_model_steps_at_once_for_a_reader_waiting_on_it(
    database: Database, ledger: Ledger
) -> None:
    # Woken by a commit, a read model that is not prompt gathers commits for `linger` before
    # its step; a consistent read waiting on it hurries it. With a linger longer than the
    # waits below, only the hurry can have caught it up in time.
    with workers(database, poll_interval=30.0, linger=60.0) as runner, store(database) as reads:
        reads.wait_on(runner)
        assert caught_up(database, ["products"], timeout=10)
        stock(ledger, "mug", 100)
        assert ProductCatalog(reads, wait_seconds=20).product("mug")["available"] == 100
        ledger.adjust_stock("mug", 1, "delivery", "test")
        assert runner.wait_until_processed("products", head(database), timeout=20)


def test_a_lingering_read_model_run_by_another_process_is_hurried_through_the_database(
    database: Database, ledger: Ledger
) -> None:
    # The store is not wired to the runner: it waits as a process that does not run the read
    # model does, on the tracking table, and hurries the runner with a NOTIFY.
    with workers(database, poll_interval=30.0, linger=60.0), store(database) as reads:
        assert caught_up(database, ["products"], timeout=10)
        stock(ledger, "mug", 100)
        assert ProductCatalog(reads, wait_seconds=20).product("mug")["available"] == 100


def test_a_lost_notification_does_not_stall_the_runner(database: Database, ledger: Ledger) -> None:
    stock(ledger, "mug", 100)
    # Every NOTIFY is lost: it listens on a channel nobody notifies. The poll finds the events.
    with workers(database, poll_interval=0.3, channel="nobody_notifies_this"):
        assert caught_up(database, ["products"], timeout=5)
        ledger.adjust_stock("mug", 1, "delivery", "test")
        # Nothing but its own poll can wake the runner now: catching up at all proves it polls.
        assert caught_up(database, ["products"], timeout=5)
    # NOTIFYs sent while the listening connection is down are lost too: it reconnects,
    # takes its locks again and catches up.
    with workers(database, poll_interval=30.0) as runner:
        assert caught_up(database, ["products"], timeout=5)
        killed = query(
            database,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'ledger-worker-control' AND datname = current_database()",
        )
        assert killed == [(True,)]
        ledger.adjust_stock("mug", 1, "delivery", "test")
        assert caught_up(database, ["products"], timeout=5)
        assert runner.owns("products")
    with store(database) as reads:
        assert ProductCatalog(reads).product("mug")["available"] == 102


def test_a_runner_killed_at_any_moment_applies_each_event_exactly_once(
    database: Database, ledger: Ledger
) -> None:
    stock(ledger, "mug", 5)
    stop = threading.Event()
    writer = threading.Thread(target=churn, args=(ledger, stop, "w"))
    writer.start()
    kills = 0
    try:
        for _ in range(6):
            before = applied_count(database)
            worker = WorkerProcess(database, batch_size=5, delay=0.002)
            # Let it get going, then kill it mid-stream (between or inside batches).
            deadline = time.monotonic() + 10
            while applied_count(database) <= before and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(random.uniform(0.0, 0.3))
            worker.kill()
            kills += 1
    finally:
        stop.set()
        writer.join()
    worker = WorkerProcess(database, batch_size=50, delay=0.0)
    try:
        assert caught_up(database, ALL, timeout=20)
    finally:
        worker.terminate()
    assert kills == 6
    assert_each_event_applied_once(database)
    assert_equal_to_a_fresh_replay(database)


def test_two_runner_processes_run_each_processor_once_and_take_over_when_one_dies(
    database: Database, ledger: Ledger
) -> None:
    stock(ledger, "mug", 20)
    first, second = WorkerProcess(database), WorkerProcess(database)
    stop = threading.Event()
    try:
        writer = threading.Thread(target=churn, args=(ledger, stop, "a", 0.005))
        writer.start()
        # Writes and applies under way together: one of the processes has started, taken the
        # locks and applied a good part of what is being written.
        wait_until(lambda: applied_count(database) >= 40, timeout=30)
        stop.set()
        writer.join()
        assert caught_up(database, ALL, timeout=10)
        # Each processor's lock is held by exactly one session, and it alone applied events.
        for name in ALL:
            key = lock_key("processor", name) & (2**64 - 1)
            holders = query(
                database,
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " AND objsubid = 1 AND classid = %s::bigint::oid AND objid = %s::bigint::oid",
                key >> 32,
                key & 0xFFFFFFFF,
            )
            assert holders == [(1,)], name
        runners = query(database, "SELECT DISTINCT runner FROM applied_once")
        assert len(runners) == 1
        owner = runners[0][0]
        assert owner in (first.pid, second.pid)
        survivor = second if owner == first.pid else first

        (first if owner == first.pid else second).kill()
        stop.clear()
        writer = threading.Thread(target=churn, args=(ledger, stop, "b", 0.005))
        writer.start()
        # Until the survivor has taken over and applies the new writes as they come.
        wait_until(
            lambda: bool(query(database, "SELECT 1 FROM applied_once WHERE runner <> %s", owner)),
            timeout=30,
        )
        stop.set()
        writer.join()
        assert caught_up(database, ALL, timeout=10)
        later = query(
            database, "SELECT DISTINCT runner FROM applied_once WHERE runner <> %s", owner
        )
        assert later == [(survivor.pid,)]
    finally:
        stop.set()
        first.kill()
        second.kill()
    assert_each_event_applied_once(database)
    assert_equal_to_a_fresh_replay(database)


# ---- rebuilds ----------------------------------------------------------------------------------


def test_a_rebuild_while_writes_and_reads_continue_matches_a_fresh_replay(
    database: Database, ledger: Ledger
) -> None:
    stock(ledger, "mug", 30)
    stock(ledger, "pen", 3)
    stop = threading.Event()
    for n in range(40):  # some history to replay
        ledger.place_order(start_checkout(ledger, f"cs_h_{n}", mug=1), "test")
    problems: list[str] = []
    reads_done = [0]

    def read_continuously(reads: ReadStore) -> None:
        statuses, catalog = OrderStatuses(reads), ProductCatalog(reads)
        while not stop.is_set():
            try:
                if len(catalog.products()) != 2:
                    problems.append("a half-built products table")
                body = statuses.get("cs_h_0")
                if body is None or body["status"] != "confirmed":
                    problems.append(f"a half-built order_status table: {body}")
                reads_done[0] += 1
            except Exception as error:
                problems.append(repr(error))

    with workers(database), store(database) as reads:
        assert reads.wait_for_head(["order_status", "products"], timeout=5)
        threads = [
            threading.Thread(target=churn, args=(ledger, stop, "x")),
            threading.Thread(target=churn, args=(ledger, stop, "y")),
            threading.Thread(target=read_continuously, args=(reads,)),
        ]
        for thread in threads:
            thread.start()
        lines: list[str] = []
        try:
            # The writers and the reader under way before the rebuilds start.
            at_start = head(database)
            wait_until(lambda: head(database) >= at_start + 20 and reads_done[0] > 0)
            first = rebuild_all(database, lines.append, batch_size=25)
            second = rebuild_all(database, lines.append, batch_size=25)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert reads.wait_for_head(["order_status", "products"], timeout=5)
    assert problems == []
    assert reads_done[0] > 10
    assert second["order_status"] > first["order_status"]  # writes went on meanwhile
    assert any("rebuilt up to position" in line for line in lines)
    assert_equal_to_a_fresh_replay(database)
    # Nothing left behind: the staging schemas are gone.
    assert query(database, "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'rebuild_%'") == []


def test_a_read_model_whose_layout_changed_is_rebuilt_when_its_runner_starts(
    database: Database, ledger: Ledger
) -> None:
    stock(ledger, "mug", 3)
    with workers(database):
        assert caught_up(database, ["products"], timeout=5)
    with database.connect() as conn:  # as an older version of the code left it: wrong rows
        conn.execute("UPDATE products SET on_hand = 999")
        conn.execute("UPDATE projection_tracking SET version = 0 WHERE name = 'products'")
    assert verify_all(database)["products"] != []
    with workers(database):
        assert caught_up(database, ["products"], timeout=5)
        with store(database) as reads:
            assert ProductCatalog(reads).product("mug")["available"] == 3
    assert_equal_to_a_fresh_replay(database)


# ---- side-effect workers -----------------------------------------------------------------------


class FlakyMailer:
    """A side effect that fails a few times on one event: the runner must retry that event,
    and never skip it. Called from several threads at once (the workers' attempts), so what
    it notes is noted under a lock."""

    name = "mailer"
    topics = topics_of(Cart, "CartCreated")

    def __init__(self, fail_at: int | None, failures: int) -> None:
        self.fail_at = fail_at  # the position of the event that fails
        self.failures = failures
        self.calls: list[int] = []
        self.sent: list[int] = []
        self._lock = threading.Lock()

    def handle(self, event: DomainEvent, position: int) -> None:
        with self._lock:
            self.calls.append(position)
            if position == self.fail_at and self.failures > 0:
                self.failures -= 1
                raise ConnectionError("the mail server said no")
            self.sent.append(position)


def test_a_failing_side_effect_is_retried_on_its_own_schedule_and_holds_back_no_other(
    database: Database, ledger: Ledger
) -> None:
    carts = [ledger.create_cart(None, "test") for _ in range(3)]
    positions = [
        p for (p,) in query(database, "SELECT notification_id FROM ledger_events ORDER BY 1")
    ]
    assert len(positions) == len(carts)
    mailer = FlakyMailer(fail_at=positions[1], failures=3)
    with workers(database, [mailer], retry_backoff=(0.01, 0.05)) as runner:
        assert runner.wait_until_processed("mailer", positions[-1], timeout=20)
        deadline = time.monotonic() + 20
        while len(mailer.sent) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    # The failing event did not hold back the one after it, and was tried until it worked.
    # The three are handled at once, so in no particular order among themselves.
    assert sorted(mailer.calls[:3]) == positions
    assert mailer.calls.count(positions[1]) == 4
    assert sorted(mailer.sent) == positions
    assert sorted(mailer.sent[:2]) == [positions[0], positions[2]]
    assert query(database, "SELECT count(*) FROM side_effect_retries") == [(0,)]

    # Stopped while one keeps failing: the position moves on past it, the item waits in the
    # schedule, and a restart (a new process, with its own code) picks it up again.
    more = [ledger.create_cart(None, "test") for _ in range(2)]
    assert more
    ((first_new,),) = query(
        database,
        "SELECT min(notification_id) FROM ledger_events WHERE notification_id > %s",
        positions[-1],
    )
    stuck = FlakyMailer(fail_at=first_new, failures=10**6)
    with workers(database, [stuck], retry_backoff=(0.01, 0.02)):
        deadline = time.monotonic() + 20
        while len(stuck.calls) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    failing = first_new
    assert failing not in stuck.sent and stuck.sent == [head(database)]
    assert query(database, "SELECT position FROM projection_tracking WHERE name = 'mailer'") == [
        (head(database),)
    ]
    assert query(database, "SELECT position FROM side_effect_retries") == [(failing,)]
    healed = FlakyMailer(fail_at=None, failures=0)
    with workers(database, [healed], retry_backoff=(0.01, 0.02)):
        deadline = time.monotonic() + 20
        while not healed.sent and time.monotonic() < deadline:
            time.sleep(0.01)
    assert healed.sent == [failing]
    assert query(database, "SELECT count(*) FROM side_effect_retries") == [(0,)]


class HangingEffect:
    """A side effect whose call on one event hangs until `release` (a client without a
    timeout of its own); the others it handles at once. Each attempt may take 0.3 s."""

    name = "hanger"
    topics = topics_of(Cart, "CartCreated")
    concurrency = 2
    attempt_timeout = 0.3

    def __init__(self, hang_at: int) -> None:
        self.hang_at = hang_at
        self.release = threading.Event()
        self.calls: list[int] = []
        self.done: list[int] = []
        self._lock = threading.Lock()

    def handle(self, event: DomainEvent, position: int) -> None:
        with self._lock:
            self.calls.append(position)
        if position == self.hang_at:
            self.release.wait(30)
        with self._lock:
            self.done.append(position)


def test_an_attempt_past_its_deadline_fails_and_holds_back_no_other(
    database: Database, ledger: Ledger
) -> None:
    for _ in range(4):
        ledger.create_cart(None, "test")
    positions = [
        p for (p,) in query(database, "SELECT notification_id FROM ledger_events ORDER BY 1")
    ]
    hung = positions[0]  # the first: the one the recorded position would wait on
    hanger = HangingEffect(hung)
    retry = "SELECT attempts, last_error FROM side_effect_retries WHERE name = 'hanger'"
    with workers(database, [hanger], retry_backoff=(0.05, 0.1)) as runner:
        # The others are handled, and the position goes past the hung one: at its deadline it
        # counted as failed and joined the retry schedule.
        assert runner.wait_until_processed("hanger", positions[-1], timeout=10)
        assert sorted(hanger.done) == positions[1:]
        ((attempts, error),) = query(database, retry)
        assert attempts == 1 and error.startswith("TimeoutError")
        # Its retry is due long since, but its first attempt still runs: never two at once.
        due = "SELECT count(*) FROM side_effect_retries WHERE due_at < now() - interval '1 s'"
        wait_until(lambda: query(database, due) == [(1,)])
        assert hanger.calls.count(hung) == 1

        hanger.release.set()  # the call returns at last: the retry runs, and succeeds
        wait_until(lambda: query(database, "SELECT count(*) FROM side_effect_retries") == [(0,)])
    assert hanger.calls.count(hung) == 2
    assert sorted(hanger.done) == sorted([*positions, hung])


class OneAtATimeMailer(FlakyMailer):
    concurrency = 1


def test_a_lingering_side_effect_starts_its_next_item_as_soon_as_one_ends(
    database: Database, ledger: Ledger
) -> None:
    # One item at a time and a linger longer than the wait: an attempt's end must step the
    # side effect at once (a notification alone lets it linger), or the items would go one
    # per linger.
    for _ in range(5):  # before the start: its first step needs no notification
        ledger.create_cart(None, "test")
    mailer = OneAtATimeMailer(fail_at=None, failures=0)
    with workers(database, [mailer], poll_interval=30.0, linger=60.0):
        wait_until(lambda: len(mailer.sent) == 5, timeout=20, what=lambda: mailer.sent)
    assert sorted(mailer.sent) == sorted(set(mailer.sent))


# ---- the worker process ------------------------------------------------------------------------


def _worker_main(spec: str) -> None:
    options = json.loads(spec)
    database = Database({str(k): str(v) for k, v in options["params"].items()})
    AppliedOnce.delay = float(options["delay"])
    runner = Workers(
        database,
        [*default_projections(), AppliedOnce()],
        batch_size=int(options["batch_size"]),
        poll_interval=0.2,
        lock_interval=0.2,
        backoff=(0.05, 0.5),
    )
    runner.run_forever()


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    _worker_main(sys.argv[2])
