"""What a handler declares about itself for `/openapi.json`: its request body, its answers by
status with their models, its bearer token and its parameters.

A handler carries its documentation through `@documented(...)`, one decorator per method it
answers; `web.openapi_document` walks an app's routes and reads it from their endpoints. The
answers every API shares (401, the body's 413/415/422, 503) are named here once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from web.responses import Error

JSON = "application/json"
HTML = "text/html"
PROMETHEUS = "text/plain"

Security = Literal["admin", "auditor", "metrics", "storefront"]


@dataclass(frozen=True)
class Answer:
    """One documented response: its body model (None: no JSON model) and media type."""

    description: str
    model: type[BaseModel] | None = None
    media_type: str = JSON
    retry_after: bool = False


@dataclass(frozen=True)
class Query:
    name: str
    type: Any
    description: str
    required: bool = False


@dataclass(frozen=True)
class Header:
    name: str
    description: str
    required: bool = True
    type: Any = str


# Compared by identity: each is declared once, beside its handler.
@dataclass(frozen=True, eq=False)
class Operation:
    """One method of one route, as the document describes it."""

    summary: str
    tag: str
    responses: Mapping[int, Answer]
    body: type[BaseModel] | None = None
    body_required: bool = True
    security: Security | None = None
    optional_security: bool = False
    query: tuple[Query, ...] = ()
    headers: tuple[Header, ...] = ()
    description: str = ""


# Where a handler keeps its operations, by upper-case method.
_OPERATIONS_ATTRIBUTE = "__openapi_operations__"

Handler = TypeVar("Handler", bound=Callable[..., Any])


def documented(
    method: str,
    summary: str,
    tag: str,
    responses: Mapping[int, Answer],
    *,
    body: type[BaseModel] | None = None,
    body_required: bool = True,
    security: Security | None = None,
    optional_security: bool = False,
    query: tuple[Query, ...] = (),
    headers: tuple[Header, ...] = (),
    description: str = "",
) -> Callable[[Handler], Handler]:
    """Declares what `method` of the decorated handler takes and answers (the fields of
    `Operation`). The handler itself is returned unchanged."""
    operation = Operation(
        summary,
        tag,
        responses,
        body=body,
        body_required=body_required,
        security=security,
        optional_security=optional_security,
        query=query,
        headers=headers,
        description=description,
    )

    def attach(handler: Handler) -> Handler:
        operations: dict[str, Operation] = handler.__dict__.setdefault(_OPERATIONS_ATTRIBUTE, {})
        operations[method.upper()] = operation
        return handler

    return attach


def operations_of(handler: Callable[..., Any]) -> Mapping[str, Operation]:
    """The operations `handler` declared, by upper-case method (none: it is not documented)."""
    found: Mapping[str, Operation] = getattr(handler, _OPERATIONS_ATTRIBUTE, {})
    return found


def error(description: str) -> Answer:
    return Answer(description, Error)


UNAUTHORIZED = error("`unauthorized`: no valid bearer token.")
INVALID = error("`validation_error` (with `fields`), `invalid_json`.")
UNSUPPORTED = error("`unsupported_media_type`: the body is not `application/json`.")
TOO_LARGE = error("`payload_too_large`: the body is over 1 MiB.")
UNAVAILABLE = Answer(
    "`service_unavailable` or `busy`: the store cannot answer now; retry.", Error, retry_after=True
)
# What any handler that reads a JSON body may answer about it.
BODY_ERRORS: Mapping[int, Answer] = {413: TOO_LARGE, 415: UNSUPPORTED, 422: INVALID}
