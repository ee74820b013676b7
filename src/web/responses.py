"""Response bodies of the HTTP API, as pydantic models: what `/openapi.json` documents, and
what the handlers check their answers against (`checked`) before sending them.

Each model lists exactly the fields the handler sends (`extra="forbid"`, except where a body is
open by design: an error's extra fields, an event's `data`). `checked` validates
an answer without re-serialising it, so the JSON sent is byte for byte the handler's own.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ledger.domain import vocabulary


def _listed(words: type[StrEnum]) -> dict[str, Any]:
    # The values inline, as the contract has always listed them: the enum type itself would
    # add a named schema of its own (and `OrderStatus` is already this module's answer).
    return {"enum": [word.value for word in words]}


CartStatusWord = Annotated[
    str,
    AfterValidator(vocabulary.CartStatus),
    Field(json_schema_extra=_listed(vocabulary.CartStatus)),
]
OrderStatusWord = Annotated[
    str,
    AfterValidator(vocabulary.OrderStatus),
    Field(json_schema_extra=_listed(vocabulary.OrderStatus)),
]
RefundStatusWord = Annotated[
    str,
    AfterValidator(vocabulary.RefundStatus),
    Field(json_schema_extra=_listed(vocabulary.RefundStatus)),
]


class ResponseBody(BaseModel):
    """A response body: exactly these fields."""

    model_config = ConfigDict(extra="forbid")


class FieldError(ResponseBody):
    field: str = Field(description="The field (or path parameter, or query parameter).")
    message: str


class Shortage(ResponseBody):
    sku: str
    requested: int
    available: int


class ErrorDetail(ResponseBody):
    model_config = ConfigDict(extra="allow")

    code: str = Field(description="snake_case, e.g. `unknown_cart`, `validation_error`.")
    message: str = Field(description="A sentence a person understands.")
    fields: list[FieldError] | None = Field(
        None, description="With `validation_error`: what is wrong with which field."
    )
    items: list[Shortage] | None = Field(
        None, description="With `out_of_stock`: the lines stock cannot cover."
    )


class Error(ResponseBody):
    """Every error: `{"error": {"code", "message", ...}}`, never a stack trace."""

    error: ErrorDetail


class Product(ResponseBody):
    sku: str
    name: str
    unit_amount: int = Field(description="Price in minor units.")
    currency: str = Field(description="Lower-case ISO 4217 code, e.g. `usd`.")
    available: int = Field(description="What a new checkout may take now.")


class ProductList(ResponseBody):
    products: list[Product] = Field(description="Every product, ordered by sku.")


class StockLevel(ResponseBody):
    sku: str
    on_hand: int


class Line(ResponseBody):
    sku: str
    name: str
    quantity: int
    unit_amount: int


class Cart(ResponseBody):
    cart_id: UUID
    user_id: str | None
    status: CartStatusWord
    items: list[Line] = Field(description="Priced at today's prices, ordered by sku.")
    amount_total: int
    currency: str | None = Field(description="Null while the cart is empty.")
    held_until: datetime | None = Field(
        description="Until when the cart's stock is held for its checkout (ISO-8601 UTC);"
        " null when nothing is held (LEDGER_STOCK_HOLD off, or no checkout under way)."
    )


class CheckoutCreated(ResponseBody):
    checkout_session_id: str
    url: str = Field(description="Stripe Checkout's page: send the customer there.")
    held_until: datetime | None = Field(
        description="Until when the cart's stock is held for the customer (ISO-8601 UTC);"
        " null when LEDGER_STOCK_HOLD is off."
    )


class OrderStatus(ResponseBody):
    checkout_session_id: str
    status: OrderStatusWord
    order_id: UUID | None = Field(description="Set once a paid session has an outcome.")
    amount_total: int
    currency: str
    items: list[Line]


class OrderLine(ResponseBody):
    sku: str
    name: str
    quantity: int
    unit_amount: int = Field(description="As the checkout session charged it.")
    quantity_refunded: int = Field(description="How many of the line were refunded.")


class Restocked(ResponseBody):
    sku: str
    quantity: int


class OrderRefund(ResponseBody):
    refund_id: str = Field(
        description="The merchant's refunds: the ledger's id (sent to Stripe as"
        " `metadata[refund_id]`); others: Stripe's refund id."
    )
    amount: int
    status: RefundStatusWord = Field(
        description="As Stripe reports it: `pending` (also Stripe's `requires_action`),"
        " `succeeded`, `failed` (also `canceled`)."
    )
    reason: str | None = Field(
        description="Why: the merchant's reason for theirs; the order's rejection"
        " (`out_of_stock`, ...) for its own refund; null for one made outside the ledger"
        " (Stripe's Dashboard)."
    )
    restocked: list[Restocked] = Field(description="What the refund returned to stock.")
    created_at: datetime = Field(description="When the ledger first recorded it.")


class Order(ResponseBody):
    """An order whose payment has an outcome, as the merchant sees it."""

    order_id: UUID
    checkout_session_id: str
    user_id: str | None = Field(description="The `user_id` its cart was created with.")
    status: OrderStatusWord
    created_at: datetime = Field(description="When its payment's outcome was recorded.")
    currency: str
    amount_total: int = Field(description="What Stripe charged (or authorized).")
    amount_captured: int = Field(description="What was captured of it (0 while only authorized).")
    amount_refunded: int = Field(description="What refunds that succeeded gave back.")
    items: list[OrderLine]
    refunds: list[OrderRefund] = Field(description="Oldest first.")


class OrderPage(ResponseBody):
    orders: list[Order] = Field(description="Newest first.")
    next_after: str | None = Field(
        description="The `after` of the next page (opaque); null when this page reached the"
        " end of the list."
    )


class WebhookReceived(ResponseBody):
    received: Literal[True]


class Event(ResponseBody):
    position: int = Field(description="The event's place in the log (commit order).")
    stream: str = Field(description="`cart`, `order`, `inventory`, ...")
    stream_id: str
    version: int
    type: str = Field(description="The event's name in the domain's words, e.g. `OrderPlaced`.")
    recorded_at: datetime | None
    cause: str | None = Field(description="What led to it, e.g. `http:<X-Request-ID>`.")
    data: dict[str, Any]


class EventPage(ResponseBody):
    events: list[Event]
    next_after: int | None = Field(
        description="The `after` of the next page; null at the current end of the log."
    )


class OrderHistory(ResponseBody):
    order_id: UUID
    events: list[Event]


class StockAt(ResponseBody):
    sku: str
    on_hand: int
    at: datetime = Field(description="The instant asked about, in UTC.")


class Health(ResponseBody):
    status: Literal["ok"]


class Ready(ResponseBody):
    status: Literal["ready"]


class NotReady(ResponseBody):
    status: Literal["unavailable"]
    dependency: str = Field(description="Which dependency is down, e.g. `database`.")
    error: ErrorDetail


class OpenApiDocument(ResponseBody):
    """This document."""

    model_config = ConfigDict(extra="allow")

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]


def checked(model: type[BaseModel], body: dict[str, Any]) -> dict[str, Any]:
    """`body`, unchanged, once it is known to be a valid `model` (else ValidationError: an
    answer that does not match the documented one is a bug of ours, answered 500)."""
    model.model_validate(body)
    return body


def checked_json(model: type[BaseModel], body: bytes) -> bytes:
    """`checked` for a body already in JSON: `body`, unchanged, once it is known to be a valid
    `model` (read by pydantic from the JSON itself, without making Python objects of it)."""
    model.model_validate_json(body)
    return body
