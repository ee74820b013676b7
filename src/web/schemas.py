"""Request bodies of the HTTP API, validated strictly (no "5" for 5, no true for 1)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, RootModel, StringConstraints

from ledger.domain.cart import MAX_LINE_QUANTITY

SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAX_UNIT_AMOUNT = 99_999_999  # Stripe's ceiling for a price in minor units
MAX_STOCK_ADJUSTMENT = 1_000_000_000
# The largest position in the event log (a PostgreSQL bigint): the top of `after`.
MAX_POSITION = 2**63 - 1


# Printable text only: a NUL or other control character has no business in a name.
TEXT = r"^[^\x00-\x1f\x7f]*$"


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class ProductBody(Strict):
    name: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=TEXT)
    ]
    unit_amount: Annotated[int, Field(gt=0, le=MAX_UNIT_AMOUNT)]
    currency: Annotated[str, StringConstraints(pattern=r"^[a-z]{3}$")]


class StockBody(Strict):
    # Not 0 either: the handler answers 422 for it (nothing to receive or write off).
    quantity: Annotated[
        int,
        Field(
            ge=-MAX_STOCK_ADJUSTMENT,
            le=MAX_STOCK_ADJUSTMENT,
            description="Received (> 0) or written off (< 0); never 0.",
            json_schema_extra={"not": {"const": 0}},
        ),
    ]
    reason: Annotated[str, StringConstraints(max_length=500, pattern=TEXT)] | None = None


class CartBody(Strict):
    user_id: (
        Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=TEXT)] | None
    ) = None


class CartLineBody(Strict):
    quantity: Annotated[int, Field(ge=0, le=MAX_LINE_QUANTITY)]


# The merchant's reason for a refund or a cancellation: Stripe keeps 500 characters of metadata.
Reason = Annotated[str, StringConstraints(max_length=500, pattern=TEXT)]


class CancelBody(Strict):
    reason: Reason | None = None
    restock: bool = Field(True, description="Put the quantities not refunded yet back on hand.")


class RefundLineBody(Strict):
    sku: Annotated[str, StringConstraints(pattern=SKU_PATTERN)]
    quantity: Annotated[int, Field(ge=1, le=MAX_LINE_QUANTITY)]


class RefundByLines(Strict):
    lines: Annotated[list[RefundLineBody], Field(min_length=1, max_length=100)]
    restock: bool = Field(True, description="Put them back on hand.")
    reason: Reason | None = None


class RefundByAmount(Strict):
    amount: Annotated[int, Field(gt=0, le=MAX_UNIT_AMOUNT * MAX_LINE_QUANTITY)]
    reason: Reason | None = None


class RefundBody(RootModel[RefundByLines | RefundByAmount]):
    """Either `lines` (with `restock`) or an `amount`."""

    @property
    def lines(self) -> dict[str, int] | None:
        """The quantities to refund by sku (a sku named twice, summed), or None by amount."""
        if not isinstance(self.root, RefundByLines):
            return None
        quantities: dict[str, int] = {}
        for line in self.root.lines:
            quantities[line.sku] = quantities.get(line.sku, 0) + line.quantity
        return quantities

    @property
    def amount(self) -> int | None:
        return self.root.amount if isinstance(self.root, RefundByAmount) else None

    @property
    def restock(self) -> bool:
        return isinstance(self.root, RefundByLines) and self.root.restock

    @property
    def reason(self) -> str | None:
        return self.root.reason
