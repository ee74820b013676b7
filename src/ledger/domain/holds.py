"""Stock held for a checkout (`LEDGER_STOCK_HOLD`): placed and released on the cart and on the
inventory items of its lines together, so that the two always agree. The caller saves them in
one commit. (A hold taken by an order ends in `Order.fulfil`.)"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ledger.domain.cart import Cart
from ledger.domain.inventory import InventoryItem
from ledger.domain.pricing import PricedCart


def place_hold(
    cart: Cart,
    priced: PricedCart,
    items: Mapping[str, InventoryItem],
    hold_id: str,
    held_until: str,
    cause: str,
) -> None:
    """Holds the priced cart's quantities until `held_until`, or refuses with OutOfStock
    (what each short line could have) when others hold or took too much. `items` are the
    lines' items by sku, read in this commit, so that the check and the hold see one version."""
    priced.require_stock()
    currency = priced.checkout_currency()
    cart.place_hold(hold_id, priced.snapshot(), priced.amount_total, currency, held_until, cause)
    for line in priced.lines:
        items[line.sku].hold(hold_id, cart.id, line.quantity, held_until, cause)


def release_hold(
    cart: Cart, hold_id: str, items: Iterable[InventoryItem], reason: str, cause: str
) -> None:
    """Ends the hold without an order: its units are available again. `items` are the
    hold's lines' items (others are left alone); a hold already ended changes nothing."""
    if hold_id not in cart.holds:
        return
    for item in items:
        item.release(hold_id, reason, cause)
    cart.release_hold(hold_id, reason, cause)


def skus_held(cart: Cart, hold_id: str) -> list[str]:
    """The skus of the hold's lines (none for a hold already ended)."""
    return [line["sku"] for line in cart.holds.get(hold_id, {}).get("lines", [])]
