"""A product on sale and the stock of it on hand, one aggregate per SKU.

With holds (`LEDGER_STOCK_HOLD`), part of what is on hand is held for customers who are paying:
a hold is placed in the commit that checks the stock, and ends released or taken by the order.
What is held never exceeds what is on hand.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.domain.errors import InsufficientStock, InvalidProduct, InvalidQuantity
from ledger.domain.identity import inventory_item_id

# How many adjustment ids an item remembers (`InventoryItem.adjust_stock`).
RECENT_ADJUSTMENTS = 100


class InventoryItem(Aggregate):
    STREAM = "inventory"
    # Which request listed it: that request, run again after its commit was left in doubt,
    # finds the product its first run listed. A class attribute, for an item read from a
    # snapshot taken before it existed.
    listing_id: str | None = None

    @staticmethod
    def create_id(sku: str) -> UUID:
        return inventory_item_id(sku)

    @classmethod
    def new(
        cls,
        sku: str,
        name: str,
        unit_amount: int,
        currency: str,
        cause: str,
        listing_id: str | None = None,
    ) -> InventoryItem:
        """`listing_id`: chosen by the caller before it asks (see `listing_id` below)."""
        _check_details(name, unit_amount, currency)
        return cls(
            sku=sku,
            name=name,
            unit_amount=unit_amount,
            currency=currency,
            cause=cause,
            listing_id=listing_id,
        )

    # `listing_id` defaults to None: products listed before it existed have none.
    @event("ProductListed")
    def __init__(
        self,
        sku: str,
        name: str,
        unit_amount: int,
        currency: str,
        cause: str,
        listing_id: str | None = None,
    ) -> None:
        self.listing_id = listing_id
        self.sku = sku
        self.name = name
        self.unit_amount = unit_amount
        self.currency = currency
        self.on_hand = 0
        # Live holds: hold id -> quantity. Their sum is never more than on hand.
        self.holds: dict[str, int] = {}

    @property
    def held(self) -> int:
        return sum(self.holds.values())

    def available_to(self, hold_id: str | None = None) -> int:
        """What a buyer may take now: on hand, less what is held for everyone else (a hold of
        the buyer's own, `hold_id`, is theirs to take)."""
        return self.on_hand - self.held + self.holds.get(hold_id or "", 0)

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

    def adjust_stock(
        self, quantity: int, reason: str | None, cause: str, adjustment_id: str | None = None
    ) -> None:
        """Receives stock (quantity > 0) or writes it off (quantity < 0). `adjustment_id`, chosen
        by the caller before it asks: asked again (a request run again after its commit was
        left in doubt), an adjustment already recorded changes nothing more."""
        if quantity == 0:
            raise InvalidQuantity("A stock adjustment must not be zero.")
        if adjustment_id is not None and adjustment_id in self.recent_adjustments:
            return
        if quantity > 0:
            self._received(
                quantity=quantity, reason=reason, cause=cause, adjustment_id=adjustment_id
            )
        else:
            # Units held for a paying customer are promised: they cannot be written off.
            self._require(-quantity)
            self._written_off(
                quantity=-quantity, reason=reason, cause=cause, adjustment_id=adjustment_id
            )

    # The ids of the latest adjustments, newest last: a request runs again within seconds, so
    # a few are enough. A class attribute, for an item read from a snapshot taken before.
    recent_adjustments: tuple[str, ...] = ()

    def _remember(self, adjustment_id: str | None) -> None:
        if adjustment_id is not None:
            kept = self.recent_adjustments[-(RECENT_ADJUSTMENTS - 1) :]
            self.recent_adjustments = (*kept, adjustment_id)

    # `adjustment_id` defaults to None: adjustments recorded before it existed have none.
    @event("StockReceived")
    def _received(
        self, quantity: int, reason: str | None, cause: str, adjustment_id: str | None = None
    ) -> None:
        self.on_hand += quantity
        self._remember(adjustment_id)

    @event("StockWrittenOff")
    def _written_off(
        self, quantity: int, reason: str | None, cause: str, adjustment_id: str | None = None
    ) -> None:
        self.on_hand -= quantity
        self._remember(adjustment_id)

    def can_supply(self, quantity: int, hold_id: str | None = None) -> bool:
        """The stock rule, in one place: whether this many units can be taken now, by the
        holder of `hold_id` (or by anyone, without one)."""
        return 0 < quantity <= self.available_to(hold_id)

    def hold(self, hold_id: str, cart_id: UUID, quantity: int, held_until: str, cause: str) -> None:
        """Holds units for a checkout until `held_until` (ISO-8601 UTC), or until released or
        taken: nobody else can take them meanwhile."""
        if hold_id in self.holds:
            return
        self._require(quantity)
        self._held(
            hold_id=hold_id, cart_id=cart_id, quantity=quantity, held_until=held_until, cause=cause
        )

    @event("StockHeld")
    def _held(
        self, hold_id: str, cart_id: UUID, quantity: int, held_until: str, cause: str
    ) -> None:
        self.holds[hold_id] = quantity

    def release(self, hold_id: str, reason: str, cause: str) -> None:
        """Ends a hold: its units are available again. Nothing to do for one already ended."""
        quantity = self.holds.get(hold_id)
        if quantity is not None:
            self._released(hold_id=hold_id, quantity=quantity, reason=reason, cause=cause)

    @event("StockReleased")
    def _released(self, hold_id: str, quantity: int, reason: str, cause: str) -> None:
        del self.holds[hold_id]

    def reserve(
        self, order_id: UUID, quantity: int, cause: str, hold_id: str | None = None
    ) -> None:
        """Takes stock for a placed order: its hold's units when it holds them (the hold ends,
        taken), else units nobody holds."""
        if quantity <= 0:
            raise InvalidQuantity("A reservation must be for at least one unit.")
        self._require(quantity, hold_id)
        held = hold_id if hold_id in self.holds else None
        self._reserved(order_id=order_id, quantity=quantity, hold_id=held, cause=cause)

    class StockReserved(Aggregate.Event):
        order_id: UUID
        quantity: int
        hold_id: str | None
        cause: str

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["hold_id"] = None  # recorded before holds existed

    @event(StockReserved)
    def _reserved(self, order_id: UUID, quantity: int, hold_id: str | None, cause: str) -> None:
        self.on_hand -= quantity
        if hold_id is not None:
            self.holds.pop(hold_id, None)

    def give_back(self, order_id: UUID, quantity: int, reason: str, cause: str) -> None:
        """Returns an order's stock (its payment could not be captured after all)."""
        self._returned(order_id=order_id, quantity=quantity, reason=reason, cause=cause)

    @event("StockReturned")
    def _returned(self, order_id: UUID, quantity: int, reason: str, cause: str) -> None:
        self.on_hand += quantity

    def _require(self, quantity: int, hold_id: str | None = None) -> None:
        if not self.can_supply(quantity, hold_id):
            raise InsufficientStock(self.sku, quantity, self.available_to(hold_id))


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
