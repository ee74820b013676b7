"""`GET /openapi.json`: a valid OpenAPI 3 document, generated from the pydantic models, that
names every route of the app (and nothing else), and that real answers of a running shop match."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from openapi_spec_validator import validate
from starlette.routing import Route

from ledger.storage import Database
from tests.shop import AUDITOR, STOREFRONT, Shop, eventually, running_shop
from web.app import create_app
from web.openapi import OPERATIONS, build_document

# Routes the document leaves out: files, not endpoints.
UNDOCUMENTED_PREFIXES = ("/static",)


@pytest.fixture
def shop(database: Database) -> Iterator[Shop]:
    with running_shop(database) as s:
        yield s


@pytest.fixture
def document(shop: Shop) -> dict[str, Any]:
    r = shop.api.get("/openapi.json")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    return body


def test_the_document_is_valid_openapi_3() -> None:
    document = build_document()
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    assert document["openapi"].startswith("3.")
    # Every schema came from a pydantic model: the components hold the models by name.
    schemas = document["components"]["schemas"]
    for name in ("Product", "Cart", "OrderStatus", "EventPage", "Error", "ProductBody"):
        assert name in schemas, sorted(schemas)
    assert schemas["ProductBody"]["properties"]["unit_amount"]["exclusiveMinimum"] == 0


def test_the_served_document_is_the_built_one(document: dict[str, Any]) -> None:
    assert document == build_document()


def test_every_route_of_the_app_is_documented_with_its_methods_and_nothing_else(
    shop: Shop,
) -> None:
    app = create_app(shop.services)
    served: set[tuple[str, str]] = set()
    for route in app.routes:
        if not isinstance(route, Route):  # mounts: /static files, the Stripe stand-in
            continue
        assert not route.path.startswith(UNDOCUMENTED_PREFIXES)
        served |= {(route.path, m) for m in route.methods or () if m != "HEAD"}
    document = build_document()
    documented = {
        (path, method.upper()) for path, item in document["paths"].items() for method in item
    }
    assert served == documented, (
        f"served, not documented: {sorted(served - documented)}; "
        f"documented, not served: {sorted(documented - served)}"
    )
    assert len({(op.path, op.method) for op in OPERATIONS}) == len(OPERATIONS)


def test_secured_endpoints_name_their_bearer_token() -> None:
    paths = build_document()["paths"]

    def schemes(path: str, method: str) -> list[dict[str, list[str]]]:
        found: list[dict[str, list[str]]] = paths[path][method]["security"]
        return found

    assert schemes("/api/products/{sku}", "put") == [{"adminToken": []}]
    assert schemes("/api/products/{sku}", "get") == []
    assert schemes("/api/audit/events", "get") == [{"auditorToken": []}]
    assert schemes("/metrics", "get") == [{"metricsToken": []}, {}]
    assert schemes("/api/orders", "get") == [{"adminToken": []}]
    assert schemes("/api/users/{user_id}/orders", "get") == [{"storefrontToken": []}]
    for path, item in paths.items():
        for method, operation in item.items():
            if operation["security"] and operation["security"][0]:
                assert "401" in operation["responses"], (method, path)


# ---- real answers against the document --------------------------------------------------------


def conforms(
    document: dict[str, Any], method: str, template: str, response: httpx.Response
) -> None:
    """`response` is one the document gives for `method template`, in its media type, and
    (for JSON) its body matches the documented schema."""
    operation = document["paths"][template][method.lower()]
    status = str(response.status_code)
    assert status in operation["responses"], (method, template, status, response.text)
    content = operation["responses"][status]["content"]
    media_type = response.headers["content-type"].split(";")[0].strip()
    assert media_type in content, (method, template, media_type, list(content))
    if media_type != "application/json":
        return
    schema = {**content[media_type]["schema"], "components": document["components"]}
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    errors = [e.message for e in validator.iter_errors(response.json())]
    assert not errors, (method, template, status, errors, response.text)


def test_real_answers_match_the_documented_schemas(shop: Shop, document: dict[str, Any]) -> None:
    api = shop.api
    admin = shop.admin()
    auditor = {"Authorization": f"Bearer {AUDITOR}"}

    def call(method: str, template: str, path: str, **kwargs: Any) -> httpx.Response:
        response = api.request(method, path, **kwargs)
        conforms(document, method, template, response)
        return response

    # Catalog and stock.
    body = {"name": "Mug", "unit_amount": 1250, "currency": "usd"}
    r = call("PUT", "/api/products/{sku}", "/api/products/mug", json=body, headers=admin)
    assert r.status_code == 201
    r = call("PUT", "/api/products/{sku}", "/api/products/mug", json=body, headers=admin)
    assert r.status_code == 200
    r = call("PUT", "/api/products/{sku}", "/api/products/mug", json=body)
    assert r.status_code == 401
    r = call("PUT", "/api/products/{sku}", "/api/products/mug", json={}, headers=admin)
    assert r.status_code == 422 and r.json()["error"]["fields"]
    stock_of = "/api/products/{sku}/stock"
    r = call("POST", stock_of, "/api/products/mug/stock", json={"quantity": 2}, headers=admin)
    assert r.status_code == 200
    r = call("POST", stock_of, "/api/products/mug/stock", json={"quantity": -5}, headers=admin)
    assert r.status_code == 409
    assert call("GET", "/api/products/{sku}", "/api/products/mug").status_code == 200
    assert call("GET", "/api/products/{sku}", "/api/products/nope").status_code == 404
    assert call("GET", "/api/products", "/api/products").json()["products"]

    # Carts and checkout.
    r = call("POST", "/api/carts", "/api/carts", json={"user_id": "user-1"})
    assert r.status_code == 201
    cart_id = r.json()["cart_id"]
    assert call("POST", "/api/carts", "/api/carts").status_code == 201  # no body at all
    line = "/api/carts/{cart_id}/items/{sku}"
    r = call("PUT", line, f"/api/carts/{cart_id}/items/mug", json={"quantity": 3})
    assert r.status_code == 200 and r.json()["currency"] == "usd"
    r = call("POST", "/api/carts/{cart_id}/checkout", f"/api/carts/{cart_id}/checkout")
    assert r.status_code == 409 and r.json()["error"]["items"]
    call("PUT", line, f"/api/carts/{cart_id}/items/mug", json={"quantity": 1})
    r = call("PUT", line, f"/api/carts/{cart_id}/items/nope", json={"quantity": 1})
    assert r.status_code == 404
    assert call("GET", "/api/carts/{cart_id}", f"/api/carts/{cart_id}").status_code == 200
    r = call("POST", "/api/carts/{cart_id}/checkout", f"/api/carts/{cart_id}/checkout")
    assert r.status_code == 201
    session_id = r.json()["checkout_session_id"]

    status = "/api/checkout-sessions/{session_id}/order"
    assert call("GET", status, f"/api/checkout-sessions/{session_id}/order").status_code == 200
    assert call("GET", status, "/api/checkout-sessions/cs_nope/order").status_code == 404
    r = call("GET", "/checkout/success", "/checkout/success", params={"session_id": session_id})
    assert r.status_code == 200
    assert call("GET", "/checkout/success", "/checkout/success").status_code == 400
    assert call("GET", "/", "/").status_code == 200

    # Stripe.
    shop.stripe.webhook_url = None
    shop.stripe.complete(session_id, "pay")
    payload, signature = shop.stripe.build_event("checkout.session.completed", session_id)
    headers = {"Content-Type": "application/json", "Stripe-Signature": signature}
    r = call("POST", "/webhooks/stripe", "/webhooks/stripe", content=payload, headers=headers)
    assert r.status_code == 200
    headers["Stripe-Signature"] = "t=1,v1=00"
    r = call("POST", "/webhooks/stripe", "/webhooks/stripe", content=payload, headers=headers)
    assert r.status_code == 400
    eventually(lambda: shop.status(session_id) == "confirmed")
    r = call("GET", status, f"/api/checkout-sessions/{session_id}/order")
    order_id = r.json()["order_id"]
    assert order_id

    # Audit.
    events = "/api/audit/events"
    r = call("GET", events, events, params={"limit": 2}, headers=auditor)
    assert r.status_code == 200 and r.json()["next_after"] is not None
    r = call("GET", events, events, params={"after": 10**6}, headers=auditor)
    assert r.json() == {"events": [], "next_after": None}
    r = call("GET", events, events, params={"limit": 0}, headers=auditor)
    assert r.status_code == 422
    assert call("GET", events, events).status_code == 401
    history = "/api/audit/orders/{order_id}/history"
    r = call("GET", history, f"/api/audit/orders/{order_id}/history", headers=auditor)
    assert r.status_code == 200 and r.json()["events"]
    stock = "/api/audit/products/{sku}/stock"
    at = {"at": "2100-01-01T00:00:00Z"}
    r = call("GET", stock, "/api/audit/products/mug/stock", params=at, headers=auditor)
    assert r.status_code == 200 and r.json()["on_hand"] == 1
    assert call("GET", stock, "/api/audit/products/mug/stock", headers=auditor).status_code == 422

    # Orders.
    storefront = {"Authorization": f"Bearer {STOREFRONT}"}
    r = call("GET", "/api/orders", "/api/orders", params={"limit": 1}, headers=admin)
    assert r.status_code == 200 and r.json()["orders"][0]["order_id"] == order_id
    r = call("GET", "/api/orders", "/api/orders", params={"limit": 0}, headers=admin)
    assert r.status_code == 422
    assert call("GET", "/api/orders", "/api/orders", headers=storefront).status_code == 401
    one = "/api/orders/{order_id}"
    assert call("GET", one, f"/api/orders/{order_id}", headers=admin).status_code == 200
    r = call("GET", one, f"/api/orders/{cart_id}", headers=admin)
    assert r.status_code == 404
    assert call("GET", one, f"/api/orders/{order_id}").status_code == 401
    mine = "/api/users/{user_id}/orders"
    r = call("GET", mine, "/api/users/user-1/orders", headers=storefront)
    assert r.status_code == 200 and r.json()["orders"]
    r = call("GET", mine, "/api/users/user-1/orders", params={"after": "?"}, headers=storefront)
    assert r.status_code == 422
    assert call("GET", mine, "/api/users/user-1/orders", headers=admin).status_code == 401

    # Operations.
    assert call("GET", "/healthz", "/healthz").status_code == 200
    assert call("GET", "/readyz", "/readyz").status_code == 200
    assert call("GET", "/metrics", "/metrics").status_code == 200
    assert call("GET", "/openapi.json", "/openapi.json").status_code == 200


def test_a_handler_cannot_send_an_answer_its_model_does_not_document() -> None:
    from pydantic import ValidationError

    from web.responses import Health, StockLevel, checked

    assert checked(Health, {"status": "ok"}) == {"status": "ok"}
    with pytest.raises(ValidationError):
        checked(StockLevel, {"sku": "mug", "on_hand": 1, "undocumented": True})
    with pytest.raises(ValidationError):
        checked(StockLevel, {"sku": "mug"})
