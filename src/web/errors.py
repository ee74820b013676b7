"""Errors in the contract's shape: {"error": {"code", "message"}} plus named extra fields."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from ledger.application import ConcurrentModification
from ledger.domain.errors import (
    CartClosed,
    CurrencyMismatch,
    DomainError,
    EmptyCart,
    InsufficientStock,
    InvalidProduct,
    InvalidQuantity,
    InvalidRefund,
    TooManyLines,
    UnknownCart,
    UnknownCheckoutSession,
    UnknownOrder,
    UnknownProduct,
)
from ledger.storage import StoreUnavailable


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def invalid_field(field: str, message: str) -> ApiError:
    """422 `validation_error` naming one field, as a body's validation names each."""
    return ApiError(
        422,
        "validation_error",
        "Some fields are missing or invalid.",
        fields=[{"field": field, "message": message}],
    )


def error_response(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, **extra}}
    return JSONResponse(body, status_code=status, headers=headers)


# How much of a client's input an error message quotes: enough to recognise it, never a 10 kB
# SKU sent back whole.
QUOTE_LIMIT = 64
# A run of this many non-space characters in a message is no word or id of ours: input.
_LONG_RUN = re.compile(rf"\S{{{2 * QUOTE_LIMIT + 1},}}")


def shorten(text: str, limit: int = QUOTE_LIMIT) -> str:
    """`text`, or its first `limit` characters and an ellipsis."""
    return text if len(text) <= limit else f"{text[:limit]}…"


def quote_inputs_briefly(value: Any, request: Request) -> Any:
    """`value` (a message, or extra fields holding strings) with the long values the client
    sent in the path or query string, and any other very long run of non-space, cut short."""
    if isinstance(value, dict):
        return {k: quote_inputs_briefly(v, request) for k, v in value.items()}
    if isinstance(value, list):
        return [quote_inputs_briefly(v, request) for v in value]
    if not isinstance(value, str):
        return value
    inputs = [
        v
        for v in (*request.path_params.values(), *request.query_params.values())
        if isinstance(v, str) and len(v) > QUOTE_LIMIT
    ]
    for sent in sorted(inputs, key=len, reverse=True):
        # Quoted with repr() ('{sku!r}': escapes change the text) or as is.
        value = value.replace(repr(sent), repr(shorten(sent))).replace(sent, shorten(sent))
    return _LONG_RUN.sub(lambda run: shorten(run.group()), value)


_DOMAIN_STATUS: dict[type[DomainError], int] = {
    UnknownProduct: 404,
    UnknownCart: 404,
    UnknownCheckoutSession: 404,
    UnknownOrder: 404,
    CartClosed: 409,
    InsufficientStock: 409,
    CurrencyMismatch: 409,
    EmptyCart: 422,
    InvalidQuantity: 422,
    InvalidProduct: 422,
    TooManyLines: 422,
    InvalidRefund: 422,
}


def domain_status(refusal: DomainError) -> int:
    """The HTTP status of a refusal: 409 unless the contract says otherwise."""
    return next((s for t, s in _DOMAIN_STATUS.items() if isinstance(refusal, t)), 409)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return error_response(
        exc.status,
        exc.code,
        quote_inputs_briefly(exc.message, request),
        headers=headers,
        **quote_inputs_briefly(exc.extra, request),
    )


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    return error_response(domain_status(exc), exc.code, quote_inputs_briefly(str(exc), request))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404:
        message = "There is nothing at this address."
    return error_response(
        exc.status_code, code, quote_inputs_briefly(message, request), headers=exc.headers
    )


async def _client_gone(_: Request, exc: Exception) -> Response:
    # The client closed the connection before its body arrived: nobody reads this answer, and
    # it is no failure of ours. The request's one log line says 499 (nginx's "client closed
    # request"), with no traceback.
    return error_response(
        499,
        "client_closed_request",
        "The connection closed before the whole request body arrived.",
    )


async def _unavailable(_: Request, exc: Exception) -> Response:
    return error_response(
        503,
        "service_unavailable",
        "The ledger cannot reach its store right now; please retry shortly.",
        headers={"Retry-After": "1"},
    )


async def _conflict(_: Request, exc: Exception) -> Response:
    return error_response(
        503,
        "busy",
        "Too many changes to the same records at once; please retry.",
        headers={"Retry-After": "1"},
    )


async def _internal(_: Request, exc: Exception) -> Response:
    return error_response(500, "internal_error", "Something went wrong on our side.")


def exception_handlers() -> dict[Any, Any]:
    from eventsourcing.domain import OriginatorVersionError
    from eventsourcing.persistence import OperationalError as StoreOperationalError
    from eventsourcing.persistence import PersistenceError

    return {
        ApiError: _api_error,
        DomainError: _domain_error,
        ClientDisconnect: _client_gone,
        HTTPException: _http_error,
        StoreUnavailable: _unavailable,
        StoreOperationalError: _unavailable,
        PersistenceError: _unavailable,
        # An aggregate whose stored events do not read through (the ledger reads such a one
        # from the log again, and fails with StoreUnavailable): retryable, like the store away.
        OriginatorVersionError: _unavailable,
        ConcurrentModification: _conflict,
        Exception: _internal,
    }
