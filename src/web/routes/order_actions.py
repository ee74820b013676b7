"""The merchant's actions on an order (`LEDGER_ADMIN_TOKEN`): cancel it, refund part of it.

Each POST needs an `Idempotency-Key` (`ledger.merchant_requests`). The decision is committed
first (`ledger.commands.after_sale`); the refund is then asked of Stripe at once, so the answer
shows Stripe's word on it; when Stripe cannot answer now, the refund worker asks again later
with the same key, and the answer says `pending`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Any
from uuid import UUID

import structlog
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ledger.commands.after_sale import request_id_for
from ledger.domain.errors import DomainError
from ledger.merchant_requests import Answer
from ledger.payments import PaymentProviderUnavailable
from ledger.storage import StoreUnavailable
from web.context import cause_of, in_store, order_id_of, services
from web.errors import ApiError, domain_status
from web.requests import parse_json
from web.responses import Order, OrderRefund, checked
from web.route_docs import BODY_ERRORS, UNAUTHORIZED, UNAVAILABLE, documented, error
from web.route_docs import Answer as Documented
from web.routes.orders import admin_only
from web.schemas import CancelBody, RefundBody

log = structlog.get_logger("web.order_actions")

# Stripe's rule: 1 to 255 printable ASCII characters.
_KEY = re.compile(r"[\x20-\x7e]{1,255}")
_KEY_ERRORS = {
    400: error(
        "`idempotency_key_required`: no `Idempotency-Key`, or not 1 to 255 printable"
        " ASCII characters."
    ),
}


def _idempotency_key(request: Request) -> str:
    key = request.headers.get("idempotency-key")
    if key is None or not _KEY.fullmatch(key):
        raise ApiError(
            400,
            "idempotency_key_required",
            "Send an Idempotency-Key header of 1 to 255 printable ASCII characters, the same on"
            " every retry of this request.",
        )
    return key


def _fingerprint(request: Request, body: BaseModel) -> str:
    """What was asked: the same key with another fingerprint is another request."""
    asked = {
        "method": request.method,
        "path": request.url.path,
        "body": body.model_dump(mode="json", exclude_unset=True),
    }
    return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()


async def _once(
    request: Request, body: BaseModel, key: str, act: Callable[[], Answer]
) -> JSONResponse:
    """Answers `act()` once per key; refusals are answers too, kept like the rest."""

    def guarded() -> Answer:
        try:
            return act()
        except DomainError as refusal:
            refused = {"error": {"code": refusal.code, "message": str(refusal)}}
            return Answer(domain_status(refusal), refused)

    answers = services(request).merchant_requests
    answer = await in_store(request, answers.answer, key, _fingerprint(request, body), guarded)
    return JSONResponse(answer.body, status_code=answer.status)


def _send(request: Request, order_id: UUID, refund_id: str) -> None:
    """Asks Stripe for the refund now; when it cannot answer, the refund worker will."""
    try:
        services(request).refunds.issue_merchant(order_id, refund_id, cause_of(request))
    except PaymentProviderUnavailable as unavailable:
        log.warning("merchant_refund_deferred", order_id=str(order_id), error=str(unavailable))


def _order_view(request: Request, order_id: UUID) -> dict[str, Any]:
    view = services(request).orders.get(order_id)
    if view is None:  # its outcome is recorded: only a read model far behind shows nothing
        raise StoreUnavailable("the orders read model has not caught up")
    return checked(Order, view)


_ORDER_ERRORS = {
    401: UNAUTHORIZED,
    404: error("`unknown_order`."),
    **_KEY_ERRORS,
    **BODY_ERRORS,
    503: UNAVAILABLE,
}


@documented(
    "POST",
    "Cancel an order: the rest of its payment refunded (or its authorization released)",
    "orders",
    {
        200: Documented("The order, `cancelled`.", Order),
        409: error(
            "`order_not_cancellable` (already cancelled, refunded, released or never placed),"
            " `idempotency_key_reused`."
        ),
        **_ORDER_ERRORS,
    },
    body=CancelBody,
    security="admin",
)
async def cancel_order(request: Request) -> JSONResponse:
    admin_only(request)
    key = _idempotency_key(request)
    body = await parse_json(request, CancelBody, empty_ok=True)
    order_id = order_id_of(request)
    request_id = request_id_for(order_id, key)

    def act() -> Answer:
        ledger = services(request).ledger
        order = ledger.cancel_order(
            order_id, request_id, restock=body.restock, reason=body.reason, cause=cause_of(request)
        )
        if request_id in order.book.merchant:
            _send(request, order_id, request_id)
        return Answer(200, _order_view(request, order_id))

    return await _once(request, body, key, act)


@documented(
    "POST",
    "Refund lines of an order (putting them back on hand or not) or an amount",
    "orders",
    {
        201: Documented("The refund, its `status` as Stripe reports it.", OrderRefund),
        409: error(
            "`refund_exceeds_remaining` (more than remains of the payment or of a line; nothing"
            " captured yet; the order cancelled or never placed), `idempotency_key_reused`."
        ),
        **_ORDER_ERRORS,
    },
    body=RefundBody,
    security="admin",
)
async def refund_order(request: Request) -> JSONResponse:
    admin_only(request)
    key = _idempotency_key(request)
    body = await parse_json(request, RefundBody)
    if (body.lines is None) == (body.amount is None):
        raise ApiError(
            422,
            "validation_error",
            "Some fields are missing or invalid.",
            fields=[{"field": "body", "message": "give either `lines` or `amount`"}],
        )
    order_id = order_id_of(request)
    refund_id = request_id_for(order_id, key)
    lines: dict[str, int] | None = None
    if body.lines is not None:
        lines = {}
        for line in body.lines:
            lines[line.sku] = lines.get(line.sku, 0) + line.quantity

    def act() -> Answer:
        services(request).ledger.refund_order(
            order_id,
            refund_id,
            lines=lines,
            amount=body.amount,
            restock=body.restock,
            reason=body.reason,
            cause=cause_of(request),
        )
        _send(request, order_id, refund_id)
        view = _order_view(request, order_id)
        for refund in view["refunds"]:
            if refund["refund_id"] == refund_id:
                return Answer(201, checked(OrderRefund, refund))
        raise StoreUnavailable("the orders read model has not caught up")

    return await _once(request, body, key, act)


routes = [
    Route("/api/orders/{order_id}/cancel", cancel_order, methods=["POST"]),
    Route("/api/orders/{order_id}/refunds", refund_order, methods=["POST"]),
]
