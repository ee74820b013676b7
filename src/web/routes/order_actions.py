"""The merchant's actions on an order (`LEDGER_ADMIN_TOKEN`): cancel it, refund part of it
(`ledger.merchant_desk`). Each POST needs an `Idempotency-Key` (`ledger.merchant_requests`)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, StringConstraints
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ledger.commands.after_sale import request_id_for
from ledger.domain.errors import DomainError
from ledger.merchant_requests import Answer
from ledger.storage import StoreUnavailable
from web.context import calling_stripe, cause_of, order_id_of, services
from web.errors import ApiError, domain_status
from web.requests import parse_json
from web.responses import Order, OrderRefund, checked
from web.route_docs import BODY_ERRORS, UNAUTHORIZED, UNAVAILABLE, Header, documented, error
from web.route_docs import Answer as Documented
from web.routes.orders import admin_only
from web.schemas import CancelBody, RefundBody
from web.store_calls import IDEMPOTENT

# Stripe's rule: 1 to 255 printable ASCII characters.
IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,255}")
# As documented: no space at either end either, since HTTP drops a header value's outer spaces.
_KEY_HEADER = Header(
    "Idempotency-Key",
    "1 to 255 printable ASCII characters naming this request: the same on every retry of it, a"
    " new one for each new request.",
    type=Annotated[
        str, StringConstraints(pattern=r"^[\x21-\x7e]([\x20-\x7e]{0,253}[\x21-\x7e])?$")
    ],
)
_KEY_ERRORS = {
    400: error(
        "`idempotency_key_required`: no `Idempotency-Key`, or not 1 to 255 printable"
        " ASCII characters."
    ),
}


def _idempotency_key(request: Request) -> str:
    key = request.headers.get("idempotency-key")
    if key is None or not IDEMPOTENCY_KEY.fullmatch(key):
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


async def answer_once(
    request: Request, body: BaseModel, key: str, act: Callable[[], Answer]
) -> Answer:
    """`act()`'s answer, once per key (the API's and the demo page's requests alike);
    refusals are answers too, kept like the rest."""

    def guarded() -> Answer:
        try:
            return act()
        except DomainError as refusal:
            refused = {"error": {"code": refusal.code, "message": str(refusal)}}
            return Answer(domain_status(refusal), refused)

    answers = services(request).merchant_requests
    # A refund or a cancel asks Stripe for its refund within the request: a Stripe-bound call.
    # IDEMPOTENT by the Idempotency-Key (ledger.merchant_requests): a repeat finds the key's
    # answer kept, or else its decision made (the refund's id is derived from the key, and so
    # is Stripe's idempotency key for it), and answers from it instead of deciding again.
    return await calling_stripe(
        request, answers.answer, key, _fingerprint(request, body), guarded, retry=IDEMPOTENT
    )


async def _once(
    request: Request, body: BaseModel, key: str, act: Callable[[], Answer]
) -> JSONResponse:
    answer = await answer_once(request, body, key, act)
    return JSONResponse(answer.body, status_code=answer.status)


def _order_view(request: Request, order_id: UUID) -> dict[str, Any]:
    view = services(request).orders.get(order_id)
    if view is None:  # its outcome is recorded: only a read model far behind shows nothing
        raise StoreUnavailable("the orders read model has not caught up")
    return checked(Order, view)


def make_refund(request: Request, order_id: UUID, refund_id: str, body: RefundBody) -> None:
    """The refund `body` asks for, through the merchant desk (the API's and the demo page's)."""
    services(request).merchant_desk.refund(
        order_id,
        refund_id,
        lines=body.lines,
        amount=body.amount,
        restock=body.restock,
        reason=body.reason,
        cause=cause_of(request),
    )


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
    headers=(_KEY_HEADER,),
    security="admin",
)
async def cancel_order(request: Request) -> JSONResponse:
    admin_only(request)
    key = _idempotency_key(request)
    body = await parse_json(request, CancelBody, empty_ok=True)
    order_id = order_id_of(request)
    request_id = request_id_for(order_id, key)

    def act() -> Answer:
        services(request).merchant_desk.cancel(
            order_id, request_id, restock=body.restock, reason=body.reason, cause=cause_of(request)
        )
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
    headers=(_KEY_HEADER,),
    security="admin",
)
async def refund_order(request: Request) -> JSONResponse:
    admin_only(request)
    key = _idempotency_key(request)
    body = await parse_json(request, RefundBody)
    order_id = order_id_of(request)
    refund_id = request_id_for(order_id, key)

    def act() -> Answer:
        make_refund(request, order_id, refund_id, body)
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
