"""Catalog and stock commands: listing a product, changing it, receiving or writing off stock."""

from __future__ import annotations

import uuid

from ledger.decisions import DecidingApplication
from ledger.domain import InventoryItem, inventory_item_id
from ledger.domain.errors import UnknownProduct


class CatalogCommands(DecidingApplication):
    def put_product(
        self,
        sku: str,
        name: str,
        unit_amount: int,
        currency: str,
        cause: str,
        listing_id: str | None = None,
    ) -> tuple[InventoryItem, bool]:
        """Lists a product or changes its details. Returns the item and whether it was new.
        Asked again, it changes nothing more: the details are compared with those recorded,
        and with `listing_id` (chosen before the first ask) a product listed by an earlier
        run of the same request (its commit left in doubt) still counts as new."""

        def decide() -> tuple[InventoryItem, bool]:
            item = self._find(InventoryItem, inventory_item_id(sku))
            if item is None:
                item = InventoryItem.new(sku, name, unit_amount, currency, cause, listing_id)
                self.save(item)
                return item, True
            if item.change_details(name, unit_amount, currency, cause):
                self.save(item)
            return item, listing_id is not None and item.listing_id == listing_id

        return self._decide([inventory_item_id(sku)], decide)

    def adjust_stock(
        self,
        sku: str,
        quantity: int,
        reason: str | None,
        cause: str,
        adjustment_id: str | None = None,
    ) -> InventoryItem:
        """Receives or writes off stock. With `adjustment_id` (chosen before the first ask),
        asking again changes nothing more (`InventoryItem.adjust_stock`)."""
        # One id for every decision of this call too: a commit in doubt that did commit comes
        # back from the library's own retry as a version conflict, and the decision made again
        # must find the adjustment recorded rather than record it twice.
        adjustment = adjustment_id or uuid.uuid4().hex

        def decide() -> InventoryItem:
            item = self.get_product(sku)
            item.adjust_stock(quantity, reason, cause, adjustment)
            if item.pending_events:
                self.save(item)
            return item

        return self._decide([inventory_item_id(sku)], decide)

    def get_product(self, sku: str) -> InventoryItem:
        item = self._find(InventoryItem, inventory_item_id(sku))
        if item is None:
            raise UnknownProduct(sku)
        return item
