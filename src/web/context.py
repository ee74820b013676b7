"""Per-request plumbing the routes share: the wired services, the cause of a change, auth."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from starlette.requests import Request

from web.errors import ApiError
from web.store_calls import REQUEST_BUDGET_SECONDS, Retry, call_store

T = TypeVar("T")

if TYPE_CHECKING:
    from web.bootstrap import Services


def services(request: Request) -> Services:
    return request.app.state.services


async def in_store(
    request: Request,
    fn: Callable[..., T],
    *args: Any,
    retry: Retry,
    budget: float = REQUEST_BUDGET_SECONDS,
) -> T:
    """Runs a blocking call on the store for this request, within the request's budget.
    `retry`: whether the call is safe to run again after a failure (web.store_calls.Retry);
    each caller says so, and why, where it calls."""
    return await call_store(services(request).store_breaker, fn, *args, retry=retry, budget=budget)


async def calling_stripe(
    request: Request,
    fn: Callable[..., T],
    *args: Any,
    retry: Retry,
    budget: float = REQUEST_BUDGET_SECONDS,
) -> T:
    """`in_store` for a call that waits on Stripe too (it may also use the store): its thread
    comes from the Stripe-bound pool, so a slow Stripe takes none from the store's reads."""
    svc = services(request)
    return await call_store(
        svc.store_breaker, fn, *args, retry=retry, budget=budget, threads=svc.stripe_bound_calls
    )


def cause_of(request: Request) -> str:
    """What an event records as its cause: the HTTP request that led to it."""
    return f"http:{request.state.request_id}"


def require_bearer(request: Request, accepted: list[str], audience: str) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    valid = scheme.lower() == "bearer" and any(
        secrets.compare_digest(token.strip().encode(), t.encode()) for t in accepted
    )
    if not accepted or not valid:
        raise ApiError(401, "unauthorized", f"A valid {audience} bearer token is required.")


def unknown_order(request: Request) -> ApiError:
    return ApiError(404, "unknown_order", f"There is no order {request.path_params['order_id']}.")


def order_id_of(request: Request) -> UUID:
    """The path's order id; 404 `unknown_order` for one that is not a UUID."""
    try:
        return UUID(request.path_params["order_id"])
    except ValueError:
        raise unknown_order(request) from None
