"""Catalog and stock commands: listing a product, changing it, receiving or writing off stock."""

from __future__ import annotations

from ledger.decisions import DecidingApplication
from ledger.domain import InventoryItem, inventory_item_id
from ledger.domain.errors import UnknownProduct


class CatalogCommands(DecidingApplication):
    def put_product(
        self, sku: str, name: str, unit_amount: int, currency: str, cause: str
    ) -> tuple[InventoryItem, bool]:
        """Lists a product or changes its details. Returns the item and whether it was new."""

        def decide() -> tuple[InventoryItem, bool]:
            item = self._find(InventoryItem, inventory_item_id(sku))
            if item is None:
                item = InventoryItem.new(sku, name, unit_amount, currency, cause)
                self.save(item)
                return item, True
            if item.change_details(name, unit_amount, currency, cause):
                self.save(item)
            return item, False

        return self._decide([inventory_item_id(sku)], decide)

    def adjust_stock(
        self, sku: str, quantity: int, reason: str | None, cause: str
    ) -> InventoryItem:
        def decide() -> InventoryItem:
            item = self.get_product(sku)
            item.adjust_stock(quantity, reason, cause)
            self.save(item)
            return item

        return self._decide([inventory_item_id(sku)], decide)

    def get_product(self, sku: str) -> InventoryItem:
        item = self._find(InventoryItem, inventory_item_id(sku))
        if item is None:
            raise UnknownProduct(sku)
        return item
