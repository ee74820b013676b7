"""Catalog, cart and operations endpoints over HTTP (a real uvicorn server per test), on a real
PostgreSQL per test."""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from pydantic import SecretStr

from ledger.domain import PaidSession, inventory_item_id
from ledger.settings import Settings
from ledger.storage import Database
from tests.conftest import Server, count_rows
from web.app import create_app
from web.bootstrap import Services, background_workers, bootstrap
from web.serving import RunningServer, run_in_thread
from workers import Workers

TOKEN = "admin-secret"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"content-type": "application/json"}
ADMIN_JSON = {**ADMIN, **JSON}
MIB = 1024 * 1024
SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


def settings_for(db: Database, admin_token: str | None = TOKEN) -> Settings:
    """Every setting explicit, so neither the environment nor a .env file leaks in."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        LEDGER_DATABASE_URL=db.conninfo_url(),
        LEDGER_ADMIN_TOKEN=None if admin_token is None else SecretStr(admin_token),
        LEDGER_AUDITOR_TOKEN=None,
        STRIPE_API_KEY=None,
        STRIPE_WEBHOOK_SECRET=None,
        STRIPE_API_BASE=None,
        LEDGER_PUBLIC_URL="http://testserver",
    )


@pytest.fixture
def open_services(database: Database) -> Iterator[Callable[..., Services]]:
    opened: list[tuple[Services, Workers]] = []

    def open_(admin_token: str | None = TOKEN) -> Services:
        services = bootstrap(settings_for(database, admin_token), database)
        workers = background_workers(services)
        workers.start()
        opened.append((services, workers))
        return services

    yield open_
    for services, workers in opened:
        workers.stop()
        services.close()


@pytest.fixture
def services(open_services: Callable[..., Services]) -> Services:
    return open_services()


ClientFor = Callable[[Services], httpx.Client]


@pytest.fixture
def client_for() -> Iterator[ClientFor]:
    """A client of the app on `services`, served by uvicorn on a free port (without the app's
    lifespan: the fixtures own the services and their workers)."""
    served: list[tuple[RunningServer, httpx.Client]] = []

    def client_for_(services: Services) -> httpx.Client:
        server = run_in_thread(create_app(services), lifespan="off")
        client = httpx.Client(base_url=server.url, timeout=30)
        served.append((server, client))
        return client

    yield client_for_
    for server, client in served:
        client.close()
        server.stop()


@pytest.fixture
def client(services: Services, client_for: ClientFor) -> httpx.Client:
    return client_for(services)


def events(db: Database) -> int:
    return count_rows(db, "ledger_events")


def expect_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The contract's error shape, with the given status (and code), never a stack trace."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    error = body["error"]
    assert isinstance(error.get("code"), str) and SNAKE.match(error["code"]), error
    assert isinstance(error.get("message"), str) and error["message"].strip(), error
    assert "Traceback" not in response.text
    if code is not None:
        assert error["code"] == code, error
    if error["code"] == "validation_error":
        fields = error.get("fields")
        assert isinstance(fields, list) and fields, error
        for f in fields:
            assert isinstance(f["field"], str) and f["field"], f
            assert isinstance(f["message"], str) and f["message"], f
    return error


def put_product(
    client: httpx.Client,
    sku: str,
    name: str = "Mug",
    unit_amount: int = 500,
    currency: str = "usd",
) -> httpx.Response:
    body = {"name": name, "unit_amount": unit_amount, "currency": currency}
    return client.put(f"/api/products/{sku}", json=body, headers=ADMIN)


def stock(
    client: httpx.Client, sku: str, quantity: int, reason: str | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"quantity": quantity}
    if reason is not None:
        body["reason"] = reason
    return client.post(f"/api/products/{sku}/stock", json=body, headers=ADMIN)


def new_cart(client: httpx.Client) -> str:
    response = client.post("/api/carts")
    assert response.status_code == 201, response.text
    cart_id: str = response.json()["cart_id"]
    return cart_id


def set_line(client: httpx.Client, cart_id: str, sku: str, quantity: int) -> httpx.Response:
    return client.put(f"/api/carts/{cart_id}/items/{sku}", json={"quantity": quantity})


# ---- bad bodies, shared by every endpoint that takes one -------------------------------

Case = tuple[str, bytes, dict[str, str], set[int]]


def raw(value: Any) -> bytes:
    return json.dumps(value).encode()


def shape_cases(good: dict[str, Any], int_field: str) -> list[Case]:
    """Bodies that are wrong whatever the endpoint: not JSON, not an object, not JSON typed."""
    good_raw = raw(good)
    return [
        ("malformed JSON", b'{"' + int_field.encode() + b'": ', JSON, {400, 422}),
        ("trailing garbage", good_raw + b" x", JSON, {400, 422}),
        ("not UTF-8", b'{"x": "\xff\xfe"}', JSON, {400, 422}),
        ("JSON array", b"[]", JSON, {422}),
        ("JSON number", b"5", JSON, {422}),
        ("JSON string", b'"hello"', JSON, {422}),
        ("JSON null", b"null", JSON, {422}),
        (
            "4300+ digit number",
            b'{"' + int_field.encode() + b'": 1' + b"0" * 5000 + b"}",
            JSON,
            {400, 422},
        ),
        ("NaN", b'{"' + int_field.encode() + b'": NaN}', JSON, {400, 422}),
        ("Infinity", b'{"' + int_field.encode() + b'": 1e400}', JSON, {400, 422}),
        ("text/plain", good_raw, {"content-type": "text/plain"}, {415}),
        (
            "form-encoded",
            f"{int_field}=1".encode(),
            {"content-type": "application/x-www-form-urlencoded"},
            {415},
        ),
        ("multipart", good_raw, {"content-type": "multipart/form-data; boundary=x"}, {415}),
        ("no content type", good_raw, {}, {415}),
        ("extra field", raw({**good, "extra": 1}), JSON, {422}),
        ("over 1 MiB", good_raw + b" " * MIB, JSON, {413}),
    ]


def field_cases(good: dict[str, Any], field: str, values: list[Any]) -> list[Case]:
    return [(f"{field}={v!r:.40}", raw({**good, field: v}), JSON, {422}) for v in values] + [
        (f"missing {field}", raw({k: v for k, v in good.items() if k != field}), JSON, {422})
    ]


def send_bad_bodies(
    client: httpx.Client,
    method: str,
    url: str,
    cases: list[Case],
    headers: dict[str, str],
    unchanged: Callable[[], Any],
    db: Database,
) -> None:
    """Sends each bad body; each must be refused in the error shape and change nothing."""
    before, log = unchanged(), events(db)
    problems = []
    for label, content, case_headers, statuses in cases:
        response = client.request(method, url, content=content, headers={**headers, **case_headers})
        try:
            assert response.status_code in statuses, (response.status_code, response.text[:300])
            expect_error(response, response.status_code)
            assert events(db) == log, "something was recorded"
            assert unchanged() == before, "the resource changed"
        except AssertionError as failure:
            problems.append(f"{label}: {failure}")
    assert not problems, "\n".join(problems)


# ---- catalog ---------------------------------------------------------------------------


def test_put_product_creates_then_updates(client: httpx.Client, database: Database) -> None:
    created = put_product(client, "mug")
    assert created.status_code == 201, created.text
    product = {"sku": "mug", "name": "Mug", "unit_amount": 500, "currency": "usd", "available": 0}
    assert created.json() == product
    assert client.get("/api/products/mug").json() == product

    log = events(database)
    same = put_product(client, "mug")
    assert (same.status_code, same.json()) == (200, product)
    assert events(database) == log  # nothing changed, nothing recorded

    changed = put_product(client, "mug", name="Big mug", unit_amount=750, currency="eur")
    assert changed.status_code == 200
    expected = {**product, "name": "Big mug", "unit_amount": 750, "currency": "eur"}
    assert changed.json() == expected
    assert client.get("/api/products/mug").json() == expected


def test_json_content_type_variants_are_accepted(client: httpx.Client) -> None:
    body = raw({"name": "Mug", "unit_amount": 500, "currency": "usd"})
    for i, content_type in enumerate(
        ["application/json; charset=utf-8", "Application/JSON", "application/merge-patch+json"]
    ):
        response = client.put(
            f"/api/products/mug{i}", content=body, headers={**ADMIN, "content-type": content_type}
        )
        assert response.status_code == 201, (content_type, response.text)


WRONG_AUTHORIZATIONS = [
    None,
    "Bearer wrong",
    f"Bearer {TOKEN.upper()}",
    f"Bearer {TOKEN}x",
    f"Bearer {TOKEN[:-1]}",
    # No "Bearer " with its space: HTTP takes a field's trailing whitespace off (RFC 9110, 5.5),
    # so it arrives as "Bearer", and h11 refuses to send it.
    "Bearer",
    TOKEN,
    f"Basic {TOKEN}",
    f"Token {TOKEN}",
]


def test_admin_endpoints_refuse_a_missing_or_wrong_token(
    client: httpx.Client, database: Database
) -> None:
    assert put_product(client, "mug").status_code == 201
    assert stock(client, "mug", 3).status_code == 200
    log = events(database)
    for authorization in WRONG_AUTHORIZATIONS:
        headers = {"Authorization": authorization} if authorization is not None else {}
        attempts = [
            client.put(
                "/api/products/mug",
                json={"name": "X", "unit_amount": 1, "currency": "eur"},
                headers=headers,
            ),
            client.put(
                "/api/products/new",
                json={"name": "X", "unit_amount": 1, "currency": "eur"},
                headers=headers,
            ),
            client.post("/api/products/mug/stock", json={"quantity": 5}, headers=headers),
            client.post("/api/products/mug/stock", json={"quantity": -3}, headers=headers),
            # Auth is checked before anything else is revealed or parsed.
            client.post("/api/products/nope/stock", json={"quantity": 5}, headers=headers),
            client.put("/api/products/mug", content=b"{", headers={**headers, **JSON}),
            client.put("/api/products/%C3%BC", json={}, headers=headers),
        ]
        for response in attempts:
            expect_error(response, 401, "unauthorized")
            www = response.headers.get("www-authenticate", "")
            assert www.lower().startswith("bearer"), (authorization, www)
    assert events(database) == log
    assert client.get("/api/products/mug").json()["available"] == 3
    assert client.get("/api/products/mug").json()["name"] == "Mug"
    expect_error(client.get("/api/products/new"), 404, "unknown_product")


def test_the_bearer_scheme_is_case_insensitive(client: httpx.Client) -> None:
    response = client.put(
        "/api/products/mug",
        json={"name": "Mug", "unit_amount": 500, "currency": "usd"},
        headers={"Authorization": f"bearer {TOKEN}"},
    )
    assert response.status_code == 201


@pytest.mark.parametrize("configured", [None, ""])
def test_admin_endpoints_answer_401_when_no_admin_token_is_configured(
    open_services: Callable[..., Services],
    client_for: ClientFor,
    database: Database,
    configured: str | None,
) -> None:
    client = client_for(open_services(admin_token=configured))
    for authorization in [None, "Bearer", "Bearer None", f"Bearer {TOKEN}"]:
        headers = {"Authorization": authorization} if authorization is not None else {}
        expect_error(
            client.put(
                "/api/products/mug",
                json={"name": "Mug", "unit_amount": 500, "currency": "usd"},
                headers=headers,
            ),
            401,
            "unauthorized",
        )
        expect_error(
            client.post("/api/products/mug/stock", json={"quantity": 1}, headers=headers),
            401,
            "unauthorized",
        )
    assert events(database) == 0
    # The public side still works.
    assert client.get("/api/products").json() == {"products": []}
    assert client.post("/api/carts").status_code == 201


def test_products_are_listed_by_sku_with_what_is_available(client: httpx.Client) -> None:
    assert client.get("/api/products").json() == {"products": []}
    for sku in ["tee", "Cap", "mug-2", "mug", "a.b_c"]:
        assert put_product(client, sku, name=f"Product {sku}").status_code == 201
    assert stock(client, "mug", 5).status_code == 200
    assert stock(client, "mug", -2).status_code == 200
    assert stock(client, "tee", 1).status_code == 200

    response = client.get("/api/products")
    assert response.status_code == 200
    products = response.json()["products"]
    assert [p["sku"] for p in products] == sorted(["tee", "Cap", "mug-2", "mug", "a.b_c"])
    for p in products:
        assert set(p) == {"sku", "name", "unit_amount", "currency", "available"}
        assert p == client.get(f"/api/products/{p['sku']}").json()
    available = {p["sku"]: p["available"] for p in products}
    assert available == {"tee": 1, "Cap": 0, "mug-2": 0, "mug": 3, "a.b_c": 0}


def test_stock_is_received_and_written_off(client: httpx.Client) -> None:
    put_product(client, "mug")
    received = stock(client, "mug", 5, reason="delivery")
    assert (received.status_code, received.json()) == (200, {"sku": "mug", "on_hand": 5})
    written_off = stock(client, "mug", -5)
    assert (written_off.status_code, written_off.json()) == (200, {"sku": "mug", "on_hand": 0})
    assert client.get("/api/products/mug").json()["available"] == 0
    big = stock(client, "mug", 1_000_000_000)
    assert (big.status_code, big.json()["on_hand"]) == (200, 1_000_000_000)


def test_writing_off_below_zero_is_409_and_records_nothing(
    client: httpx.Client, database: Database
) -> None:
    put_product(client, "mug")
    stock(client, "mug", 2)
    log = events(database)
    expect_error(stock(client, "mug", -3), 409, "insufficient_stock")
    expect_error(stock(client, "mug", -1_000_000_000), 409, "insufficient_stock")
    assert events(database) == log
    assert client.get("/api/products/mug").json()["available"] == 2


def test_unknown_products_are_404(client: httpx.Client, database: Database) -> None:
    expect_error(client.get("/api/products/nope"), 404, "unknown_product")
    expect_error(stock(client, "nope", 5), 404, "unknown_product")
    expect_error(stock(client, "nope", -5), 404, "unknown_product")
    assert events(database) == 0


def test_a_zero_stock_adjustment_is_422(client: httpx.Client, database: Database) -> None:
    put_product(client, "mug")
    stock(client, "mug", 2)
    log = events(database)
    error = expect_error(stock(client, "mug", 0), 422, "validation_error")
    assert [f["field"] for f in error["fields"]] == ["quantity"]
    assert events(database) == log


def test_available_drops_once_an_order_takes_stock(
    client: httpx.Client, services: Services
) -> None:
    put_product(client, "mug")
    stock(client, "mug", 5)
    cart_id = new_cart(client)
    set_line(client, cart_id, "mug", 2)
    assert client.get("/api/products/mug").json()["available"] == 5  # nothing held in a cart
    paid = _paid(services, cart_id, "cs_1")
    services.ledger.place_order(paid, "test")
    assert client.get("/api/products/mug").json()["available"] == 3
    assert client.get("/api/products").json()["products"][0]["available"] == 3


def test_bad_product_bodies_are_refused(client: httpx.Client, database: Database) -> None:
    put_product(client, "mug")
    good = {"name": "Mug 2", "unit_amount": 600, "currency": "eur"}
    cases = shape_cases(good, "unit_amount")
    cases += field_cases(good, "unit_amount", ["5", 5.0, 5.5, True, None, 0, -1, 10**30, [5]])
    cases += field_cases(good, "name", ["", "   ", 5, None, True, "x" * 201, ["Mug"]])
    cases += field_cases(good, "currency", ["USD", "us", "usdd", "", 5, None, "€ur", " usd"])
    send_bad_bodies(
        client,
        "PUT",
        "/api/products/mug",
        cases,
        ADMIN,
        lambda: client.get("/api/products/mug").json(),
        database,
    )
    # And the same refusals for a product that does not exist yet: it is not created.
    send_bad_bodies(
        client,
        "PUT",
        "/api/products/new",
        cases,
        ADMIN,
        lambda: client.get("/api/products/new").status_code,
        database,
    )


def test_bad_stock_bodies_are_refused(client: httpx.Client, database: Database) -> None:
    put_product(client, "mug")
    stock(client, "mug", 3)
    good = {"quantity": 2, "reason": "delivery"}
    cases = shape_cases(good, "quantity")
    cases += field_cases(
        good, "quantity", ["5", "-1", 5.0, -1.0, True, False, None, 0, 10**30, -(10**30), [1]]
    )
    cases += field_cases(good, "reason", [5, True, ["x"], {"x": 1}, "x" * 501])[:-1]
    send_bad_bodies(
        client,
        "POST",
        "/api/products/mug/stock",
        cases,
        ADMIN,
        lambda: client.get("/api/products/mug").json(),
        database,
    )


def test_sku_in_the_path(client: httpx.Client, database: Database) -> None:
    assert put_product(client, "a" * 64).status_code == 201
    assert client.get(f"/api/products/{'a' * 64}").json()["sku"] == "a" * 64
    log = events(database)
    for sku in ["ü", "caf%C3%A9", "a" * 65, "-mug", ".mug", "mug%20x", "%E2%98%83", "m" * 5000]:
        error = expect_error(put_product(client, sku), 422, "validation_error")
        assert [f["field"] for f in error["fields"]] == ["sku"], sku
        expect_error(client.get(f"/api/products/{sku}"), 404, "unknown_product")
        expect_error(stock(client, sku, 1), 404, "unknown_product")
    assert events(database) == log
    cart_id = new_cart(client)
    log = events(database)
    for sku in ["ü", "%E2%98%83", "m" * 5000, "%00"]:
        expect_error(set_line(client, cart_id, sku, 1), 404, "unknown_product")
        expect_error(client.get(f"/api/products/{sku}"), 404, "unknown_product")
    assert events(database) == log
    assert client.get(f"/api/carts/{cart_id}").json()["items"] == []


# ---- carts -----------------------------------------------------------------------------


def _paid(services: Services, cart_id: str, session_id: str) -> PaidSession:
    """Starts a checkout session for the cart through the service, as if Stripe had paid it."""
    ledger = services.ledger
    cart = ledger.get_cart(UUID(cart_id))
    priced = ledger.price(cart)
    ledger.start_checkout(priced, session_id, "test")
    assert priced.currency is not None
    return PaidSession(session_id, cart.id, priced.amount_total, priced.currency, "pi_1")


def assert_cart_shape(body: dict[str, Any]) -> None:
    assert {"cart_id", "status", "items", "amount_total", "currency"} <= set(body), body
    assert str(UUID(body["cart_id"])) == body["cart_id"]
    assert body["status"] in {"open", "checking_out", "converted"}
    assert isinstance(body["amount_total"], int)
    for item in body["items"]:
        assert {"sku", "quantity", "unit_amount"} <= set(item), item
        assert isinstance(item["quantity"], int) and isinstance(item["unit_amount"], int)


@pytest.mark.parametrize(
    ("content", "headers", "user_id"),
    [
        (None, {}, None),
        (b"", JSON, None),
        (b"{}", JSON, None),
        (b'{"user_id": null}', JSON, None),
        (b'{"user_id": "user-42"}', JSON, "user-42"),
        (
            b'{"user_id": "\xc3\xbcser \xe2\x98\x83"}',
            {"content-type": "application/json"},
            "üser ☃",
        ),
    ],
)
def test_carts_are_created(
    client: httpx.Client, content: bytes | None, headers: dict[str, str], user_id: str | None
) -> None:
    response = client.post("/api/carts", content=content, headers=headers)
    assert response.status_code == 201, response.text
    body = response.json()
    assert_cart_shape(body)
    assert body["status"] == "open"
    assert body["items"] == []
    assert body["amount_total"] == 0
    assert body.get("user_id") == user_id
    again = client.get(f"/api/carts/{body['cart_id']}")
    assert (again.status_code, again.json()) == (200, body)
    assert new_cart(client) != body["cart_id"]


def test_cart_lines_are_set_changed_and_removed(client: httpx.Client, database: Database) -> None:
    put_product(client, "mug", unit_amount=500)
    put_product(client, "cap", name="Cap", unit_amount=1250)
    cart_id = new_cart(client)

    response = set_line(client, cart_id, "mug", 2)
    assert response.status_code == 200, response.text
    body = response.json()
    assert_cart_shape(body)
    assert (body["cart_id"], body["status"]) == (cart_id, "open")
    assert [(i["sku"], i["quantity"], i["unit_amount"]) for i in body["items"]] == [("mug", 2, 500)]
    assert (body["amount_total"], body["currency"]) == (1000, "usd")

    body = set_line(client, cart_id, "cap", 1).json()
    assert [(i["sku"], i["quantity"]) for i in body["items"]] == [("cap", 1), ("mug", 2)]
    assert body["amount_total"] == 2250
    body = set_line(client, cart_id, "mug", 10_000).json()
    assert body["amount_total"] == 1250 + 5_000_000
    assert client.get(f"/api/carts/{cart_id}").json() == body

    log = events(database)
    assert set_line(client, cart_id, "mug", 10_000).json() == body  # unchanged: nothing recorded
    assert events(database) == log

    body = set_line(client, cart_id, "mug", 0).json()
    assert [i["sku"] for i in body["items"]] == ["cap"]
    body = set_line(client, cart_id, "cap", 0).json()
    assert (body["items"], body["amount_total"]) == ([], 0)
    assert set_line(client, cart_id, "cap", 0).status_code == 200  # removing twice is fine
    assert client.get(f"/api/carts/{cart_id}").json() == body


def test_unknown_carts_are_404(client: httpx.Client, database: Database) -> None:
    put_product(client, "mug")
    log = events(database)
    for cart_id in [
        str(uuid4()),
        "not-a-uuid",
        "123",
        "%C3%BC",
        "x" * 5000,
        str(inventory_item_id("mug")),  # a real aggregate, but not a cart
    ]:
        expect_error(client.get(f"/api/carts/{cart_id}"), 404, "unknown_cart")
        expect_error(set_line(client, cart_id, "mug", 1), 404, "unknown_cart")
    assert events(database) == log
    assert client.get("/api/products/mug").json()["name"] == "Mug"


def test_a_line_for_an_unknown_product_is_404(client: httpx.Client, database: Database) -> None:
    put_product(client, "mug")
    cart_id = new_cart(client)
    set_line(client, cart_id, "mug", 1)
    before, log = client.get(f"/api/carts/{cart_id}").json(), events(database)
    expect_error(set_line(client, cart_id, "nope", 1), 404, "unknown_product")
    expect_error(set_line(client, cart_id, "nope", 0), 404, "unknown_product")
    assert client.get(f"/api/carts/{cart_id}").json() == before
    assert events(database) == log


def test_a_cart_takes_one_currency(client: httpx.Client, database: Database) -> None:
    put_product(client, "mug", currency="usd")
    put_product(client, "tee", currency="eur")
    cart_id = new_cart(client)
    set_line(client, cart_id, "mug", 1)
    before, log = client.get(f"/api/carts/{cart_id}").json(), events(database)
    expect_error(set_line(client, cart_id, "tee", 1), 409, "currency_mismatch")
    assert client.get(f"/api/carts/{cart_id}").json() == before
    assert events(database) == log


def test_a_cart_checking_out_may_still_change(client: httpx.Client, services: Services) -> None:
    put_product(client, "mug")
    stock(client, "mug", 5)
    cart_id = new_cart(client)
    set_line(client, cart_id, "mug", 1)
    _paid(services, cart_id, "cs_1")
    assert client.get(f"/api/carts/{cart_id}").json()["status"] == "checking_out"
    response = set_line(client, cart_id, "mug", 3)
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["amount_total"]) == ("checking_out", 1500)
    services.ledger.record_expired("cs_1", UUID(cart_id), "test")
    assert client.get(f"/api/carts/{cart_id}").json()["status"] == "open"


def test_a_converted_cart_is_closed(
    client: httpx.Client, services: Services, database: Database
) -> None:
    put_product(client, "mug")
    put_product(client, "cap")
    stock(client, "mug", 5)
    cart_id = new_cart(client)
    set_line(client, cart_id, "mug", 2)
    services.ledger.place_order(_paid(services, cart_id, "cs_1"), "test")
    before = client.get(f"/api/carts/{cart_id}").json()
    assert before["status"] == "converted"
    assert [(i["sku"], i["quantity"]) for i in before["items"]] == [("mug", 2)]
    log = events(database)
    for sku, quantity in [("mug", 3), ("mug", 0), ("cap", 1)]:
        expect_error(set_line(client, cart_id, sku, quantity), 409, "cart_closed")
    assert client.get(f"/api/carts/{cart_id}").json() == before
    assert events(database) == log


def test_bad_cart_line_bodies_are_refused(client: httpx.Client, database: Database) -> None:
    put_product(client, "mug")
    cart_id = new_cart(client)
    set_line(client, cart_id, "mug", 2)
    good = {"quantity": 3}
    cases = shape_cases(good, "quantity")
    cases += field_cases(
        good,
        "quantity",
        ["5", "0", 5.0, 0.0, 2.5, True, False, None, -1, -(10**30), 10_001, 10**30, [1], {}],
    )
    cases.append(("empty body", b"", JSON, {400, 422}))
    send_bad_bodies(
        client,
        "PUT",
        f"/api/carts/{cart_id}/items/mug",
        cases,
        {},
        lambda: client.get(f"/api/carts/{cart_id}").json(),
        database,
    )


def test_deeply_nested_json_is_refused_not_a_500(client: httpx.Client, database: Database) -> None:
    """Under 1 MiB, but deeper than the JSON parser's recursion limit."""
    put_product(client, "mug")
    cart_id = new_cart(client)
    log = events(database)
    nested = b"[" * 200_000 + b"]" * 200_000
    problems = []
    for method, url, headers in [
        ("PUT", "/api/products/mug", ADMIN_JSON),
        ("POST", "/api/products/mug/stock", ADMIN_JSON),
        ("POST", "/api/carts", JSON),
        ("PUT", f"/api/carts/{cart_id}/items/mug", JSON),
    ]:
        response = client.request(method, url, content=nested, headers=headers)
        if response.status_code not in (400, 422):
            problems.append(f"{method} {url}: {response.status_code} {response.text[:120]}")
        else:
            expect_error(response, response.status_code)
    assert not problems, "\n".join(problems)
    assert events(database) == log


def test_a_body_of_exactly_1_mib_is_accepted(client: httpx.Client) -> None:
    put_product(client, "mug")
    cart_id = new_cart(client)
    body = raw({"quantity": 4})
    body += b" " * (MIB - len(body))
    response = client.put(f"/api/carts/{cart_id}/items/mug", content=body, headers=JSON)
    assert response.status_code == 200, response.text
    assert response.json()["items"][0]["quantity"] == 4


def test_an_oversized_body_without_a_length_is_413(
    client: httpx.Client, database: Database
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"user_id": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    expect_error(client.post("/api/carts", content=chunks(), headers=JSON), 413)
    assert events(database) == 0


def test_bad_cart_bodies_are_refused(client: httpx.Client, database: Database) -> None:
    good = {"user_id": "u1"}
    cases = [c for c in shape_cases(good, "user_id") if c[0] != "no content type"]
    cases += field_cases(good, "user_id", [5, True, "", "x" * 201, ["u1"], {"id": 1}])[:-1]
    send_bad_bodies(client, "POST", "/api/carts", cases, {}, lambda: None, database)


# ---- routing, operations, request ids --------------------------------------------------


def test_unknown_routes_are_404_in_the_error_shape(client: httpx.Client) -> None:
    for path in ["/nope", "/api", "/api/product", "/api/products/mug/nope", "/api/carts/x/y"]:
        expect_error(client.get(path), 404, "not_found")
    expect_error(client.post("/api/nothing", json={}), 404, "not_found")


def test_wrong_methods_are_405_in_the_error_shape(client: httpx.Client) -> None:
    cart_id = new_cart(client)
    for method, path in [
        ("DELETE", "/api/products/mug"),
        ("POST", "/api/products/mug"),
        ("PATCH", "/api/products/mug"),
        ("POST", "/api/products"),
        ("GET", "/api/products/mug/stock"),
        ("PUT", "/api/products/mug/stock"),
        ("GET", "/api/carts"),
        ("DELETE", f"/api/carts/{cart_id}"),
        ("PUT", f"/api/carts/{cart_id}"),
        ("GET", f"/api/carts/{cart_id}/items/mug"),
        ("DELETE", f"/api/carts/{cart_id}/items/mug"),
        ("POST", "/healthz"),
        ("DELETE", "/readyz"),
    ]:
        response = client.request(method, path, headers=ADMIN)
        expect_error(response, 405, "method_not_allowed")
        assert response.headers.get("allow"), (method, path)


def test_healthz_and_readyz(client: httpx.Client) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_readyz_is_503_when_nothing_answers(services: Services, client_for: ClientFor) -> None:
    dead = Database({"host": "127.0.0.1", "port": str(free_port()), "dbname": "x", "user": "x"})
    client = client_for(dataclasses.replace(services, database=dead))
    started = time.monotonic()
    response = client.get("/readyz")
    # Part of the point: a probe against a database that refuses connections answers at once,
    # not after the 5 s connect timeout (load balancers give up on slow probes).
    assert time.monotonic() - started < 5
    error = expect_error(response, 503)
    assert "Traceback" not in error["message"]
    assert client.get("/healthz").status_code == 200


def test_readyz_is_503_once_the_database_is_dropped(
    client: httpx.Client, database: Database, pg_server: Server
) -> None:
    assert client.get("/readyz").status_code == 200
    pg_server.drop(database)
    expect_error(client.get("/readyz"), 503)
    assert client.get("/healthz").status_code == 200


def test_api_answers_503_promptly_once_the_database_is_gone(
    client: httpx.Client, database: Database, pg_server: Server
) -> None:
    """A store that is gone is a quick, retryable 503, not a long hang nor a 500."""
    put_product(client, "mug")
    pg_server.drop(database)
    outcome: dict[str, httpx.Response] = {}

    def call() -> None:
        outcome["response"] = client.get("/api/products/mug")

    worker = threading.Thread(target=call, daemon=True)
    started = time.monotonic()
    worker.start()
    # The point of the test: promptly, not a long hang; the bound is generous for a loaded
    # machine.
    worker.join(timeout=8)
    assert not worker.is_alive(), (
        "GET /api/products/mug took over 8 s to answer with the store gone "
        f"(still waiting after {time.monotonic() - started:.1f} s)"
    )
    response = outcome["response"]
    expect_error(response, 503)
    assert response.headers.get("retry-after")


def test_x_request_id_is_echoed_and_recorded_as_the_cause(
    client: httpx.Client, services: Services
) -> None:
    rid = {"X-Request-ID": "req-123.abc_DEF"}
    for response in [
        client.put(
            "/api/products/mug",
            json={"name": "Mug", "unit_amount": 500, "currency": "usd"},
            headers={**ADMIN, **rid},
        ),
        client.get("/api/products/mug", headers=rid),
        client.get("/nope", headers=rid),
        client.delete("/api/products/mug", headers=rid),
        client.put("/api/products/mug", json={}, headers=rid),
        client.post("/api/products/mug/stock", content=b"{", headers={**ADMIN, **JSON, **rid}),
        client.get("/healthz", headers=rid),
    ]:
        assert response.headers.get("x-request-id") == "req-123.abc_DEF", response.request.url

    generated = client.get("/healthz").headers.get("x-request-id")
    assert generated and re.fullmatch(r"[A-Za-z0-9._-]{8,64}", generated)
    assert client.get("/healthz").headers["x-request-id"] != generated
    for unsafe in ["has space", "x" * 65, "<script>", "a;b"]:
        echoed = client.get("/healthz", headers={"X-Request-ID": unsafe}).headers["x-request-id"]
        assert echoed != unsafe and re.fullmatch(r"[A-Za-z0-9._-]{1,64}", echoed)

    recorded = services.ledger.repository.event_store.get(inventory_item_id("mug"))
    assert [e.cause for e in recorded] == ["http:req-123.abc_DEF"]  # type: ignore[attr-defined]
