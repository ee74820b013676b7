"""After-sale commands: the merchant refunds part of a placed order or cancels it.

The decisions are the order's (`ledger.domain.after_sale`); here the order and the inventory
items whose stock goes back are locked, read, and saved in one commit, so a restock is never
recorded apart from its refund. Each request names itself by an id derived from the merchant's
idempotency key: the same request again finds its decision recorded and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import TypeVar
from uuid import UUID, uuid5

from ledger.decisions import Commit, DecidingApplication
from ledger.domain import InventoryItem, Order, inventory_item_id
from ledger.domain.errors import UnknownOrder, UnknownProduct
from ledger.domain.refund_book import MerchantRefund

T = TypeVar("T")

# Namespace of the ids of the merchant's requests (refund ids, cancel ids).
_REQUESTS = UUID("6f0b8a52-3f5e-4f0e-9a53-6d1d7c2f0a17")


def request_id_for(order_id: UUID, idempotency_key: str) -> str:
    """The id of the merchant's request on this order with this idempotency key: the refund's
    id at Stripe (`metadata[refund_id]`) and in the order's refunds."""
    return str(uuid5(_REQUESTS, f"{order_id}:{idempotency_key}"))


class AfterSaleCommands(DecidingApplication):
    def refund_order(
        self,
        order_id: UUID,
        request_id: str,
        *,
        lines: Mapping[str, int] | None,
        amount: int | None,
        restock: bool,
        reason: str | None,
        cause: str,
    ) -> MerchantRefund:
        """A refund of `lines` (sku -> quantity) or of an `amount` (`Order.refund`)."""
        skus = list(lines or {}) if restock else []

        def decide(order: Order, items: Mapping[str, InventoryItem]) -> MerchantRefund:
            return order.refund(
                request_id,
                lines=lines,
                amount=amount,
                restock=restock,
                reason=reason,
                items=items,
                cause=cause,
            )

        return self._after_sale(order_id, lambda _: skus, decide)

    def cancel_order(
        self, order_id: UUID, request_id: str, *, restock: bool, reason: str | None, cause: str
    ) -> Order:
        """The order cancelled (`Order.cancel`)."""

        def decide(order: Order, items: Mapping[str, InventoryItem]) -> Order:
            order.cancel(request_id, restock=restock, reason=reason, items=items, cause=cause)
            return order

        def skus(order: Order) -> list[str]:
            return [line["sku"] for line in order.lines] if restock else []

        return self._after_sale(order_id, skus, decide)

    def _after_sale(
        self,
        order_id: UUID,
        skus: Callable[[Order], Collection[str]],
        decide: Callable[[Order, Mapping[str, InventoryItem]], T],
    ) -> T:
        """Runs `decide` on the order and the items of the `skus` it may restock (those of
        its lines only), holding the order's lock, then the items', and saves what changed."""

        def attempt() -> T:
            commit = Commit(self)
            order = commit.get(Order, order_id, UnknownOrder(order_id))
            ordered = {line["sku"] for line in order.lines}
            restockable = [sku for sku in skus(order) if sku in ordered]
            with self.locks.held(inventory_item_id(sku) for sku in restockable):
                items = {
                    sku: commit.get(InventoryItem, inventory_item_id(sku), UnknownProduct(sku))
                    for sku in restockable
                }
                result = decide(order, items)
                changed = commit.changed()
                if changed:
                    self.save(*changed)
            return result

        return self._decide([order_id], attempt)
