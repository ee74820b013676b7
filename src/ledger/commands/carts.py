"""Cart commands: opening a cart, setting its lines, pricing it, recording a checkout session."""

from __future__ import annotations

from uuid import UUID, uuid4

from eventsourcing.persistence import IntegrityError

from ledger.commands.catalog import CatalogCommands
from ledger.domain import Cart, InventoryItem, inventory_item_id
from ledger.domain.errors import UnknownCart, UnknownProduct
from ledger.domain.pricing import PricedCart, PricedLine


class CartCommands(CatalogCommands):
    def create_cart(self, user_id: str | None, cause: str, cart_id: UUID | None = None) -> Cart:
        """Opens a cart. With `cart_id`, chosen by the caller before it asks, asking again
        opens nothing more: a request repeated after a commit left in doubt (a failover) finds
        the cart its first attempt opened."""
        # `_create` is the library's constructor that takes the aggregate's id; its event class
        # is made at run time from the decorated `__init__`, unseen by the type checker.
        created = Cart.CartCreated  # type: ignore[attr-defined]
        cart = Cart._create(created, id=cart_id or uuid4(), user_id=user_id, cause=cause)
        try:
            self.save(cart)
        except IntegrityError:
            opened = self._find(Cart, cart.id) if cart_id is not None else None
            if opened is None or opened.user_id != user_id:
                raise
            return opened
        return cart

    def get_cart(self, cart_id: UUID) -> Cart:
        cart = self._find(Cart, cart_id)
        if cart is None:
            raise UnknownCart(cart_id)
        return cart

    def set_cart_line(self, cart_id: UUID, sku: str, quantity: int, cause: str) -> Cart:
        def decide() -> Cart:
            cart = self.get_cart(cart_id)
            product = self.get_product(sku)
            others = None
            if quantity and cart.has_other_lines(sku):
                others = self._bulk.read_many(
                    InventoryItem,
                    [inventory_item_id(s) for s in cart.lines if s != sku],
                    lambda item: item.currency,
                ).values()
            cart.set_line(sku, quantity, cause, product.currency, others)
            self.save(cart)
            return cart

        return self._decide([cart_id], decide)

    def price(self, cart: Cart) -> PricedCart:
        ids = {sku: inventory_item_id(sku) for sku in sorted(cart.lines)}
        priced = self._bulk.read_many(
            InventoryItem, ids.values(), lambda i: PricedLine.of(i, cart.lines[i.sku])
        )
        lines = []
        for sku, item_id in ids.items():
            line = priced.get(item_id)
            if line is None:
                raise UnknownProduct(sku)
            lines.append(line)
        return PricedCart(cart, lines, lines[0].currency if lines else None)

    def start_checkout(
        self, priced: PricedCart, session_id: str, cause: str, hold_id: str | None = None
    ) -> Cart:
        """Records that a checkout session was created for exactly this priced cart (on the
        stock `hold_id` holds for it, when that hold has not ended meanwhile)."""
        currency = priced.currency
        assert currency is not None

        def decide() -> Cart:
            cart = self.get_cart(priced.cart.id)
            cart.start_checkout(
                session_id, priced.snapshot(), priced.amount_total, currency, cause, hold_id
            )
            self.save(cart)
            return cart

        return self._decide([priced.cart.id], decide)
