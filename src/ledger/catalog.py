"""Product reads straight from the event log, for use before a read model is available."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from ledger.application import Ledger
from ledger.domain import InventoryItem


def product_view(item: InventoryItem) -> dict[str, Any]:
    return {
        "sku": item.sku,
        "name": item.name,
        "unit_amount": item.unit_amount,
        "currency": item.currency,
        "available": item.on_hand,
    }


class LogCatalog:
    """Answers the catalog's questions by loading aggregates (O(products) per listing)."""

    _LISTED_TOPIC = get_topic(InventoryItem.ProductListed)  # type: ignore[attr-defined]

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def product(self, sku: str) -> dict[str, Any]:
        return product_view(self.ledger.get_product(sku))

    def products(self) -> list[dict[str, Any]]:
        ids: list[UUID] = []
        start = 1
        while True:
            page = self.ledger.recorder.select_notifications(
                start, 500, topics=[self._LISTED_TOPIC]
            )
            ids.extend(UUID(str(n.originator_id)) for n in page)
            if len(page) < 500:
                break
            start = page[-1].id + 1
        items: list[InventoryItem] = [self.ledger.repository.get(i) for i in ids]
        return sorted((product_view(i) for i in items), key=lambda p: p["sku"])
