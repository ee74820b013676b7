"""Products and stock: public reads, admin writes."""

from __future__ import annotations

import re
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ledger.domain import InventoryItem
from web.context import cause_of, in_store, require_bearer, services
from web.errors import invalid_field
from web.requests import parse_json
from web.responses import Product, ProductList, StockLevel, checked
from web.route_docs import BODY_ERRORS, UNAUTHORIZED, UNAVAILABLE, Answer, documented, error
from web.schemas import SKU_PATTERN, ProductBody, StockBody
from web.store_calls import IDEMPOTENT


def product_view(item: InventoryItem) -> dict[str, Any]:
    return checked(
        Product,
        {
            "sku": item.sku,
            "name": item.name,
            "unit_amount": item.unit_amount,
            "currency": item.currency,
            "available": item.on_hand,
        },
    )


def _admin(request: Request) -> None:
    token = services(request).settings.admin_token
    require_bearer(request, [token.get_secret_value()] if token else [], "admin")


async def put_product(request: Request) -> JSONResponse:
    _admin(request)
    sku = request.path_params["sku"]
    if not re.fullmatch(SKU_PATTERN, sku):
        raise invalid_field("sku", "1-64 letters, digits, '.', '_' or '-'")
    body = await parse_json(request, ProductBody)
    ledger = services(request).ledger
    # IDEMPOTENT: the details are compared with those recorded, so a repeat records nothing
    # more, and the listing id, chosen here once for every run, makes a product that a run
    # left in doubt had listed still answer 201.
    item, created = await in_store(
        request,
        ledger.put_product,
        sku,
        body.name,
        body.unit_amount,
        body.currency,
        cause_of(request),
        uuid.uuid4().hex,
        retry=IDEMPOTENT,
    )
    return JSONResponse(product_view(item), status_code=201 if created else 200)


@documented(
    "POST",
    "Receive stock (a positive quantity) or write it off (negative)",
    "catalog",
    {
        200: Answer("Stock on hand now.", StockLevel),
        401: UNAUTHORIZED,
        404: error("`unknown_product`."),
        409: error(
            "`insufficient_stock`: on hand would go below 0, or below what is held for"
            " customers paying now."
        ),
        **BODY_ERRORS,
        503: UNAVAILABLE,
    },
    body=StockBody,
    security="admin",
)
async def adjust_stock(request: Request) -> JSONResponse:
    _admin(request)
    body = await parse_json(request, StockBody)
    if body.quantity == 0:
        raise invalid_field("quantity", "must not be 0")
    ledger = services(request).ledger
    # IDEMPOTENT: a change by a quantity, but under an id chosen here once for every run: the
    # item remembers the adjustments it recorded, so a run after a commit left in doubt finds
    # its own recorded and counts it once.
    item = await in_store(
        request,
        ledger.adjust_stock,
        request.path_params["sku"],
        body.quantity,
        body.reason,
        cause_of(request),
        uuid.uuid4().hex,
        retry=IDEMPOTENT,
    )
    return JSONResponse(checked(StockLevel, {"sku": item.sku, "on_hand": item.on_hand}))


async def get_product(request: Request) -> JSONResponse:
    catalog = services(request).catalog
    product = await in_store(request, catalog.product, request.path_params["sku"], retry=IDEMPOTENT)
    return JSONResponse(checked(Product, product))


@documented(
    "GET",
    "Every product, ordered by sku",
    "catalog",
    {200: Answer("The products.", ProductList), 503: UNAVAILABLE},
)
async def list_products(request: Request) -> JSONResponse:
    catalog = services(request).catalog
    products = await in_store(request, catalog.products, retry=IDEMPOTENT)  # a read
    return JSONResponse(checked(ProductList, {"products": products}))


@documented(
    "GET",
    "One product and what a new checkout may take of it now",
    "catalog",
    {
        200: Answer("The product.", Product),
        404: error("`unknown_product`."),
        503: UNAVAILABLE,
    },
)
@documented(
    "PUT",
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
)
async def product(request: Request) -> JSONResponse:
    # One route for both methods, so that a 405 for any other (DELETE, OPTIONS...) names
    # them all in its `Allow` header: with one route per method, the first one answers the
    # 405 and lists only its own.
    if request.method == "PUT":
        return await put_product(request)
    return await get_product(request)


routes = [
    Route("/api/products", list_products, methods=["GET"]),
    Route("/api/products/{sku}", product, methods=["GET", "PUT"]),
    Route("/api/products/{sku}/stock", adjust_stock, methods=["POST"]),
]
