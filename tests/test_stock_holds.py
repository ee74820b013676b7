"""Stock held at checkout (`LEDGER_STOCK_HOLD`), through real parts: `ledger serve` processes or
the in-process shop, a real PostgreSQL, the real stripe SDK talking HTTP to the stand-in.

A checkout holds its cart's units in the commit that checks them, so no two customers hold the
same unit: a flash sale ends without a single refund. A hold ends when its time is up (the
ledger expires the Stripe session itself), when the session expires, or when the cart checks
out again (the earlier session is expired at Stripe first). Stripe's answer to the expiry
settles the race with a customer paying at the last second.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from ledger.checkout import CheckoutAbandoned, CheckoutAttempt
from ledger.domain import inventory_item_id
from ledger.domain.vocabulary import CaptureMode
from ledger.storage import Database
from stripe_standin import StripeStandIn
from tests.conftest import count_rows
from tests.processes import run_ledger, serving
from tests.shop import (
    ADMIN,
    AUDITOR,
    STRIPE_KEY,
    WEBHOOK_SECRET,
    Shop,
    deliver,
    done_once_each,
    money_at_stripe,
    running_shop,
    stripe_calls,
)
from tests.waiting import wait_until
from web.serving import run_in_thread

SKU = "print"
UNIT_AMOUNT = 4000
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}
AUDIT_HEADERS = {"Authorization": f"Bearer {AUDITOR}"}
CONCURRENT = 32
# Long enough that no hold ends by itself while a test runs.
LONG_HOLD = "15m"
# Short enough to watch a hold end; the Stripe session still gets Stripe's 30-minute minimum.
SHORT_HOLD = "2s"
STRIPE_MINIMUM_EXPIRY_SECONDS = 30 * 60


# ------------------------------------------------------------------ parts


@contextmanager
def stand_in_serving(webhook_url: str | None = None) -> Iterator[tuple[StripeStandIn, str]]:
    """The stand-in on its own port, in this process, remembering every call it gets (a flash
    sale makes a few thousand). Without `webhook_url` it delivers nothing: the test does, as
    Stripe's retries would."""
    stand_in = StripeStandIn(
        api_key=STRIPE_KEY,
        webhook_url=webhook_url,
        webhook_secret=WEBHOOK_SECRET,
        public_base_url="http://127.0.0.1",
        max_logged_requests=50_000,
        max_events=50_000,
        max_deliveries=50_000,
    )
    try:
        with run_in_thread(stand_in.app) as server:
            stand_in.public_base_url = server.url
            yield stand_in, server.url
    finally:
        stand_in.close()


def ledger_env(database: Database, stripe_url: str, **extra: str) -> dict[str, str]:
    return {
        "LEDGER_DATABASE_URL": database.conninfo_url(),
        "LEDGER_ADMIN_TOKEN": ADMIN,
        "LEDGER_AUDITOR_TOKEN": AUDITOR,
        "STRIPE_API_KEY": STRIPE_KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_API_BASE": stripe_url,
        **extra,
    }


def add_product(api: httpx.Client, sku: str, units: int, unit_amount: int = UNIT_AMOUNT) -> None:
    product = {"name": f"Limited {sku}", "unit_amount": unit_amount, "currency": "usd"}
    r = api.put(f"/api/products/{sku}", json=product, headers=ADMIN_HEADERS)
    assert r.status_code in (200, 201), r.text
    r = api.post(f"/api/products/{sku}/stock", json={"quantity": units}, headers=ADMIN_HEADERS)
    assert r.status_code == 200, r.text


def new_cart(client: httpx.Client, url: str, sku: str, quantity: int = 1) -> str:
    r = client.post(f"{url}/api/carts", json={})
    assert r.status_code == 201, r.text
    cart_id: str = r.json()["cart_id"]
    r = client.put(f"{url}/api/carts/{cart_id}/items/{sku}", json={"quantity": quantity})
    assert r.status_code == 200, r.text
    return cart_id


def utc_instant(text: Any) -> datetime:
    """An ISO-8601 time in UTC (`Z` or `+00:00`), as the contract writes `held_until`."""
    assert isinstance(text, str), text
    instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert instant.utcoffset() is not None and instant.utcoffset() == UTC.utcoffset(None), text
    return instant


def intent_status(stand_in: StripeStandIn, intent_id: str) -> str:
    (intent,) = (pi for pi in stand_in.payment_intents() if pi["id"] == intent_id)
    status: str = intent["status"]
    return status


def available(api: httpx.Client, sku: str) -> int:
    r = api.get(f"/api/products/{sku}")
    assert r.status_code == 200, r.text
    n: int = r.json()["available"]
    return n


def on_hand(api: httpx.Client, sku: str) -> int:
    """Stock on hand now, as an auditor reads it (holds leave it unchanged)."""
    at = datetime.now(UTC).isoformat()
    r = api.get(f"/api/audit/products/{sku}/stock", params={"at": at}, headers=AUDIT_HEADERS)
    assert r.status_code == 200, r.text
    n: int = r.json()["on_hand"]
    return n


def statuses(api: httpx.Client, sessions: list[str]) -> Counter[str]:
    found: Counter[str] = Counter()
    for sid in sessions:
        r = api.get(f"/api/checkout-sessions/{sid}/order")
        assert r.status_code == 200, r.text
        found[r.json()["status"]] += 1
    return found


def wait_for_statuses(
    api: httpx.Client, sessions: list[str], expected: dict[str, int], timeout: float = 60
) -> None:
    wait_until(
        lambda: statuses(api, sessions) == expected, timeout, lambda: statuses(api, sessions)
    )


def event_counts(database: Database, sku: str) -> dict[str, int]:
    """How many of each event the log holds: orders placed, stock taken, refunds asked for."""
    with database.connect() as conn:
        row = conn.execute(
            "SELECT"
            " count(*) FILTER (WHERE topic LIKE '%%Order.OrderPlaced'),"
            " count(*) FILTER (WHERE originator_id = %s AND topic LIKE '%%.StockReserved'),"
            " count(*) FILTER (WHERE topic LIKE '%%.RefundRequested')"
            " FROM ledger_events",
            (inventory_item_id(sku),),
        ).fetchone()
    assert row is not None
    return dict(zip(("orders", "stock_taken", "refunds"), map(int, row), strict=True))


def audit_verifies(workdir: Path, database: Database) -> None:
    """`ledger audit verify` as an auditor runs it: exit 0, no violation named."""
    done = run_ledger(workdir, "audit", "verify", LEDGER_DATABASE_URL=database.conninfo_url())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "VIOLATION" not in done.stdout, done.stdout


ZERO = {"count": 0, "amount": 0}
# The report's manual-capture figures and what the stand-in calls each.
AUTHORIZATION_FIGURES = {
    "authorizations": "authorizations",
    "captured": "captured",
    "released": "released",
    "awaiting_capture": "awaiting_capture",
    "capture_failed": "lapsed",
}


def report_matches_stripe(workdir: Path, database: Database, stand_in: StripeStandIn) -> None:
    """`ledger audit report --json`, per currency, says what the stand-in recorded: payments
    are what was charged (captured, with manual capture), refunds what was refunded, and each
    authorization captured, released, lapsed (capture failed) or awaiting capture."""
    done = run_ledger(
        workdir, "audit", "report", "--json", LEDGER_DATABASE_URL=database.conninfo_url()
    )
    assert done.returncode == 0, done.stdout + done.stderr
    reported: dict[str, dict[str, Any]] = json.loads(done.stdout)["currencies"]
    at_stripe = money_at_stripe(stand_in)
    for currency in set(reported) | set(at_stripe):
        ours = reported.get(currency, {})
        theirs = at_stripe.get(currency, {})

        def figure(name: str, ours: dict[str, Any] = ours) -> dict[str, int]:
            value: dict[str, int] = ours.get(name, ZERO)
            return value

        def stripe(name: str, theirs: dict[str, Any] = theirs) -> dict[str, int]:
            value: dict[str, int] = theirs.get(name, ZERO)
            return value

        issued, pending = figure("refunds_issued"), figure("refunds_pending")
        refunds = {k: issued[k] + pending[k] for k in ("count", "amount")}
        assert (figure("payments"), refunds, figure("refunds_failed")) == (
            stripe("charged"),
            stripe("refunded"),
            stripe("refunds_failed"),
        ), (currency, ours, theirs)
        for ours_name, theirs_name in AUTHORIZATION_FIGURES.items():
            assert figure(ours_name) == stripe(theirs_name), (currency, ours_name, ours, theirs)


# ------------------------------------------------------------------ a flash sale with holds


def checkout_all(urls: tuple[str, str], carts: list[str]) -> list[httpx.Response]:
    """Every cart checked out, 32 at a time, alternately at either process."""
    limits = httpx.Limits(max_connections=CONCURRENT)
    with (
        httpx.Client(timeout=60, limits=limits) as client,
        ThreadPoolExecutor(CONCURRENT) as pool,
    ):
        return list(
            pool.map(
                lambda i: client.post(f"{urls[i % 2]}/api/carts/{carts[i]}/checkout"),
                range(len(carts)),
            )
        )


def make_carts(urls: tuple[str, str], count: int) -> list[str]:
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda i: new_cart(client, urls[i % 2], SKU), range(count)))


def deliver_all(stand_in: StripeStandIn, deliveries: list[tuple[str, str]]) -> list[int]:
    """Each (url, session) pair's checkout.session.completed posted to that process, in random
    order, 32 in flight: the answers."""
    shuffled = list(deliveries)
    random.Random(16).shuffle(shuffled)
    limits = httpx.Limits(max_connections=CONCURRENT)
    with (
        httpx.Client(timeout=60, limits=limits) as client,
        ThreadPoolExecutor(CONCURRENT) as pool,
    ):
        return list(pool.map(lambda d: deliver(client, stand_in, *d), shuffled))


def assert_checkouts_split(
    answers: list[httpx.Response], units: int, stand_in: StripeStandIn
) -> list[str]:
    """Exactly `units` checkouts were created (each holding its unit, each a session at the
    stand-in), the rest answered 409 out_of_stock, none 5xx: the created sessions."""
    codes = Counter(a.status_code for a in answers)
    errors = Counter(
        (a.status_code, a.json()["error"]["code"]) for a in answers if a.status_code != 201
    )
    assert codes == {201: units, 409: len(answers) - units}, (codes, errors)
    created = [a.json() for a in answers if a.status_code == 201]
    for refused in (a.json() for a in answers if a.status_code == 409):
        assert refused["error"]["code"] == "out_of_stock", refused
        assert refused["error"]["items"] == [{"sku": SKU, "requested": 1, "available": 0}], refused
    for body in created:
        utc_instant(body["held_until"])
    sessions = [str(body["checkout_session_id"]) for body in created]
    at_stripe = stand_in.sessions()
    assert sorted(s["id"] for s in at_stripe) == sorted(sessions)
    creations = stripe_calls(stand_in, "POST", "/v1/checkout/sessions")
    assert len([c for c in creations if not c["replayed"]]) == units
    # Stripe's minimum: a hold shorter than 30 minutes still gives its session 30 minutes.
    for session in at_stripe:
        assert session["expires_at"] - session["created"] >= STRIPE_MINIMUM_EXPIRY_SECONDS
        assert session["status"] == "open"
    return sessions


def test_300_held_checkouts_for_250_units_over_two_processes_end_without_a_refund(
    tmp_path: Path, database: Database
) -> None:
    customers, units = 300, 250
    with stand_in_serving() as (stand_in, stripe_url):
        env = ledger_env(database, stripe_url, LEDGER_STOCK_HOLD=LONG_HOLD)
        with (
            serving(tmp_path, **env) as first,
            serving(tmp_path, **env) as second,
            httpx.Client(base_url=first, timeout=30) as api,
        ):
            add_product(api, SKU, units)
            urls = (first, second)
            carts = make_carts(urls, customers)
            sessions = assert_checkouts_split(checkout_all(urls, carts), units, stand_in)
            assert available(api, SKU) == 0  # every unit is held
            assert on_hand(api, SKU) == units  # held, not taken

            for sid in sessions:
                stand_in.complete(sid, "pay")
            # Each event twice, once to each process.
            answers = deliver_all(stand_in, [(url, sid) for sid in sessions for url in urls])
            assert Counter(answers) == {200: 2 * units}

            wait_for_statuses(api, sessions, {"confirmed": units})
            assert stand_in.refunds() == []
            assert available(api, SKU) == 0 and on_hand(api, SKU) == 0
            assert event_counts(database, SKU) == {
                "orders": units,
                "stock_taken": units,
                "refunds": 0,
            }
        audit_verifies(tmp_path, database)
        report_matches_stripe(tmp_path, database, stand_in)


def test_flash_sale_with_holds_and_manual_capture_charges_only_customers_it_serves(
    tmp_path: Path, database: Database
) -> None:
    customers, units = 300, 250
    with stand_in_serving() as (stand_in, stripe_url):
        env = ledger_env(database, stripe_url, LEDGER_STOCK_HOLD=LONG_HOLD, LEDGER_CAPTURE="manual")
        with (
            serving(tmp_path, **env) as first,
            serving(tmp_path, **env) as second,
            httpx.Client(base_url=first, timeout=30) as api,
        ):
            add_product(api, SKU, units)
            urls = (first, second)
            carts = make_carts(urls, customers)
            sessions = assert_checkouts_split(checkout_all(urls, carts), units, stand_in)
            creations = stripe_calls(stand_in, "POST", "/v1/checkout/sessions")
            assert {c["params"]["payment_intent_data"]["capture_method"] for c in creations} == {
                "manual"
            }

            # From here on Stripe delivers every event it emits (the authorizations, the
            # completed sessions, the captures) to the first process; each completed session
            # is also delivered to the second, as a redelivery.
            stand_in.webhook_url = f"{first}/webhooks/stripe"
            for sid in sessions:
                stand_in.complete(sid, "pay")
            answers = deliver_all(stand_in, [(second, sid) for sid in sessions])
            assert Counter(answers) == {200: units}

            wait_for_statuses(api, sessions, {"confirmed": units})
            intents = {str(stand_in.payment_intent_of(sid)): sid for sid in sessions}

            def captured() -> Counter[str]:
                return Counter(
                    pi["status"] for pi in stand_in.payment_intents() if pi["id"] in intents
                )

            wait_until(lambda: captured() == {"succeeded": units}, 60, captured)
            emitted = len(stand_in.events())
            stand_in.wait_for_deliveries(emitted, timeout=60)

            # Nobody was charged without an order, and nobody was refunded.
            assert stand_in.refunds() == []
            charged = [pi for pi in stand_in.payment_intents() if pi["amount_received"]]
            assert len(charged) == units
            assert statuses(api, [intents[pi["id"]] for pi in charged]) == {"confirmed": units}
            # Every webhook Stripe sent was answered 200, the first time.
            assert {(d["status"], d["attempt"]) for d in stand_in.deliveries()} == {(200, 1)}
            assert available(api, SKU) == 0 and on_hand(api, SKU) == 0
            assert event_counts(database, SKU) == {
                "orders": units,
                "stock_taken": units,
                "refunds": 0,
            }
        audit_verifies(tmp_path, database)
        report_matches_stripe(tmp_path, database, stand_in)


# ------------------------------------------------------------------ a hold that lapses


@pytest.fixture(params=["automatic", "manual"])
def short_holds(database: Database, request: pytest.FixtureRequest) -> Iterator[Shop]:
    """A shop holding stock for two seconds, capturing payments at once or (manual) once the
    order is placed."""
    with running_shop(database, LEDGER_STOCK_HOLD=SHORT_HOLD, LEDGER_CAPTURE=request.param) as shop:
        yield shop


def session_at_stripe(shop: Shop, session_id: str) -> dict[str, Any]:
    (session,) = (s for s in shop.stripe.sessions() if s["id"] == session_id)
    return session


def expire_calls(shop: Shop, session_id: str) -> list[dict[str, Any]]:
    return stripe_calls(shop.stripe, "POST", f"/v1/checkout/sessions/{session_id}/expire")


def test_a_hold_whose_time_is_up_expires_its_session_and_frees_its_units(
    short_holds: Shop, database: Database, tmp_path: Path
) -> None:
    shop = short_holds
    shop.product("mug", stock=1)
    cart_id = shop.cart(mug=1)
    r = shop.api.post(f"/api/carts/{cart_id}/checkout")
    assert r.status_code == 201, r.text
    first = r.json()
    held_until = utc_instant(first["held_until"])
    cart = shop.get_cart(cart_id)
    assert cart["status"] == "checking_out"
    assert utc_instant(cart["held_until"]) == held_until
    # The session gets Stripe's minimum of 30 minutes; the ledger ends it sooner itself.
    session = session_at_stripe(shop, first["checkout_session_id"])
    assert session["expires_at"] - session["created"] >= STRIPE_MINIMUM_EXPIRY_SECONDS

    # Nobody else can take the held unit while the hold stands (it stands at least until
    # held_until: an answer received before then was given while it stood).
    other = shop.cart(mug=1)
    r = shop.api.post(f"/api/carts/{other}/checkout")
    if datetime.now(UTC) < held_until:
        assert r.status_code == 409, r.text
        assert r.json()["error"]["items"] == [{"sku": "mug", "requested": 1, "available": 0}]

    sid = first["checkout_session_id"]
    wait_until(lambda: session_at_stripe(shop, sid)["status"] == "expired", 30)
    assert expire_calls(shop, sid)[0]["status"] == 200  # the ledger expired it
    wait_until(lambda: shop.available("mug") == 1, 30, lambda: shop.available("mug"))
    wait_until(lambda: shop.get_cart(cart_id)["status"] == "open", 30)
    wait_until(lambda: shop.status(sid) == "expired", 30, lambda: shop.status(sid))
    with pytest.raises(ValueError):
        shop.stripe.complete(sid, "pay")  # the customer comes back too late: nothing to pay

    # The cart checks out again: a new hold, a new session.
    again = shop.api.post(f"/api/carts/{cart_id}/checkout")
    assert again.status_code == 201, again.text
    assert again.json()["checkout_session_id"] != sid
    assert utc_instant(again.json()["held_until"]) > held_until
    audit_verifies(tmp_path, database)
    report_matches_stripe(tmp_path, database, shop.stripe)


def pay_before_the_hold_ends(shop: Shop, sku: str) -> str:
    """A one-unit cart checked out and paid at once at the stand-in, its events held back:
    the ledger learns of the payment only from its own attempt to expire the session when
    the hold's time is up (Stripe answers that the session is complete)."""
    shop.stripe.webhook_url = None
    sid = shop.checkout(shop.cart(**{sku: 1}))
    shop.stripe.complete(sid, "pay")
    wait_until(lambda: bool(expire_calls(shop, sid)), 30)
    assert expire_calls(shop, sid)[0]["status"] == 400  # already complete
    assert session_at_stripe(shop, sid)["status"] == "complete"
    return sid


def test_a_payment_that_beats_the_expiry_is_placed_on_its_hold(
    short_holds: Shop, database: Database, tmp_path: Path
) -> None:
    shop = short_holds
    shop.product("mug", stock=1)
    sid = pay_before_the_hold_ends(shop, "mug")
    # The customer paid in time: the hold stands until that payment is decided.
    assert shop.available("mug") == 0
    other = shop.cart(mug=1)
    r = shop.api.post(f"/api/carts/{other}/checkout")
    assert r.status_code == 409 and r.json()["error"]["code"] == "out_of_stock", r.text

    shop.stripe.webhook_url = f"{shop.url}/webhooks/stripe"
    for _ in range(2):
        assert shop.deliver("checkout.session.completed", sid).status_code == 200
    wait_until(lambda: shop.status(sid) == "confirmed", 30, lambda: shop.status(sid))
    intent = str(shop.stripe.payment_intent_of(sid))
    if shop.services.settings.capture == CaptureMode.MANUAL:
        wait_until(lambda: intent_status(shop.stripe, intent) == "succeeded", 30)
        assert done_once_each(shop.stripe, "capture") == {intent: 1}
    assert intent_status(shop.stripe, intent) == "succeeded"
    assert shop.available("mug") == 0 and on_hand(shop.api, "mug") == 0
    assert shop.stripe.refunds() == []
    assert event_counts(database, "mug")["stock_taken"] == 1  # the hold became the order's
    audit_verifies(tmp_path, database)
    report_matches_stripe(tmp_path, database, shop.stripe)


def test_a_delayed_payment_begun_before_the_hold_ends_keeps_the_hold_until_it_clears(
    database: Database, tmp_path: Path
) -> None:
    with running_shop(database, LEDGER_STOCK_HOLD=SHORT_HOLD) as shop:
        shop.product("mug", stock=2)
        clears, fails = (shop.checkout(shop.cart(mug=1)) for _ in range(2))
        for sid in (clears, fails):
            shop.stripe.complete(sid, "pay_later")  # a bank debit: complete, not yet paid
        # A witness: a hold that ends after theirs. Once the ledger has expired its session,
        # the hold timer has had its chance to end theirs too.
        shop.product("pen", stock=1)
        witness = shop.checkout(shop.cart(pen=1))
        wait_until(lambda: session_at_stripe(shop, witness)["status"] == "expired", 30)
        for sid in (clears, fails):
            assert shop.status(sid) == "awaiting_payment"
        # Both customers paid in time: both holds stand past their time.
        assert shop.available("mug") == 0
        r = shop.api.post(f"/api/carts/{shop.cart(mug=1)}/checkout")
        assert r.status_code == 409 and r.json()["error"]["code"] == "out_of_stock", r.text

        shop.stripe.complete(fails, "async_fail")
        wait_until(lambda: shop.status(fails) == "payment_failed", 30)
        wait_until(lambda: shop.available("mug") == 1, 30, lambda: shop.available("mug"))
        shop.stripe.complete(clears, "async_succeed")
        wait_until(lambda: shop.status(clears) == "confirmed", 30)
        assert shop.available("mug") == 1 and on_hand(shop.api, "mug") == 1
        assert shop.stripe.refunds() == []
        audit_verifies(tmp_path, database)
        report_matches_stripe(tmp_path, database, shop.stripe)


# ------------------------------------------------------------------ a cart checked out twice


def test_a_cart_checked_out_twice_expires_its_first_session_before_the_second_exists(
    database: Database, tmp_path: Path
) -> None:
    with running_shop(database, LEDGER_STOCK_HOLD=LONG_HOLD) as shop:
        shop.product("mug", stock=5)
        cart_id = shop.cart(mug=2)
        first = shop.checkout(cart_id)
        assert shop.available("mug") == 3
        calls_before = len(shop.stripe.requests())
        second = shop.checkout(cart_id)
        assert second != first

        # At Stripe: the first session was expired (by the ledger) before the second was
        # created, so the cart never had two sessions a customer could pay.
        calls = shop.stripe.requests()[calls_before:]
        expired_at = [
            i
            for i, c in enumerate(calls)
            if c["path"] == f"/v1/checkout/sessions/{first}/expire" and c["status"] == 200
        ]
        created_at = [
            i
            for i, c in enumerate(calls)
            if c["method"] == "POST" and c["path"] == "/v1/checkout/sessions"
        ]
        assert expired_at and created_at and expired_at[0] < created_at[0], calls
        first_at_stripe = session_at_stripe(shop, first)
        second_at_stripe = session_at_stripe(shop, second)
        assert first_at_stripe["status"] == "expired"
        assert second_at_stripe["status"] == "open"
        assert first_at_stripe["created"] <= second_at_stripe["created"]
        with pytest.raises(ValueError):
            shop.stripe.complete(first, "pay")  # the first can no longer be paid
        page = httpx.post(f"{shop.stripe.public_base_url}/pay/{first}/pay", follow_redirects=True)
        assert page.status_code == 409

        # One hold for the cart: the first ended when the cart checked out again.
        assert shop.available("mug") == 3
        assert utc_instant(shop.get_cart(cart_id)["held_until"])
        wait_until(lambda: shop.status(first) == "expired", 30, lambda: shop.status(first))

        shop.stripe.complete(second, "pay")
        wait_until(lambda: shop.status(second) == "confirmed", 30, lambda: shop.status(second))
        assert shop.get_cart(cart_id)["status"] == "converted"
        assert shop.available("mug") == 3 and on_hand(shop.api, "mug") == 3
        assert shop.stripe.refunds() == []
        audit_verifies(tmp_path, database)
        report_matches_stripe(tmp_path, database, shop.stripe)


def test_a_cart_checked_out_four_times_at_once_keeps_one_payable_session(
    database: Database,
) -> None:
    # A double click, or a retry while the first request still runs: each checkout ends the
    # sessions recorded before its own, so the newest stays payable and holds the stock once.
    with running_shop(database, LEDGER_STOCK_HOLD=LONG_HOLD) as shop:
        shop.product(SKU, stock=10)
        cart_id = shop.cart(**{SKU: 2})
        start = threading.Barrier(4)

        def check_out(_: int) -> httpx.Response:
            start.wait()
            return shop.api.post(f"/api/carts/{cart_id}/checkout")

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(check_out, range(4)))
        assert [a.status_code for a in answers] == [201] * 4, [a.text for a in answers]
        created = {a.json()["checkout_session_id"] for a in answers}
        at_stripe = Counter(s["status"] for s in shop.stripe.sessions() if s["id"] in created)
        assert at_stripe == {"open": 1, "expired": 3}
        wait_until(lambda: shop.available(SKU) == 8, what=lambda: shop.available(SKU))
        assert shop.get_cart(cart_id)["status"] == "checking_out"


@pytest.mark.parametrize("hold", [LONG_HOLD, None], ids=["with holds", "without holds"])
def test_a_checkout_run_again_by_its_request_takes_makes_and_records_nothing_twice(
    database: Database, hold: str | None
) -> None:
    # A request runs its checkout again after a failure whose commit may have gone through (a
    # failover: web.store_calls): with the same `CheckoutAttempt`, what the first run did is
    # found and not done again: one hold, one session at Stripe, one CheckoutStarted.
    with running_shop(database, **({"LEDGER_STOCK_HOLD": hold} if hold else {})) as shop:
        shop.product(SKU, stock=10)
        checkout = shop.services.checkout
        made_before = len(shop.stripe.sessions())

        # The first run recorded its session, and failed only to say so.
        cart_id = UUID(shop.cart(**{SKU: 2}))
        attempt = CheckoutAttempt()
        first = checkout.begin(cart_id, "test", attempt=attempt)
        events = count_rows(database, "ledger_events")
        assert checkout.begin(cart_id, "test", attempt=attempt) == first
        assert count_rows(database, "ledger_events") == events
        assert len(shop.stripe.sessions()) == made_before + 1
        if hold is None:
            return

        # The first run took its hold, and failed before Stripe was asked: the hold is used.
        other = UUID(shop.cart(**{SKU: 3}))
        held_until = (datetime.now(UTC) + timedelta(minutes=15)).isoformat(timespec="seconds")
        attempt = CheckoutAttempt(
            held_until=held_until, expires_at=datetime.now(UTC) + timedelta(minutes=31)
        )
        shop.services.ledger.hold_stock(other, attempt.hold_id, held_until, "test")
        created = checkout.begin(other, "test", attempt=attempt)
        with database.connect() as conn:
            placed = conn.execute(
                "SELECT count(*) FROM ledger_events WHERE originator_id = %s AND topic LIKE %s",
                (other, "%.HoldPlaced"),
            ).fetchone()
        assert placed == (1,)
        assert created.session_id in {s["id"] for s in shop.stripe.sessions()}
        wait_until(lambda: shop.available(SKU) == 5, what=lambda: shop.available(SKU))


def test_a_checkout_whose_request_gave_up_lets_go_of_its_hold(database: Database) -> None:
    # A checkout still running when its request has answered 503 (past the request's budget,
    # a slow Stripe): no customer will ever have its session, so it must not hold stock.
    with running_shop(database, LEDGER_STOCK_HOLD=LONG_HOLD) as shop:
        shop.product(SKU, stock=2)
        checkout = shop.services.checkout
        sessions_before = len(shop.stripe.sessions())

        # Given up before Stripe was asked: the hold is released, no session is made.
        cart_id = UUID(shop.cart(**{SKU: 1}))
        with pytest.raises(CheckoutAbandoned):
            checkout.begin(cart_id, "test", lambda: True)
        assert len(shop.stripe.sessions()) == sessions_before

        # Given up while Stripe made the session: the session is expired, the hold released.
        answers = iter([False, True])
        with pytest.raises(CheckoutAbandoned):
            checkout.begin(cart_id, "test", lambda: next(answers))
        (made,) = shop.stripe.sessions()[sessions_before:]
        assert made["status"] == "expired"
        wait_until(lambda: shop.available(SKU) == 2, what=lambda: shop.available(SKU))
        assert shop.get_cart(str(cart_id))["status"] == "open"
        assert shop.get_cart(str(cart_id))["held_until"] is None
