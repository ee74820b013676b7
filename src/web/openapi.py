"""`GET /openapi.json`: the HTTP API as an OpenAPI 3.1 document, generated from pydantic models.

Request bodies are the models of `web.schemas`, response bodies those of `web.responses`. Each
endpoint is one `Operation` in `OPERATIONS` (path, method, summary, request body, responses by
status, bearer token, query parameters); `build_document()` turns that table into the document,
with every schema produced by pydantic (`models_json_schema`) and its `$defs` collected under
`components.schemas`. tests/test_openapi.py checks that the table and the app's routes agree.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from web.responses import (
    Cart,
    CheckoutCreated,
    Error,
    EventPage,
    Health,
    NotReady,
    OpenApiDocument,
    OrderHistory,
    OrderStatus,
    Product,
    ProductList,
    Ready,
    StockAt,
    StockLevel,
    WebhookReceived,
)
from web.schemas import (
    MAX_POSITION,
    SKU_PATTERN,
    CartBody,
    CartLineBody,
    ProductBody,
    StockBody,
)

REF_TEMPLATE = "#/components/schemas/{model}"
OPENAPI_VERSION = "3.1.0"
API_TITLE = "Order ledger"
API_VERSION = "0.1.0"

# ----------------------------------------------------------------------------- the table


class StripeEvent(BaseModel):
    """A Stripe event as Stripe sends it (only what the ledger reads; the rest is kept)."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["event"]
    type: str = Field(description="e.g. `checkout.session.completed`.")
    data: dict[str, Any] = Field(description='`{"object": {...}}`: the object it is about.')


Security = Literal["admin", "auditor", "metrics"]
SECURITY_SCHEMES: dict[Security, tuple[str, str]] = {
    "admin": ("adminToken", "`Authorization: Bearer $LEDGER_ADMIN_TOKEN`."),
    "auditor": ("auditorToken", "`Authorization: Bearer` one of `$LEDGER_AUDITOR_TOKEN`."),
    "metrics": ("metricsToken", "`Authorization: Bearer $LEDGER_METRICS_TOKEN`, when it is set."),
}

# The types of path parameters, by name.
PATH_PARAMETERS: dict[str, Any] = {
    "sku": Annotated[str, Field(pattern=SKU_PATTERN)],
    "cart_id": UUID,
    "session_id": str,
    "order_id": UUID,
}

JSON = "application/json"
HTML = "text/html"
PROMETHEUS = "text/plain"


@dataclass(frozen=True)
class Answer:
    """One documented response: its body model (None: no JSON model) and media type."""

    description: str
    model: type[BaseModel] | None = None
    media_type: str = JSON
    retry_after: bool = False


@dataclass(frozen=True)
class Query:
    name: str
    type: Any
    description: str
    required: bool = False


@dataclass(frozen=True)
class Header:
    name: str
    description: str
    required: bool = True


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    tag: str
    responses: dict[int, Answer]
    body: type[BaseModel] | None = None
    body_required: bool = True
    security: Security | None = None
    optional_security: bool = False
    query: tuple[Query, ...] = ()
    headers: tuple[Header, ...] = ()
    description: str = ""


def _error(description: str) -> Answer:
    return Answer(description, Error)


UNAUTHORIZED = _error("`unauthorized`: no valid bearer token.")
INVALID = _error("`validation_error` (with `fields`), `invalid_json`.")
UNSUPPORTED = _error("`unsupported_media_type`: the body is not `application/json`.")
TOO_LARGE = _error("`payload_too_large`: the body is over 1 MiB.")
UNAVAILABLE = Answer(
    "`service_unavailable` or `busy`: the store cannot answer now; retry.", Error, retry_after=True
)
BODY_ERRORS = {413: TOO_LARGE, 415: UNSUPPORTED, 422: INVALID}

OPERATIONS: tuple[Operation, ...] = (
    # Catalog and stock.
    Operation(
        "GET",
        "/api/products",
        "Every product, ordered by sku",
        "catalog",
        {200: Answer("The products.", ProductList), 503: UNAVAILABLE},
    ),
    Operation(
        "GET",
        "/api/products/{sku}",
        "One product and what a new checkout may take of it now",
        "catalog",
        {
            200: Answer("The product.", Product),
            404: _error("`unknown_product`."),
            503: UNAVAILABLE,
        },
    ),
    Operation(
        "PUT",
        "/api/products/{sku}",
        "List a product or change its name and price",
        "catalog",
        {
            200: Answer("The product, changed.", Product),
            201: Answer("The product, listed.", Product),
            401: UNAUTHORIZED,
            **BODY_ERRORS,
            503: UNAVAILABLE,
        },
        body=ProductBody,
        security="admin",
    ),
    Operation(
        "POST",
        "/api/products/{sku}/stock",
        "Receive stock (a positive quantity) or write it off (negative)",
        "catalog",
        {
            200: Answer("Stock on hand now.", StockLevel),
            401: UNAUTHORIZED,
            404: _error("`unknown_product`."),
            409: _error("`insufficient_stock`: on hand would go below 0."),
            **BODY_ERRORS,
            503: UNAVAILABLE,
        },
        body=StockBody,
        security="admin",
    ),
    # Carts.
    Operation(
        "POST",
        "/api/carts",
        "Open a cart",
        "carts",
        {201: Answer("The new cart.", Cart), **BODY_ERRORS, 503: UNAVAILABLE},
        body=CartBody,
        body_required=False,
    ),
    Operation(
        "GET",
        "/api/carts/{cart_id}",
        "A cart, priced at today's prices",
        "carts",
        {200: Answer("The cart.", Cart), 404: _error("`unknown_cart`."), 503: UNAVAILABLE},
    ),
    Operation(
        "PUT",
        "/api/carts/{cart_id}/items/{sku}",
        "Set a line's quantity (0 removes it)",
        "carts",
        {
            200: Answer("The cart.", Cart),
            404: _error("`unknown_cart`, `unknown_product`."),
            409: _error("`cart_closed`, `currency_mismatch`."),
            413: TOO_LARGE,
            415: UNSUPPORTED,
            422: _error("`too_many_lines` (past 100 lines), `validation_error`, `invalid_json`."),
            503: UNAVAILABLE,
        },
        body=CartLineBody,
    ),
    Operation(
        "POST",
        "/api/carts/{cart_id}/checkout",
        "Start a Stripe Checkout session for the cart",
        "checkout",
        {
            201: Answer("Send the customer to `url`.", CheckoutCreated),
            404: _error("`unknown_cart`."),
            409: _error("`out_of_stock` (with `items`), `currency_mismatch`, `cart_closed`."),
            422: _error("`empty_cart`, `too_many_lines`."),
            502: _error("`payment_provider_error`: Stripe refused."),
            503: _error("`payment_provider_unavailable`, `service_unavailable`, `busy`."),
        },
    ),
    Operation(
        "GET",
        "/api/checkout-sessions/{session_id}/order",
        "The order a checkout session became, for the storefront's success page",
        "checkout",
        {
            200: Answer("The session's order status.", OrderStatus),
            404: _error("`unknown_checkout_session`: this ledger never created it."),
            503: UNAVAILABLE,
        },
    ),
    # Stripe.
    Operation(
        "POST",
        "/webhooks/stripe",
        "Stripe's webhook: each handled event is a hint to re-fetch its object from Stripe",
        "stripe",
        {
            200: Answer("Recorded, or deliberately ignored.", WebhookReceived),
            400: _error("`missing_signature`, `invalid_signature`, `invalid_payload`."),
            413: TOO_LARGE,
            503: _error("`temporarily_unavailable`: a transient failure; Stripe retries."),
        },
        body=StripeEvent,
        headers=(Header("Stripe-Signature", "Stripe's signature of the raw body."),),
    ),
    # Audit.
    Operation(
        "GET",
        "/api/audit/events",
        "The whole event log in commit order, page by page",
        "audit",
        {
            200: Answer("A page of events.", EventPage),
            401: UNAUTHORIZED,
            422: _error("`validation_error`: `after` or `limit` out of range."),
            503: UNAVAILABLE,
        },
        security="auditor",
        query=(
            Query(
                "after",
                Annotated[int, Field(ge=0, le=MAX_POSITION)],
                "Events after this position (0).",
            ),
            Query("limit", Annotated[int, Field(ge=1, le=1000)], "At most this many (100)."),
        ),
    ),
    Operation(
        "GET",
        "/api/audit/orders/{order_id}/history",
        "An order's events and those its commit caused, in position order",
        "audit",
        {
            200: Answer("The order's history.", OrderHistory),
            401: UNAUTHORIZED,
            404: _error("`unknown_order`."),
            503: UNAVAILABLE,
        },
        security="auditor",
    ),
    Operation(
        "GET",
        "/api/audit/products/{sku}/stock",
        "Stock on hand as it stood at an instant, replayed from the product's events",
        "audit",
        {
            200: Answer("Stock then.", StockAt),
            401: UNAUTHORIZED,
            404: _error("`unknown_product`: the product did not exist then."),
            422: _error("`validation_error`: `at` missing or not ISO-8601."),
            503: UNAVAILABLE,
        },
        security="auditor",
        query=(
            Query(
                "at",
                datetime,
                "An ISO-8601 time, e.g. `2025-03-01T12:00:00Z`; without a zone, UTC.",
                required=True,
            ),
        ),
    ),
    # Operations.
    Operation(
        "GET", "/healthz", "Liveness", "operations", {200: Answer("The process lives.", Health)}
    ),
    Operation(
        "GET",
        "/readyz",
        "Readiness: whether the store answers",
        "operations",
        {
            200: Answer("Ready.", Ready),
            503: Answer("A dependency is down (never its address).", NotReady),
        },
    ),
    Operation(
        "GET",
        "/metrics",
        "Prometheus metrics",
        "operations",
        {
            200: Answer("Prometheus text format.", media_type=PROMETHEUS),
            401: UNAUTHORIZED,
        },
        security="metrics",
        optional_security=True,
    ),
    Operation(
        "GET",
        "/openapi.json",
        "This document",
        "operations",
        {200: Answer("The OpenAPI document.", OpenApiDocument)},
    ),
    # Pages.
    Operation(
        "GET",
        "/checkout/success",
        "The checkout success page: shows the order's status, polling until it is final",
        "pages",
        {
            200: Answer("An HTML page.", media_type=HTML),
            400: Answer("An HTML page: `session_id` is missing or blank.", media_type=HTML),
        },
        query=(
            Query(
                "session_id",
                # Blank (empty or only spaces) counts as missing: the 400 page.
                Annotated[str, Field(min_length=1, pattern=r"\S")],
                "The Stripe Checkout session id.",
                required=True,
            ),
        ),
    ),
    Operation(
        "GET", "/", "A demo storefront", "pages", {200: Answer("An HTML page.", media_type=HTML)}
    ),
)

# ------------------------------------------------------------------------------ building


def _schema(annotation: Any) -> dict[str, Any]:
    schema: dict[str, Any] = TypeAdapter(annotation).json_schema(ref_template=REF_TEMPLATE)
    return schema


def _path_names(path: str) -> list[str]:
    return re.findall(r"{([^}:]+)}", path)


def _models() -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    seen: list[tuple[type[BaseModel], JsonSchemaMode]] = [(Error, "serialization")]
    for op in OPERATIONS:
        if op.body is not None:
            seen.append((op.body, "validation"))
        seen.extend((a.model, "serialization") for a in op.responses.values() if a.model)
    return list(dict.fromkeys(seen))


def _operation(op: Operation, refs: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": _schema(PATH_PARAMETERS[name])}
        for name in _path_names(op.path)
    ]
    parameters += [
        {
            "name": q.name,
            "in": "query",
            "required": q.required,
            "description": q.description,
            "schema": _schema(q.type),
        }
        for q in op.query
    ]
    parameters += [
        {
            "name": h.name,
            "in": "header",
            "required": h.required,
            "description": h.description,
            "schema": _schema(str),
        }
        for h in op.headers
    ]
    out: dict[str, Any] = {
        "operationId": _operation_id(op),
        "summary": op.summary,
        "tags": [op.tag],
    }
    if op.description:
        out["description"] = op.description
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        out["requestBody"] = {
            "required": op.body_required,
            "content": {JSON: {"schema": refs[(op.body, "validation")]}},
        }
    responses: dict[str, Any] = {}
    for status, answer in sorted(op.responses.items()):
        response: dict[str, Any] = {"description": answer.description}
        if answer.model is not None:
            schema = refs[(answer.model, "serialization")]
            response["content"] = {answer.media_type: {"schema": schema}}
        else:
            response["content"] = {answer.media_type: {"schema": _schema(str)}}
        if answer.retry_after:
            response["headers"] = {
                "Retry-After": {"description": "Seconds to wait.", "schema": _schema(int)}
            }
        responses[str(status)] = response
    # Whatever else may answer: 404 and 405 of the router, 500 `internal_error`, ...
    responses["default"] = {
        "description": "Any other failure, in the same shape.",
        "content": {JSON: {"schema": refs[(Error, "serialization")]}},
    }
    out["responses"] = responses
    if op.security is not None:
        scheme = SECURITY_SCHEMES[op.security][0]
        out["security"] = [{scheme: []}, *([{}] if op.optional_security else [])]
    else:
        out["security"] = []
    return out


def _operation_id(op: Operation) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", op.path).strip("_") or "root"
    return f"{op.method.lower()}_{words}"


def build_document() -> dict[str, Any]:
    """The OpenAPI document of `OPERATIONS`, every schema generated by pydantic."""
    refs, top = models_json_schema(_models(), ref_template=REF_TEMPLATE)
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, refs)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": API_TITLE,
            "version": API_VERSION,
            "description": "An event-sourced order ledger for online stores that take payment "
            "with Stripe Checkout. Money is in integer minor units with a lower-case ISO "
            'currency; every error is `{"error": {"code", "message", ...}}`.',
        },
        "paths": paths,
        "components": {
            "schemas": top.get("$defs", {}),
            "securitySchemes": {
                name: {"type": "http", "scheme": "bearer", "description": description}
                for name, description in SECURITY_SCHEMES.values()
            },
        },
    }


@functools.cache
def document_bytes() -> bytes:
    """The document as JSON, built once per process."""
    return json.dumps(build_document(), ensure_ascii=False, separators=(",", ":")).encode()
