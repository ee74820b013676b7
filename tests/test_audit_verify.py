"""`ledger audit verify` and `ledger audit report`: the invariants checked on a replay of the
whole log, as real processes against a ledger that real checkouts wrote."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from psycopg.types.json import Jsonb

from ledger.domain import inventory_item_id, order_id_for
from ledger.storage import Database
from projections.audit import records
from projections.audit.chain import HashChainProjection
from projections.audit.invariants import balances, check_read_models, check_replay
from projections.audit.records import Row
from projections.audit.replay import Replay
from projections.audit.streamed import verify_streamed
from projections.base import Projection
from projections.read_models import default_projections
from projections.verification import verify_all
from tests.processes import run_ledger
from tests.shop import Shop, eventually, running_shop

EVENTS = "ledger_events"


@pytest.fixture
def shop(database: Database) -> Iterator[Shop]:
    with running_shop(database) as s:
        yield s


def audit(database: Database, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_ledger(tmp_path, "audit", *args, LEDGER_DATABASE_URL=database.conninfo_url())


def some_history(shop: Shop) -> None:
    """Three confirmed orders and two refunded ones (one of them failed for good)."""
    shop.product("mug", unit_amount=1200, stock=3)
    sessions = [shop.checkout(shop.cart(mug=1)) for _ in range(5)]
    shop.stripe.webhook_url = None
    for sid in sessions:
        shop.stripe.complete(sid, "pay")
    shop.stripe.open_dispute(sessions[-1])  # its refund will be refused: charge_disputed
    shop.stripe.webhook_url = f"{shop.url}/webhooks/stripe"
    for sid in sessions:
        assert shop.deliver("checkout.session.completed", sid).status_code == 200
    eventually(
        lambda: (
            sorted(shop.status(s) for s in sessions)
            == ["confirmed"] * 3 + ["refund_failed", "refunded"]
        ),
        timeout=20,
    )


def position_of(database: Database, event: str, nth: int = 0) -> int:
    with database.connect() as conn:
        rows = conn.execute(
            f"SELECT notification_id FROM {EVENTS} WHERE topic LIKE %s ORDER BY 1",
            (f"%.{event}",),
        ).fetchall()
    return int(rows[nth][0])


def test_verify_passes_on_a_clean_ledger_and_the_report_adds_it_up(
    shop: Shop, database: Database, tmp_path: Path
) -> None:
    some_history(shop)
    shop.services.order_status.wait_for(shop.stripe.sessions()[-1]["id"])

    digest = audit(database, tmp_path, "digest")
    assert digest.returncode == 0, digest.stderr
    done = audit(database, tmp_path, "verify", "--digest", digest.stdout.split()[-1])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "VIOLATION" not in done.stdout
    for check in (
        "stock never below zero",
        "one outcome per paid session",
        "payments = orders + refunds",
        "read models equal a fresh replay",
        "hash chain",
    ):
        assert any(line.startswith(check) and " ok" in line for line in done.stdout.splitlines())

    report = audit(database, tmp_path, "report", "--json")
    assert report.returncode == 0, report.stderr
    usd = json.loads(report.stdout)["currencies"]["usd"]
    assert usd["payments"] == {"count": 5, "amount": 6000}
    assert usd["orders"] == {"count": 3, "amount": 3600}
    assert usd["refunds_issued"] == {"count": 1, "amount": 1200}
    assert usd["refunds_failed"] == {"count": 1, "amount": 1200}
    assert usd["refunds_pending"] == {"count": 0, "amount": 0}
    assert usd["disputes"] == 0  # the dispute arrived before the ledger knew the payment
    (failed,) = json.loads(report.stdout)["refund_failed"]
    assert failed["code"] == "charge_disputed"

    table = audit(database, tmp_path, "report", "--to", "2000-01-01")
    assert table.returncode == 0
    assert "no payments in that period" in table.stdout


def test_verify_names_the_positions_of_broken_invariants(
    shop: Shop, database: Database, tmp_path: Path
) -> None:
    some_history(shop)
    reserved = position_of(database, "StockReserved")
    confirmation = position_of(database, "PaymentConfirmed")
    with database.connect() as conn:
        # A reservation of 7 where 1 was taken: stock goes below zero from there.
        conn.execute(
            f"UPDATE {EVENTS} SET state = convert_to(replace(convert_from(state, 'UTF8'),"
            " '\"quantity\":1', '\"quantity\":7'), 'UTF8') WHERE notification_id = %s",
            (reserved,),
        )
        # A second outcome for a decided session: the same order confirmed twice.
        conn.execute(
            f"INSERT INTO {EVENTS} (originator_id, originator_version, topic, state)"
            f" SELECT originator_id, 99, topic, state FROM {EVENTS} WHERE notification_id = %s",
            (confirmation,),
        )
    done = audit(database, tmp_path, "verify")
    assert done.returncode == 1
    violations = [line for line in done.stdout.splitlines() if line.startswith("VIOLATION")]
    assert any(f"stock never below zero at position {reserved}" in line for line in violations), (
        violations
    )
    assert any(
        "one outcome per paid session" in line
        and str(confirmation) in line
        and "two outcomes" in line
        for line in violations
    ), violations
    assert any("payments = orders + refunds" in line for line in violations), violations
    # The edited and the inserted rows break the hash chain where they stand.
    assert any(
        line.startswith("VIOLATION hash chain") and str(reserved) in line for line in violations
    ), violations
    # verify's two passes (an order at a time) find exactly what a replay of the whole log
    # finds, with the same balances.
    with database.connect() as conn, conn.transaction():
        whole = Replay().read(records.stream(conn))
    streamed = verify_streamed(database)
    expected = check_replay(whole) + check_read_models(database)
    assert sorted(map(str, streamed.violations)) == sorted(map(str, expected))
    assert streamed.balances == balances(list(whole.orders.values()))
    assert (streamed.events, streamed.head) == (whole.events, whole.head)


def test_verify_finds_a_read_model_that_differs_from_the_log(
    shop: Shop, database: Database, tmp_path: Path
) -> None:
    some_history(shop)
    with database.connect() as conn:
        conn.execute("UPDATE order_status SET status = 'confirmed' WHERE status = 'refunded'")
    done = audit(database, tmp_path, "verify")
    assert done.returncode == 1
    assert "VIOLATION read models equal a fresh replay" in done.stdout


def _row(position: int, stream_id: UUID, topic: str, **fields: Any) -> Row:
    state = {"timestamp": {"_type_": "datetime_iso", "_data_": "2026-11-29T06:00:00+00:00"}}
    state |= fields
    return (position, stream_id, position, topic, json.dumps(state).encode())


def test_a_reservation_stored_before_its_order_in_the_same_commit_is_no_violation() -> None:
    # Logs written while several orders were decided in one commit store an item's
    # reservations before some of the orders they are for.
    item, order, cart = inventory_item_id("mug"), order_id_for("cs_1"), uuid4()
    inventory, orders = "ledger.domain.inventory:InventoryItem", "ledger.domain.order:Order"
    rows = [
        _row(1, item, f"{inventory}.ProductListed", sku="mug"),
        _row(2, item, f"{inventory}.StockReceived", quantity=1),
        _row(3, cart, "ledger.domain.cart:Cart.CartConverted", session_id="cs_1"),
        _row(4, item, f"{inventory}.StockReserved", quantity=1, order_id=str(order)),
        _row(
            5,
            order,
            f"{orders}.OrderPlaced",
            checkout_session_id="cs_1",
            currency="usd",
            amount_total=500,
            lines=[{"sku": "mug", "quantity": 1}],
        ),
        _row(6, order, f"{orders}.PaymentConfirmed"),
    ]
    assert check_replay(Replay().read(rows)) == []

    never_placed = Replay().read(rows[:4])
    assert [v.positions for v in check_replay(never_placed)] == [(4,)]


def test_each_read_model_s_set_based_replay_finds_a_row_missing_from_it(
    shop: Shop, database: Database
) -> None:
    """Verify rebuilds each read model set-based (`Projection.replay_in_sql`), a definition of
    its own: on a history with refunds it equals the live tables the handlers
    built, and a row taken out of any table is named, with its table, until it is back."""
    some_history(shop)
    models = [p for p in default_projections() if not isinstance(p, HashChainProjection)]
    assert all(type(p).replay_in_sql is not Projection.replay_in_sql for p in models)
    assert verify_all(database, models) == {p.name: [] for p in models}
    tampered = set()
    for projection in models:
        for table in projection.tables:
            with database.connect() as conn:
                removed = conn.execute(
                    f"DELETE FROM {table} WHERE ctid = (SELECT min(ctid) FROM {table})"
                    f" RETURNING to_jsonb({table})"
                ).fetchone()
            if removed is None:
                continue  # nothing in it on this history
            tampered.add(table)
            problems = verify_all(database, [projection])[projection.name]
            assert problems and all(f": {table}: replay only: " in p for p in problems)
            with database.connect() as conn:
                conn.execute(
                    f"INSERT INTO {table} SELECT * FROM jsonb_populate_record(NULL::{table}, %s)",
                    (Jsonb(removed[0]),),
                )
            assert verify_all(database, [projection]) == {projection.name: []}
    # (No dispute reaches the ledger here, and no hold: those tables stay empty.)
    assert {"products", "order_status", "order_history", "orders", "order_refunds"} <= tampered
