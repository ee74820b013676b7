"""Hold commands (`LEDGER_STOCK_HOLD`): stock held for a checkout in the commit that checks it,
and released when the checkout ends without an order.

Locks are taken in two steps, carts before items, as every command that writes both does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar
from uuid import UUID

from ledger.commands.carts import CartCommands
from ledger.decisions import Commit
from ledger.domain import Cart, InventoryItem, inventory_item_id
from ledger.domain.errors import UnknownCart, UnknownProduct
from ledger.domain.holds import place_hold, release_hold, skus_held
from ledger.domain.pricing import PricedCart, PricedLine

T = TypeVar("T")


class HoldCommands(CartCommands):
    def hold_stock(self, cart_id: UUID, hold_id: str, held_until: str, cause: str) -> PricedCart:
        """Prices the cart and holds its quantities until `held_until`, in one commit with the
        stock check, so two checkouts can never hold the same unit. Raises OutOfStock (with
        what each short line could have), CurrencyMismatch, EmptyCart or CartClosed."""

        def decide(commit: Commit, cart: Cart) -> PricedCart:
            cart.check_checkout(cart.lines)
            items = {sku: self._item(commit, sku) for sku in sorted(cart.lines)}
            lines = [PricedLine.of(items[sku], quantity) for sku, quantity in cart.lines.items()]
            lines.sort(key=lambda line: line.sku)
            priced = PricedCart(cart, lines, lines[0].currency if lines else None)
            place_hold(cart, priced, items, hold_id, held_until, cause)
            return priced

        return self._with_items(cart_id, lambda cart: sorted(cart.lines), decide)

    def release_hold(self, cart_id: UUID, hold_id: str, reason: str, cause: str) -> Cart:
        """Ends the hold without an order (nothing to do for one already ended)."""

        def decide(commit: Commit, cart: Cart) -> Cart:
            items = [self._item(commit, sku) for sku in skus_held(cart, hold_id)]
            release_hold(cart, hold_id, items, reason, cause)
            return cart

        return self._with_items(cart_id, lambda cart: skus_held(cart, hold_id), decide)

    def _with_items(
        self,
        cart_id: UUID,
        skus: Callable[[Cart], list[str]],
        decide: Callable[[Commit, Cart], T],
        also_locked: tuple[UUID, ...] = (),
    ) -> T:
        """Runs `decide` on the cart and the items of the `skus` it names, holding the cart's
        lock (and `also_locked`'s), then those items' locks, and saves what it changed."""

        def attempt() -> T:
            commit = Commit(self)
            cart = commit.get(Cart, cart_id, UnknownCart(cart_id))
            with self.locks.held(inventory_item_id(sku) for sku in skus(cart)):
                result = decide(commit, cart)
                changed = commit.changed()
                if changed:
                    self.save(*changed)
            return result

        return self._decide([cart_id, *also_locked], attempt)

    @staticmethod
    def _item(commit: Commit, sku: str) -> InventoryItem:
        return commit.get(InventoryItem, inventory_item_id(sku), UnknownProduct(sku))
