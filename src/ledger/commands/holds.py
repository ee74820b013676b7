"""Hold commands (`LEDGER_STOCK_HOLD`): stock held for a checkout in the commit that checks it,
and released when the checkout ends without an order.

Locks are taken in two steps, carts before items, as every command that writes both does.
Checkouts of a hot product all wait for its item: like orders, concurrent holds are decided
together, many to a commit (group commit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar
from uuid import UUID

from eventsourcing.utils import EnvType

from ledger.commands.carts import CartCommands
from ledger.decisions import Commit
from ledger.domain import Cart, InventoryItem, inventory_item_id
from ledger.domain.errors import DomainError, UnknownCart, UnknownProduct
from ledger.domain.holds import place_hold, release_hold, skus_held
from ledger.domain.pricing import PricedCart, PricedLine
from ledger.group_commit import Decided, GroupCommit

T = TypeVar("T")


@dataclass(frozen=True)
class _HoldRequest:
    cart_id: UUID
    hold_id: str
    held_until: str
    cause: str


class HoldCommands(CartCommands):
    def __init__(self, env: EnvType | None = None) -> None:
        super().__init__(env)
        self._hold_desk: GroupCommit[_HoldRequest, PricedCart] = GroupCommit(self._decide_holds)

    def hold_stock(self, cart_id: UUID, hold_id: str, held_until: str, cause: str) -> PricedCart:
        """Prices the cart and holds its quantities until `held_until`, in one commit with the
        stock check, so two checkouts can never hold the same unit. Raises OutOfStock (with
        what each short line could have), CurrencyMismatch, EmptyCart or CartClosed."""
        return self._hold_desk.submit(_HoldRequest(cart_id, hold_id, held_until, cause))

    def _decide_holds(self, requests: Sequence[_HoldRequest]) -> list[Decided[PricedCart]]:
        """Decides the requests in turn and saves them in one commit. A refusal changes
        nothing (each is refused before anything is recorded), so it is that request's
        outcome and the others are saved."""

        def decide() -> list[Decided[PricedCart]]:
            commit = Commit(self)
            skus = set()
            for r in requests:
                cart = commit.find(Cart, r.cart_id)
                skus |= set() if cart is None else set(cart.lines)
            with self.locks.held(inventory_item_id(sku) for sku in skus):
                outcomes = [self._hold(commit, r) for r in requests]
                changed = commit.changed()
                if changed:
                    self.save(*changed)
            return outcomes

        return self._decide({r.cart_id for r in requests}, decide)

    def _hold(self, commit: Commit, request: _HoldRequest) -> Decided[PricedCart]:
        try:
            cart = commit.get(Cart, request.cart_id, UnknownCart(request.cart_id))
            cart.check_checkout(cart.lines)
            items = {sku: self._item(commit, sku) for sku in cart.lines}
            lines = [PricedLine.of(items[sku], cart.lines[sku]) for sku in sorted(cart.lines)]
            priced = PricedCart(cart, lines, lines[0].currency)
            place_hold(cart, priced, items, request.hold_id, request.held_until, request.cause)
        except DomainError as refusal:
            return refusal
        return priced

    def release_hold(self, cart_id: UUID, hold_id: str, reason: str, cause: str) -> Cart:
        """Ends the hold without an order (nothing to do for one already ended)."""

        def decide(commit: Commit, cart: Cart) -> Cart:
            self._release(commit, cart, hold_id, reason, cause)
            return cart

        return self._with_items(cart_id, lambda cart: skus_held(cart, hold_id), decide)

    def _release(self, commit: Commit, cart: Cart, hold_id: str, reason: str, cause: str) -> None:
        """Releases the cart's hold and its items' units in `commit` (their locks held)."""
        items = [self._item(commit, sku) for sku in skus_held(cart, hold_id)]
        release_hold(cart, hold_id, items, reason, cause)

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
