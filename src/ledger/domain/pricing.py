"""A cart priced at today's prices and stock, as a checkout needs it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.domain.cart import Cart
from ledger.domain.errors import CurrencyMismatch, DomainError, EmptyCart
from ledger.domain.inventory import InventoryItem


@dataclass(frozen=True)
class Shortage:
    sku: str
    requested: int
    available: int


class OutOfStock(DomainError):
    code = "out_of_stock"

    def __init__(self, shortages: list[Shortage]) -> None:
        super().__init__("Some items are not in stock in the quantity asked for.")
        self.shortages = shortages


@dataclass(frozen=True)
class PricedLine:
    sku: str
    name: str
    quantity: int
    unit_amount: int
    available: int  # to this cart, as read when it was priced (on hand, less others' holds)
    currency: str
    in_stock: bool  # whether the item could supply the quantity when priced

    @classmethod
    def of(cls, item: InventoryItem, quantity: int) -> PricedLine:
        return cls(
            item.sku,
            item.name,
            quantity,
            item.unit_amount,
            item.available_to(),
            item.currency,
            item.can_supply(quantity),
        )


@dataclass(frozen=True)
class PricedCart:
    """A cart's lines at today's prices."""

    cart: Cart
    lines: list[PricedLine]
    currency: str | None

    @property
    def amount_total(self) -> int:
        return sum(line.unit_amount * line.quantity for line in self.lines)

    def snapshot(self) -> list[dict[str, Any]]:
        return [
            {"sku": x.sku, "name": x.name, "quantity": x.quantity, "unit_amount": x.unit_amount}
            for x in self.lines
        ]

    def checkout_currency(self) -> str:
        """The one currency the lines are priced in now, which the cart is charged in.

        A product's currency may change while it sits in a cart: a cart whose products no
        longer share one is refused rather than charged in whichever comes first.
        """
        skus_by_currency: dict[str, list[str]] = {}
        for line in self.lines:
            skus_by_currency.setdefault(line.currency, []).append(line.sku)
        if not skus_by_currency:
            raise EmptyCart()
        if len(skus_by_currency) > 1:
            raise CurrencyMismatch.within(skus_by_currency)
        return next(iter(skus_by_currency))

    def shortages(self) -> list[Shortage]:
        """Lines the stock available (when priced) cannot cover."""
        return [Shortage(x.sku, x.quantity, x.available) for x in self.lines if not x.in_stock]

    def require_stock(self) -> None:
        shortages = self.shortages()
        if shortages:
            raise OutOfStock(shortages)
