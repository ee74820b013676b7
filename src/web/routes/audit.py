"""The auditors' reads of the event log (`Authorization: Bearer $LEDGER_AUDITOR_TOKEN`).

Everything here answers from the log as recorded: the log itself page by page, an order's
history (found through the `order_history` read model, read from the log), and a product's
stock at an instant (replayed from its stream). Nothing here writes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from projections.audit import records
from projections.audit.history import OrderHistories
from projections.audit.stock import StockHistory, parse_instant
from web.context import in_store, order_id_of, require_bearer, services, unknown_order
from web.errors import ApiError, invalid_field
from web.responses import EventPage, OrderHistory, StockAt, checked
from web.route_docs import UNAUTHORIZED, UNAVAILABLE, Answer, Query, documented, error
from web.schemas import MAX_POSITION
from web.store_calls import IDEMPOTENT

DEFAULT_LIMIT = 100
# Long enough for any position (with some leading zeros), short enough to refuse cheaply.
MAX_DIGITS = 32
MAX_LIMIT = 1000
# Audit reads may replay a long stream (a hot product's tens of thousands of events): more
# time than a storefront request, still bounded.
AUDIT_BUDGET_SECONDS = 30.0


def _auditor(request: Request) -> None:
    # Only the auditor tokens: the admin token changes the catalog, it does not read the log.
    require_bearer(request, services(request).settings.auditor_tokens, "auditor")


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    bounds = f"an integer from {lo} to {hi}"
    # Digits only: int() would also take " 5", "+5" and "5_000"; and not thousands of them.
    if not raw.isascii() or not raw.isdigit() or len(raw) > MAX_DIGITS:
        raise invalid_field(name, f"must be {bounds}")
    value = int(raw)
    if value < lo or value > hi:
        raise invalid_field(name, f"must be {bounds}")
    return value


@documented(
    "GET",
    "The whole event log in commit order, page by page",
    "audit",
    {
        200: Answer("A page of events.", EventPage),
        401: UNAUTHORIZED,
        422: error("`validation_error`: `after` or `limit` out of range."),
        503: UNAVAILABLE,
    },
    security="auditor",
    query=(
        Query(
            "after",
            Annotated[int, Field(ge=0, le=MAX_POSITION)],
            "Events after this position (0).",
        ),
        Query("limit", Annotated[int, Field(ge=1, le=MAX_LIMIT)], "At most this many (100)."),
    ),
)
async def events_page(request: Request) -> JSONResponse:
    _auditor(request)
    after = _int_param(request, "after", 0, 0, MAX_POSITION)
    limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    store = services(request).read_store

    def read() -> dict[str, Any]:
        with store.cursor() as cursor:
            # One more than asked: whether this page reached the end of the log.
            rows = records.page(cursor, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return checked(
            EventPage,
            {
                "events": [records.event_json(r) for r in rows],
                "next_after": rows[-1][0] if more else None,
            },
        )

    return JSONResponse(
        await in_store(request, read, retry=IDEMPOTENT, budget=AUDIT_BUDGET_SECONDS)  # a read
    )


@documented(
    "GET",
    "An order's events and those its commit caused, in position order",
    "audit",
    {
        200: Answer("The order's history.", OrderHistory),
        401: UNAUTHORIZED,
        404: error("`unknown_order`."),
        503: UNAVAILABLE,
    },
    security="auditor",
)
async def order_history(request: Request) -> JSONResponse:
    _auditor(request)
    order_id = order_id_of(request)
    histories = OrderHistories(services(request).read_store)
    events = await in_store(
        request, histories.events, order_id, retry=IDEMPOTENT, budget=AUDIT_BUDGET_SECONDS
    )  # a read
    if events is None:
        raise unknown_order(request)
    return JSONResponse(checked(OrderHistory, {"order_id": str(order_id), "events": events}))


@documented(
    "GET",
    "Stock on hand as it stood at an instant, replayed from the product's events",
    "audit",
    {
        200: Answer("Stock then.", StockAt),
        401: UNAUTHORIZED,
        404: error("`unknown_product`: the product did not exist then."),
        422: error("`validation_error`: `at` missing or not ISO-8601."),
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
)
async def stock_at(request: Request) -> JSONResponse:
    _auditor(request)
    sku = request.path_params["sku"]
    raw = request.query_params.get("at")
    if raw is None or not raw.strip():
        raise invalid_field("at", "required: an ISO-8601 time, e.g. 2025-03-01T12:00:00Z")
    try:
        when = parse_instant(raw)
    except ValueError as error:
        raise invalid_field("at", str(error)) from None
    history = StockHistory(services(request).read_store)
    found = await in_store(
        request, history.at, sku, when, retry=IDEMPOTENT, budget=AUDIT_BUDGET_SECONDS
    )  # a read
    if found is None:
        raise ApiError(
            404,
            "unknown_product",
            f"There was no product with SKU {sku!r} at {when.isoformat()}.",
        )
    return JSONResponse(checked(StockAt, found.json()))


routes = [
    Route("/api/audit/events", events_page, methods=["GET"]),
    Route("/api/audit/orders/{order_id}/history", order_history, methods=["GET"]),
    Route("/api/audit/products/{sku}/stock", stock_at, methods=["GET"]),
]
