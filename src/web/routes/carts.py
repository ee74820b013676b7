"""Carts, for the storefront (public; the cart id is the capability)."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ledger.domain.errors import UnknownCart
from ledger.domain.pricing import PricedCart
from web.context import cause_of, in_store, services
from web.requests import parse_json
from web.responses import Cart, checked
from web.route_docs import (
    BODY_ERRORS,
    TOO_LARGE,
    UNAVAILABLE,
    UNSUPPORTED,
    Answer,
    documented,
    error,
)
from web.schemas import CartBody, CartLineBody
from web.store_calls import IDEMPOTENT


def cart_json(priced: PricedCart) -> dict[str, Any]:
    cart = priced.cart
    return checked(
        Cart,
        {
            "cart_id": str(cart.id),
            "user_id": cart.user_id,
            "status": cart.status,
            "items": priced.snapshot(),
            "amount_total": priced.amount_total,
            "currency": priced.currency,
            "held_until": cart.held_until,
        },
    )


def cart_id_of(request: Request) -> UUID:
    raw = request.path_params["cart_id"]
    try:
        return UUID(raw)
    except ValueError:
        raise UnknownCart(raw) from None


@documented(
    "POST",
    "Open a cart",
    "carts",
    {201: Answer("The new cart.", Cart), **BODY_ERRORS, 503: UNAVAILABLE},
    body=CartBody,
    body_required=False,
)
async def create_cart(request: Request) -> JSONResponse:
    body = await parse_json(request, CartBody, empty_ok=True)
    ledger = services(request).ledger

    # The cart's id is chosen here, once per request, so that running `create` again finds the
    # cart a first run opened instead of opening a second.
    cart_id = uuid4()

    def create() -> PricedCart:
        return ledger.price(ledger.create_cart(body.user_id, cause_of(request), cart_id))

    # IDEMPOTENT: by the cart id chosen above (`create_cart`).
    priced = await in_store(request, create, retry=IDEMPOTENT)
    return JSONResponse(cart_json(priced), status_code=201)


@documented(
    "GET",
    "A cart, priced at today's prices",
    "carts",
    {200: Answer("The cart.", Cart), 404: error("`unknown_cart`."), 503: UNAVAILABLE},
)
async def get_cart(request: Request) -> JSONResponse:
    cart_id = cart_id_of(request)
    ledger = services(request).ledger
    priced = await in_store(
        request, lambda: ledger.price(ledger.get_cart(cart_id)), retry=IDEMPOTENT
    )  # a read
    return JSONResponse(cart_json(priced))


@documented(
    "PUT",
    "Set a line's quantity (0 removes it)",
    "carts",
    {
        200: Answer("The cart.", Cart),
        404: error("`unknown_cart`, `unknown_product`."),
        409: error("`cart_closed`, `currency_mismatch`."),
        413: TOO_LARGE,
        415: UNSUPPORTED,
        422: error("`too_many_lines` (past 100 lines), `validation_error`, `invalid_json`."),
        503: UNAVAILABLE,
    },
    body=CartLineBody,
)
async def set_line(request: Request) -> JSONResponse:
    cart_id = cart_id_of(request)
    body = await parse_json(request, CartLineBody)
    ledger = services(request).ledger
    sku = request.path_params["sku"]

    def update() -> PricedCart:
        return ledger.price(ledger.set_cart_line(cart_id, sku, body.quantity, cause_of(request)))

    # IDEMPOTENT: it sets the line to a quantity (not by one), and `Cart.set_line` records
    # nothing when the line already holds it: a repeat after a commit in doubt changes nothing.
    priced = await in_store(request, update, retry=IDEMPOTENT)
    return JSONResponse(cart_json(priced))


routes = [
    Route("/api/carts", create_cart, methods=["POST"]),
    Route("/api/carts/{cart_id}", get_cart, methods=["GET"]),
    Route("/api/carts/{cart_id}/items/{sku}", set_line, methods=["PUT"]),
]
