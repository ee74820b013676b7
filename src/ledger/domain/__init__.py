"""The ledger's domain: aggregates and their events, pure Python with no I/O."""

from ledger.domain.cart import Cart
from ledger.domain.errors import DomainError
from ledger.domain.identity import inventory_item_id, order_id_for
from ledger.domain.inventory import InventoryItem
from ledger.domain.order import Order, PaidSession

__all__ = [
    "Cart",
    "DomainError",
    "InventoryItem",
    "Order",
    "PaidSession",
    "inventory_item_id",
    "order_id_for",
]
