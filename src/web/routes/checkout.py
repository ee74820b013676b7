"""Checkout for the storefront: start a Stripe checkout, then poll for the order it became."""

from __future__ import annotations

import threading
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ledger.checkout import CheckoutAttempt
from ledger.domain.pricing import OutOfStock
from ledger.domain.vocabulary import IN_FLIGHT
from ledger.payments import PaymentProviderRefused, PaymentProviderUnavailable
from web.context import calling_stripe, cause_of, in_store, services
from web.errors import ApiError, error_response
from web.responses import CheckoutCreated, OrderStatus, checked
from web.route_docs import UNAVAILABLE, Answer, documented, error
from web.routes.carts import cart_id_of
from web.store_calls import IDEMPOTENT


@documented(
    "POST",
    "Start a Stripe Checkout session for the cart",
    "checkout",
    {
        201: Answer("Send the customer to `url`.", CheckoutCreated),
        404: error("`unknown_cart`."),
        409: error("`out_of_stock` (with `items`), `currency_mismatch`, `cart_closed`."),
        422: error("`empty_cart`, `too_many_lines`."),
        502: error("`payment_provider_error`: Stripe refused."),
        503: error("`payment_provider_unavailable`, `service_unavailable`, `busy`."),
    },
)
async def begin_checkout(request: Request) -> JSONResponse:
    cart_id = cart_id_of(request)
    checkout = services(request).checkout
    # Set once this request has its answer: a checkout still running past the request's budget
    # (answered 503) then lets go of what it holds instead of holding it for no one.
    answered = threading.Event()
    try:
        # IDEMPOTENT: by the attempt, made once per request, which each run fills in as it
        # goes: run again after a commit left in doubt, the checkout finds the hold and the
        # session the run before took, made or recorded, and takes, makes or records none twice.
        created = await calling_stripe(
            request,
            checkout.begin,
            cart_id,
            cause_of(request),
            answered.is_set,
            CheckoutAttempt(),
            retry=IDEMPOTENT,
        )
    except OutOfStock as short:
        return error_response(
            409,
            short.code,
            str(short),
            items=[
                {"sku": s.sku, "requested": s.requested, "available": s.available}
                for s in short.shortages
            ],
        )
    except PaymentProviderUnavailable:
        raise ApiError(
            503, "payment_provider_unavailable", "Stripe is not answering; please retry."
        ) from None
    except PaymentProviderRefused:
        raise ApiError(
            502, "payment_provider_error", "Stripe refused to start the checkout."
        ) from None
    finally:
        answered.set()
    return JSONResponse(
        checked(
            CheckoutCreated,
            {
                "checkout_session_id": created.session_id,
                "url": created.url,
                "held_until": created.held_until,
            },
        ),
        status_code=201,
    )


async def current_order_status(request: Request, session_id: str) -> dict[str, Any] | None:
    """The order status of a session (None when this ledger never created it), from the read
    model at once. For a session still in flight, Stripe is asked in the background (at most
    every few seconds per session): a later poll shows what it said, and a slow Stripe never
    holds up this answer."""
    svc = services(request)
    body = await in_store(request, svc.order_status.get, session_id, retry=IDEMPOTENT)  # a read
    # Only news of the checkout session can still change these; a refund moves on through the
    # refund worker, not through the session.
    if body is not None and body["status"] in IN_FLIGHT:
        # Non-blocking (a lock and a queue): no worker thread is needed to schedule it.
        svc.poll_fulfillment.request_refresh(session_id, cause_of(request))
    return body


@documented(
    "GET",
    "The order a checkout session became, for the storefront's success page",
    "checkout",
    {
        200: Answer("The session's order status.", OrderStatus),
        404: error("`unknown_checkout_session`: this ledger never created it."),
        503: UNAVAILABLE,
    },
)
async def order_status(request: Request) -> JSONResponse:
    body = await current_order_status(request, request.path_params["session_id"])
    if body is None:
        raise ApiError(
            404,
            "unknown_checkout_session",
            "This ledger never created a checkout session with that id.",
        )
    return JSONResponse(checked(OrderStatus, body))


routes = [
    Route("/api/carts/{cart_id}/checkout", begin_checkout, methods=["POST"]),
    Route("/api/checkout-sessions/{session_id}/order", order_status, methods=["GET"]),
]
