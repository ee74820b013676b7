"""The auditors' reads: the log paged over HTTP while others write, an order's history with
its causes, stock at an instant, the auditor token, and `ledger audit history|stock|export` as
real processes. The ledger and the Stripe stand-in in real servers, a real PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ledger.application import Ledger
from ledger.domain import Cart, PaidSession, order_id_for
from ledger.domain.vocabulary import OrderStatus
from ledger.storage import Database
from projections import OrderStatuses
from tests.processes import run_ledger_within
from tests.shop import ADMIN, AUDITOR, Shop, running_shop
from tests.test_money_paths import paid_for_the_last_unit, settles_as
from tests.test_projections import caught_up, store, workers

AUDIT = {"Authorization": f"Bearer {AUDITOR}"}
EVENT_KEYS = {"position", "stream", "stream_id", "version", "type", "recorded_at", "cause", "data"}


@pytest.fixture
def shop(database: Database) -> Iterator[Shop]:
    with running_shop(database) as s:
        yield s


def positions_in_log(database: Database) -> list[int]:
    with database.connect() as conn:
        rows = conn.execute("SELECT notification_id FROM ledger_events ORDER BY 1").fetchall()
    return [int(r[0]) for r in rows]


def page_to_end(shop: Shop, after: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Every event after `after`, page by page until `next_after` is null; and the position to
    go on from later (the last event seen)."""
    events: list[dict[str, Any]] = []
    while True:
        params = {"after": after, "limit": limit}
        r = shop.api.get("/api/audit/events", params=params, headers=AUDIT)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["events"]) <= limit
        events.extend(body["events"])
        if body["next_after"] is None:
            return events, (body["events"][-1]["position"] if body["events"] else after)
        assert body["next_after"] == body["events"][-1]["position"]
        after = body["next_after"]


def history(shop: Shop, order_id: object) -> list[dict[str, Any]]:
    r = shop.api.get(f"/api/audit/orders/{order_id}/history", headers=AUDIT)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["order_id"] == str(order_id)
    events: list[dict[str, Any]] = body["events"]
    return events


def order_id_of(shop: Shop, session_id: str) -> str:
    r = shop.api.get(f"/api/checkout-sessions/{session_id}/order")
    order_id: str = r.json()["order_id"]
    assert order_id == str(order_id_for(session_id))
    return order_id


def stock_at(shop: Shop, sku: str, at: str) -> Any:
    return shop.api.get(f"/api/audit/products/{sku}/stock", params={"at": at}, headers=AUDIT)


def ledger_cli(database: Database, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_ledger_within(180, cwd, "audit", *args, LEDGER_DATABASE_URL=database.conninfo_url())


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line]


def assert_error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


# ---- the log, paged while others write ---------------------------------------------------


def test_paging_the_log_while_four_writers_write_sees_every_event_once(
    shop: Shop, database: Database
) -> None:
    shop.product("mug", stock=0)
    shop.product("pen", stock=0)
    failures: list[BaseException] = []

    # One application per writer, made one after another: each creates the tables if missing,
    # which PostgreSQL does not take from several sessions at once.
    ledgers = [Ledger(env=database.eventsourcing_env()) for _ in range(4)]

    def write(n: int) -> None:
        ledger = ledgers[n]
        try:
            for i in range(40):
                cart = ledger.create_cart(f"writer-{n}", f"test:writer-{n}")
                ledger.set_cart_line(cart.id, "mug", 1 + i % 3, f"test:writer-{n}")
                ledger.set_cart_line(cart.id, "pen", 2, f"test:writer-{n}")
        except BaseException as error:  # surfaced by the main thread
            failures.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    seen: list[dict[str, Any]] = []
    after, rounds = 0, 0
    try:
        # Page to the current end again and again while the writers go on.
        while any(t.is_alive() for t in threads) or rounds == 0:
            events, after = page_to_end(shop, after, limit=7)
            seen.extend(events)
            rounds += 1
    finally:
        for t in threads:
            t.join()
        for ledger in ledgers:
            ledger.close()
    assert not failures, failures
    events, after = page_to_end(shop, after, limit=7)  # once more, after the writers stopped
    seen.extend(events)

    positions = [e["position"] for e in seen]
    assert positions == sorted(set(positions)), "an event seen twice or out of order"
    assert positions == positions_in_log(database)
    assert rounds > 1  # the paging really ran alongside the writers
    assert sum(e["type"] == "CartLineSet" for e in seen) == 4 * 40 * 2
    for event in seen:
        assert set(event) == EVENT_KEYS
    line_set = next(e for e in seen if e["type"] == "CartLineSet")
    assert line_set["stream"] == "cart"
    assert line_set["cause"].startswith("test:writer-")
    assert line_set["data"]["cause"] == line_set["cause"]


def test_the_first_page_and_the_end_of_the_log(shop: Shop, database: Database) -> None:
    shop.product("mug", stock=3)  # ProductListed, StockReceived
    r = shop.api.get("/api/audit/events", headers=AUDIT)
    assert r.status_code == 200
    body = r.json()
    assert [e["type"] for e in body["events"]] == ["ProductListed", "StockReceived"]
    assert body["next_after"] is None
    listed = body["events"][0]
    assert listed["stream"] == "inventory"
    assert listed["version"] == 1
    assert listed["data"]["sku"] == "mug"
    assert listed["cause"].startswith("http:")
    datetime.fromisoformat(listed["recorded_at"])

    # A page exactly as long as what is left: it still says whether more follows.
    r = shop.api.get("/api/audit/events", params={"limit": 1}, headers=AUDIT)
    assert r.json()["next_after"] == listed["position"]
    r = shop.api.get(
        "/api/audit/events", params={"after": listed["position"], "limit": 1}, headers=AUDIT
    )
    assert r.json()["next_after"] is None and len(r.json()["events"]) == 1
    last = r.json()["events"][0]["position"]
    r = shop.api.get("/api/audit/events", params={"after": last}, headers=AUDIT)
    assert r.json() == {"events": [], "next_after": None}


@pytest.mark.parametrize(
    "params",
    [{"after": "-1"}, {"after": "x"}, {"after": "1.5"}, {"limit": "0"}, {"limit": "1001"}],
)
def test_a_bad_after_or_limit_is_a_validation_error(shop: Shop, params: dict[str, str]) -> None:
    r = shop.api.get("/api/audit/events", params=params, headers=AUDIT)
    assert_error(r, 422, "validation_error")
    assert r.json()["error"]["fields"][0]["field"] == next(iter(params))


# ---- an order's history --------------------------------------------------------------------


def test_a_refunded_orders_history_shows_rejection_refund_and_outcome_with_causes(
    shop: Shop,
) -> None:
    first, second = paid_for_the_last_unit(shop, "mug")
    # The unit is gone: rejected, refunded. Delivered by hand, so that the decision's cause is
    # surely the Stripe event (a status poll that came first would decide it just as well).
    shop.stripe.webhook_url = None
    shop.stripe.complete(second, "pay")
    assert shop.deliver("checkout.session.completed", second).status_code == 200
    shop.stripe.webhook_url = f"{shop.url}/webhooks/stripe"
    settles_as(shop, second, "refunded")
    order_id = order_id_of(shop, second)

    events = history(shop, order_id)
    types = [e["type"] for e in events]
    positions = [e["position"] for e in events]
    assert positions == sorted(positions)
    for expected in (
        "CheckoutStarted",
        "OrderPlaced",
        "OrderRejected",
        "RefundRequested",
        "CheckoutRejected",
        "RefundIssued",
    ):
        assert expected in types, types
    assert "StockReserved" not in types and "PaymentConfirmed" not in types
    by_type = {e["type"]: e for e in events}
    # The rejection, the refund request and the cart's reopening are one decision: one cause,
    # the Stripe event that brought the payment. The outcome came later, from the refund.
    decision = by_type["OrderRejected"]["cause"]
    assert decision.startswith("stripe:evt_")
    assert by_type["RefundRequested"]["cause"] == decision
    assert by_type["CheckoutRejected"]["cause"] == decision
    assert by_type["OrderRejected"]["data"]["reason"] == "out_of_stock"
    assert by_type["RefundIssued"]["cause"] and by_type["RefundIssued"]["cause"] != decision
    assert by_type["CheckoutStarted"]["cause"].startswith("http:")
    assert by_type["CheckoutRejected"]["data"]["session_id"] == second
    for event in events:
        assert set(event) == EVENT_KEYS
        assert event["cause"]
        own = event["stream"] == "order"
        assert (event["stream_id"] == order_id) == own

    # The confirmed order: its own events, the stock it took and its cart's events.
    confirmed_id = order_id_of(shop, first)
    confirmed = history(shop, confirmed_id)
    types = [e["type"] for e in confirmed]
    for expected in (
        "CheckoutStarted",
        "OrderPlaced",
        "PaymentConfirmed",
        "StockReserved",
        "CartConverted",
    ):
        assert expected in types, types
    assert "OrderRejected" not in types
    reserved = next(e for e in confirmed if e["type"] == "StockReserved")
    assert reserved["stream"] == "inventory"
    assert reserved["data"]["order_id"] == confirmed_id
    assert reserved["data"]["quantity"] == 1
    paid = next(e for e in confirmed if e["type"] == "PaymentConfirmed")
    assert reserved["cause"] == paid["cause"]  # one commit, one cause
    # Nothing of the other session's order leaks in.
    assert not {e["position"] for e in confirmed} & {e["position"] for e in events}


def test_an_unknown_order_is_404(shop: Shop) -> None:
    shop.product("mug", stock=2)
    session_id = shop.checkout(shop.cart(mug=1))  # started, not paid: no order yet
    for order_id in (uuid.uuid4(), order_id_for(session_id), "not-a-uuid"):
        r = shop.api.get(f"/api/audit/orders/{order_id}/history", headers=AUDIT)
        assert_error(r, 404, "unknown_order")


# ---- stock at an instant -----------------------------------------------------------------


def test_stock_at_a_time_between_two_reservations(shop: Shop) -> None:
    shop.product("pen", stock=10)
    first = shop.checkout(shop.cart(pen=3))
    second = shop.checkout(shop.cart(pen=2))
    shop.stripe.complete(first, "pay")
    settles_as(shop, first, "confirmed")
    shop.stripe.complete(second, "pay")
    settles_as(shop, second, "confirmed")

    def reserved_at(session_id: str) -> datetime:
        (event,) = [
            e for e in history(shop, order_id_of(shop, session_id)) if e["type"] == "StockReserved"
        ]
        return datetime.fromisoformat(event["recorded_at"])

    one, two = reserved_at(first), reserved_at(second)
    assert one < two
    between = one + (two - one) / 2
    r = stock_at(shop, "pen", between.isoformat())
    assert r.status_code == 200, r.text
    assert r.json() == {"sku": "pen", "on_hand": 7, "at": between.isoformat()}
    # At the very instant of an event, it counts; a microsecond before, not yet.
    assert stock_at(shop, "pen", one.isoformat()).json()["on_hand"] == 7
    assert (
        stock_at(shop, "pen", (one - timedelta(microseconds=1)).isoformat()).json()["on_hand"] == 10
    )
    assert stock_at(shop, "pen", two.isoformat()).json()["on_hand"] == 5
    # A time without a zone is UTC; an unescaped "+" (a space once decoded) is an offset.
    naive = between.replace(tzinfo=None).isoformat()
    assert stock_at(shop, "pen", naive).json()["on_hand"] == 7
    r = shop.api.get(
        f"/api/audit/products/pen/stock?at={between.isoformat()}", headers=AUDIT
    )  # "+00:00" left unescaped in the URL
    assert r.status_code == 200 and r.json()["on_hand"] == 7

    listed = datetime.fromisoformat(
        next(e for e in page_to_end(shop, 0, 100)[0] if e["type"] == "ProductListed")["recorded_at"]
    )
    before = (listed - timedelta(seconds=1)).isoformat()
    assert_error(stock_at(shop, "pen", before), 404, "unknown_product")
    assert stock_at(shop, "pen", listed.isoformat()).json()["on_hand"] == 0
    assert_error(stock_at(shop, "nothing-here", between.isoformat()), 404, "unknown_product")
    assert_error(stock_at(shop, "pen", "yesterday"), 422, "validation_error")
    r = shop.api.get("/api/audit/products/pen/stock", headers=AUDIT)
    assert_error(r, 422, "validation_error")


# ---- the auditor token ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/audit/events",
        f"/api/audit/orders/{uuid.uuid4()}/history",
        "/api/audit/products/mug/stock?at=2025-01-01T00:00:00Z",
    ],
)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {ADMIN}"},
        {"Authorization": AUDITOR},
        {"Authorization": f"Basic {AUDITOR}"},
    ],
    ids=["none", "wrong", "admin", "no-scheme", "basic"],
)
def test_the_audit_endpoints_need_the_auditor_token(
    shop: Shop, path: str, headers: dict[str, str]
) -> None:
    r = shop.api.get(path, headers=headers)
    assert_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"
    assert AUDITOR not in r.text


# ---- the commands --------------------------------------------------------------------------


def test_ledger_audit_export_writes_the_log_as_the_http_pages_give_it(
    shop: Shop, database: Database, tmp_path: Path
) -> None:
    _first, second = paid_for_the_last_unit(shop, "mug")
    shop.stripe.complete(second, "pay")
    settles_as(shop, second, "refunded")
    paged, _ = page_to_end(shop, 0, 50)
    assert len(paged) > 15

    done = ledger_cli(database, tmp_path, "export")
    assert done.returncode == 0, done.stderr
    assert json_lines(done.stdout) == paged
    assert "done:" in done.stderr and f"{len(paged):,} events" in done.stderr

    middle = paged[len(paged) // 2]["position"]
    done = ledger_cli(database, tmp_path, "export", "--after", str(middle))
    assert done.returncode == 0, done.stderr
    assert json_lines(done.stdout) == [e for e in paged if e["position"] > middle]

    # --until: everything up to the first event recorded after that time.
    until = datetime.fromisoformat(paged[len(paged) // 3]["recorded_at"])
    expected: list[dict[str, Any]] = []
    for event in paged:
        if datetime.fromisoformat(event["recorded_at"]) > until:
            break
        expected.append(event)
    assert 0 < len(expected) < len(paged)
    done = ledger_cli(database, tmp_path, "export", "--until", until.isoformat())
    assert done.returncode == 0, done.stderr
    assert json_lines(done.stdout) == expected
    naive = until.replace(tzinfo=None).isoformat()  # UTC when it has no zone
    done = ledger_cli(database, tmp_path, "export", "--after", "2", "--until", naive)
    assert json_lines(done.stdout) == [e for e in expected if e["position"] > 2]

    for bad in (["--until", "soon"], ["--after", "-3"]):
        done = ledger_cli(database, tmp_path, "export", *bad)
        assert done.returncode == 2 and done.stdout == ""
        assert "Traceback" not in done.stderr

    # history and stock, from the same log.
    order_id = order_id_of(shop, second)
    done = ledger_cli(database, tmp_path, "history", order_id, "--json")
    assert done.returncode == 0, done.stderr
    assert json_lines(done.stdout) == history(shop, order_id)
    done = ledger_cli(database, tmp_path, "history", order_id)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"order {order_id}: ")
    for expected_type in ("OrderRejected", "RefundRequested", "RefundIssued"):
        assert expected_type in done.stdout
    done = ledger_cli(database, tmp_path, "history", str(uuid.uuid4()))
    assert done.returncode == 1 and done.stdout == ""
    assert "no order" in done.stderr and "Traceback" not in done.stderr

    reserved = next(e for e in paged if e["type"] == "StockReserved")
    at = reserved["recorded_at"]
    done = ledger_cli(database, tmp_path, "stock", "mug", "--at", at)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "0"  # the one unit, taken by the first order
    before = (datetime.fromisoformat(at) - timedelta(microseconds=1)).isoformat()
    done = ledger_cli(database, tmp_path, "stock", "mug", "--at", before, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == stock_at(shop, "mug", before).json()
    assert json.loads(done.stdout)["on_hand"] == 1
    done = ledger_cli(database, tmp_path, "stock", "nothing", "--at", at)
    assert done.returncode == 1 and "no product" in done.stderr
    done = ledger_cli(database, tmp_path, "stock", "mug", "--at", "later")
    assert done.returncode == 2
    assert done.stderr.startswith("ledger: ") and len(done.stderr.strip().splitlines()) == 1


def test_ledger_audit_history_with_no_workers_running_brings_its_read_model_up_itself(
    database: Database, tmp_path: Path
) -> None:
    # Written straight to the log: no worker has ever run on this database.
    ledger = Ledger(env=database.eventsourcing_env())
    try:
        ledger.put_product("mug", "Mug", 1250, "usd", "test:setup")
        ledger.adjust_stock("mug", 5, None, "test:setup")
        cart = Cart(user_id=None, cause="test:cart")
        cart.set_line("mug", 2, "test:cart")
        session_id = f"cs_test_{uuid.uuid4().hex}"
        cart.start_checkout(
            session_id,
            lines=[{"sku": "mug", "name": "Mug", "quantity": 2, "unit_amount": 1250}],
            amount_total=2500,
            currency="usd",
            cause="test:checkout",
        )
        ledger.save(cart)
        order = ledger.place_order(
            PaidSession(session_id, cart.id, 2500, "usd", "pi_test"), "test:paid"
        )
    finally:
        ledger.close()

    done = ledger_cli(database, tmp_path, "history", str(order.id), "--json")
    assert done.returncode == 0, done.stderr
    events = json_lines(done.stdout)
    assert events[0]["type"] == "CheckoutStarted"
    # The rest is one commit (its order within the commit is the library's).
    assert sorted(e["type"] for e in events[1:]) == [
        "CartConverted",
        "OrderPlaced",
        "PaymentConfirmed",
        "StockReserved",
    ]
    assert {e["cause"] for e in events[1:]} == {"test:paid"}


# ---- money as Stripe charged it ---------------------------------------------------------------


def test_a_session_charged_otherwise_than_priced_counts_as_charged(
    ledger: Ledger, database: Database, tmp_path: Path
) -> None:
    # Two carts priced 2000 usd: Stripe charged one 1999 usd and the other 1000 eur. Both are
    # refunded; the report and the status show what Stripe charged, never the priced cart.
    ledger.put_product("print", "Print", 2000, "usd", "test:setup")
    ledger.adjust_stock("print", 5, None, "test:setup")
    charged = {"cs_test_short": (1999, "usd"), "cs_test_foreign": (1000, "eur")}
    for session_id, (amount, currency) in charged.items():
        cart = ledger.create_cart(None, "test:cart")
        ledger.set_cart_line(cart.id, "print", 1, "test:cart")
        ledger.start_checkout(ledger.price(ledger.get_cart(cart.id)), session_id, "test:checkout")
        paid = PaidSession(session_id, cart.id, amount, currency, f"pi_{session_id}")
        assert ledger.place_order(paid, "test:paid").status == OrderStatus.REFUND_PENDING

    done = ledger_cli(database, tmp_path, "report", "--json")
    assert done.returncode == 0, done.stderr
    currencies = json.loads(done.stdout)["currencies"]
    one = {"count": 1, "amount": 1999}
    assert currencies["usd"]["payments"] == currencies["usd"]["refunds_pending"] == one
    one = {"count": 1, "amount": 1000}
    assert currencies["eur"]["payments"] == currencies["eur"]["refunds_pending"] == one

    with workers(database) as runner, store(database) as reads:
        reads.wait_on(runner)
        assert caught_up(database, ["order_status"], timeout=10)
        statuses = OrderStatuses(reads)
        for session_id, (amount, currency) in charged.items():
            body = statuses.get(session_id)
            assert body is not None
            assert (body["amount_total"], body["currency"]) == (amount, currency)
    assert ledger_cli(database, tmp_path, "verify").returncode == 0
