"""A product on sale and the stock of it on hand, one aggregate per SKU."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.domain.errors import InsufficientStock, InvalidProduct, InvalidQuantity
from ledger.domain.identity import inventory_item_id


class InventoryItem(Aggregate):
    STREAM = "inventory"

    @staticmethod
    def create_id(sku: str) -> UUID:
        return inventory_item_id(sku)

    @classmethod
    def new(cls, sku: str, name: str, unit_amount: int, currency: str, cause: str) -> InventoryItem:
        _check_details(name, unit_amount, currency)
        return cls(sku=sku, name=name, unit_amount=unit_amount, currency=currency, cause=cause)

    @event("ProductListed")
    def __init__(self, sku: str, name: str, unit_amount: int, currency: str, cause: str) -> None:
        self.sku = sku
        self.name = name
        self.unit_amount = unit_amount
        self.currency = currency
        self.on_hand = 0

    def change_details(self, name: str, unit_amount: int, currency: str, cause: str) -> bool:
        """Records new details; returns False when nothing changed (so nothing is recorded)."""
        _check_details(name, unit_amount, currency)
        if (name, unit_amount, currency) == (self.name, self.unit_amount, self.currency):
            return False
        self._details_changed(name=name, unit_amount=unit_amount, currency=currency, cause=cause)
        return True

    @event("ProductDetailsChanged")
    def _details_changed(self, name: str, unit_amount: int, currency: str, cause: str) -> None:
        self.name = name
        self.unit_amount = unit_amount
        self.currency = currency

    def adjust_stock(self, quantity: int, reason: str | None, cause: str) -> None:
        """Receives stock (quantity > 0) or writes it off (quantity < 0)."""
        if quantity == 0:
            raise InvalidQuantity("A stock adjustment must not be zero.")
        if quantity > 0:
            self._received(quantity=quantity, reason=reason, cause=cause)
        else:
            self._require(-quantity)
            self._written_off(quantity=-quantity, reason=reason, cause=cause)

    @event("StockReceived")
    def _received(self, quantity: int, reason: str | None, cause: str) -> None:
        self.on_hand += quantity

    @event("StockWrittenOff")
    def _written_off(self, quantity: int, reason: str | None, cause: str) -> None:
        self.on_hand -= quantity

    def can_supply(self, quantity: int) -> bool:
        """The stock rule, in one place: whether this many units can be taken now."""
        return 0 < quantity <= self.on_hand

    def reserve(self, order_id: UUID, quantity: int, cause: str) -> None:
        """Takes stock for a placed order."""
        if quantity <= 0:
            raise InvalidQuantity("A reservation must be for at least one unit.")
        self._require(quantity)
        self._reserved(order_id=order_id, quantity=quantity, cause=cause)

    @event("StockReserved")
    def _reserved(self, order_id: UUID, quantity: int, cause: str) -> None:
        self.on_hand -= quantity

    def _require(self, quantity: int) -> None:
        if not self.can_supply(quantity):
            raise InsufficientStock(self.sku, quantity, self.on_hand)


def _check_details(name: str, unit_amount: int, currency: str) -> None:
    if not name.strip():
        raise InvalidProduct("A product needs a name.")
    if unit_amount <= 0:
        raise InvalidProduct("A product's unit_amount must be a positive number of minor units.")
    if (
        len(currency) != 3
        or not currency.isascii()
        or not currency.isalpha()
        or not currency.islower()
    ):
        raise InvalidProduct("currency must be a lower-case ISO 4217 code such as 'usd'.")
