"""Orders: the merchant's list and detail (`LEDGER_ADMIN_TOKEN`), and a customer's orders for
the storefront's own server (`LEDGER_STOREFRONT_TOKEN`). Read from the `orders` read model;
nothing here writes."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ledger.domain.vocabulary import OrderStatus
from projections.orders import OrderPage
from web.context import in_store, order_id_of, require_bearer, services, unknown_order
from web.errors import invalid_field
from web.responses import Order, OrderStatusWord, checked, checked_json
from web.responses import OrderPage as OrderPageBody
from web.route_docs import UNAUTHORIZED, UNAVAILABLE, Answer, Query, documented, error
from web.schemas import MAX_POSITION
from web.store_calls import IDEMPOTENT

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_USER_ID = 200  # as a cart's `user_id`
# Long enough for any limit (with some leading zeros), short enough to refuse cheaply.
MAX_DIGITS = 32
# The opaque `next_after`: the list position of the page's last order, as 16 hex digits.
# Every string of that form is a valid `after` (one naming a position past the end of the log
# starts at the newest order), so the document can say exactly what is accepted.
AFTER_PATTERN = r"^[0-9a-f]{16}$"


def encode_after(position: int) -> str:
    return f"{position:016x}"


def decode_after(raw: str) -> int | None:
    """The list position an `after` names, or None when it is not of the form given out."""
    if not re.fullmatch(AFTER_PATTERN, raw):
        return None
    return min(int(raw, 16), MAX_POSITION)


def admin_only(request: Request) -> None:
    token = services(request).settings.admin_token
    require_bearer(request, [token.get_secret_value()] if token else [], "admin")


def _storefront(request: Request) -> None:
    # Only the storefront tokens: the admin token manages the shop, it does not act as the
    # storefront's server (nor the reverse).
    require_bearer(request, services(request).settings.storefront_tokens, "storefront")


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    bounds = f"must be an integer from 1 to {MAX_LIMIT}"
    # Digits only: int() would also take " 5", "+5" and "5_000"; and not thousands of them.
    if not raw.isascii() or not raw.isdigit() or len(raw) > MAX_DIGITS:
        raise invalid_field("limit", bounds)
    value = int(raw)
    if not 1 <= value <= MAX_LIMIT:
        raise invalid_field("limit", bounds)
    return value


def _after(request: Request) -> int | None:
    raw = request.query_params.get("after")
    if raw is None or raw == "":
        return None
    position = decode_after(raw)
    if position is None:
        raise invalid_field("after", "must be the `next_after` of an earlier page")
    return position


def _user_id(raw: str | None, field: str) -> str | None:
    if raw is None:
        return None
    if not 1 <= len(raw) <= MAX_USER_ID:
        raise invalid_field(field, f"must be 1 to {MAX_USER_ID} characters")
    return raw  # one no cart can have (a NUL, ...) simply has no orders


def _status(request: Request) -> str | None:
    raw = request.query_params.get("status")
    if raw is None:
        return None
    if raw not in {s.value for s in OrderStatus}:
        words = ", ".join(s.value for s in OrderStatus)
        raise invalid_field("status", f"must be one of {words}")
    return raw


async def _page(request: Request, *, status: str | None, user_id: str | None) -> Response:
    after = _after(request)
    limit = _limit(request)
    orders = services(request).orders

    def read() -> bytes:
        page: OrderPage = orders.page(status=status, user_id=user_id, before=after, limit=limit)
        last = page.last_position
        # The page comes as JSON from the read model: sent as it is, once checked.
        return checked_json(OrderPageBody, page.json(None if last is None else encode_after(last)))

    return Response(
        await in_store(request, read, retry=IDEMPOTENT), media_type="application/json"
    )  # a read


_PAGING = (
    Query(
        "after",
        Annotated[str, Field(pattern=AFTER_PATTERN)],
        "The `next_after` of the page before (opaque); none for the first page.",
    ),
    Query("limit", Annotated[int, Field(ge=1, le=MAX_LIMIT)], "At most this many (50)."),
)


@documented(
    "GET",
    "Orders whose payment has an outcome, newest first, page by page",
    "orders",
    {
        200: Answer("A page of orders.", OrderPageBody),
        401: UNAUTHORIZED,
        422: error("`validation_error`: `status`, `user_id`, `after` or `limit` not valid."),
        503: UNAVAILABLE,
    },
    security="admin",
    query=(
        Query("status", OrderStatusWord, "Only orders with this status."),
        Query(
            "user_id",
            Annotated[str, Field(min_length=1, max_length=MAX_USER_ID)],
            "Only orders of carts created with this `user_id`.",
        ),
        *_PAGING,
    ),
    description="Paging from the first page until `next_after` is null lists every order"
    " decided before the first page was read exactly once, while others are placed.",
)
async def list_orders(request: Request) -> Response:
    admin_only(request)
    status = _status(request)
    user_id = _user_id(request.query_params.get("user_id"), "user_id")
    return await _page(request, status=status, user_id=user_id)


@documented(
    "GET",
    "One order",
    "orders",
    {
        200: Answer("The order.", Order),
        401: UNAUTHORIZED,
        404: error("`unknown_order`."),
        503: UNAVAILABLE,
    },
    security="admin",
)
async def get_order(request: Request) -> JSONResponse:
    admin_only(request)
    order = await in_store(
        request, services(request).orders.get, order_id_of(request), retry=IDEMPOTENT
    )  # a read
    if order is None:
        raise unknown_order(request)
    return JSONResponse(checked(Order, order))


@documented(
    "GET",
    "A customer's orders (of carts created with that `user_id`), newest first, page by page",
    "orders",
    {
        200: Answer("A page of the user's orders.", OrderPageBody),
        401: UNAUTHORIZED,
        422: error("`validation_error`: `user_id`, `after` or `limit` not valid."),
        503: UNAVAILABLE,
    },
    security="storefront",
    query=_PAGING,
)
async def user_orders(request: Request) -> Response:
    _storefront(request)
    user_id = _user_id(request.path_params["user_id"], "user_id")
    return await _page(request, status=None, user_id=user_id)


routes = [
    Route("/api/orders", list_orders, methods=["GET"]),
    Route("/api/orders/{order_id}", get_order, methods=["GET"]),
    Route("/api/users/{user_id}/orders", user_orders, methods=["GET"]),
]
