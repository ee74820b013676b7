"""Errors in the contract's shape: {"error": {"code", "message"}} plus named extra fields."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
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
    TooManyLines,
    UnknownCart,
    UnknownCheckoutSession,
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


def error_response(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, **extra}}
    return JSONResponse(body, status_code=status, headers=headers)


_DOMAIN_STATUS: dict[type[DomainError], int] = {
    UnknownProduct: 404,
    UnknownCart: 404,
    UnknownCheckoutSession: 404,
    CartClosed: 409,
    InsufficientStock: 409,
    CurrencyMismatch: 409,
    EmptyCart: 422,
    InvalidQuantity: 422,
    InvalidProduct: 422,
    TooManyLines: 422,
}

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return error_response(exc.status, exc.code, exc.message, headers=headers, **exc.extra)


async def _domain_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    status = next((s for t, s in _DOMAIN_STATUS.items() if isinstance(exc, t)), 409)
    return error_response(status, exc.code, str(exc))


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404:
        message = "There is nothing at this address."
    return error_response(exc.status_code, code, message, headers=exc.headers)


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
    from eventsourcing.persistence import OperationalError as StoreOperationalError
    from eventsourcing.persistence import PersistenceError

    return {
        ApiError: _api_error,
        DomainError: _domain_error,
        HTTPException: _http_error,
        StoreUnavailable: _unavailable,
        StoreOperationalError: _unavailable,
        PersistenceError: _unavailable,
        ConcurrentModification: _conflict,
        Exception: _internal,
    }
