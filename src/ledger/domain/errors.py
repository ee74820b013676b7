"""Rules the aggregates refuse to break, as exceptions the edges translate for people."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class DomainError(Exception):
    """A command the domain refuses. `code` is the contract's snake_case error code."""

    code = "domain_error"


class UnknownProduct(DomainError):
    code = "unknown_product"

    def __init__(self, sku: str) -> None:
        super().__init__(f"There is no product with SKU {sku!r}.")
        self.sku = sku


class UnknownCart(DomainError):
    code = "unknown_cart"

    def __init__(self, cart_id: object) -> None:
        super().__init__(f"There is no cart {cart_id}.")


class InvalidProduct(DomainError):
    code = "invalid_product"


class InvalidQuantity(DomainError):
    code = "invalid_quantity"


class InsufficientStock(DomainError):
    code = "insufficient_stock"

    def __init__(self, sku: str, requested: int, on_hand: int) -> None:
        """`on_hand`: what could be taken, on hand less what is held for paying customers."""
        super().__init__(
            f"Only {on_hand} of {sku} on hand and not held for a paying customer;"
            f" {requested} were asked for."
        )
        self.sku = sku
        self.requested = requested
        self.on_hand = on_hand


class CartClosed(DomainError):
    code = "cart_closed"

    def __init__(self) -> None:
        super().__init__("This cart has already become an order and can no longer change.")


class EmptyCart(DomainError):
    code = "empty_cart"

    def __init__(self) -> None:
        super().__init__("The cart has no items to check out.")


class CurrencyMismatch(DomainError):
    code = "currency_mismatch"

    def __init__(
        self, cart_currency: str, product_currency: str, message: str | None = None
    ) -> None:
        super().__init__(
            message
            or f"This cart is priced in {cart_currency.upper()}; "
            f"a product priced in {product_currency.upper()} cannot join it."
        )
        self.cart_currency = cart_currency
        self.product_currency = product_currency

    @classmethod
    def within(cls, skus_by_currency: Mapping[str, Sequence[str]]) -> CurrencyMismatch:
        """A cart whose products no longer share one currency (one changed while in the cart)."""
        currencies = sorted(skus_by_currency)
        listed = "; ".join(f"{c.upper()}: {_some(skus_by_currency[c])}" for c in currencies)
        return cls(
            currencies[0],
            currencies[-1],
            f"The products in this cart are no longer priced in one currency ({listed}). "
            "Remove the items priced in one of them, then check out again.",
        )


class TooManyLines(DomainError):
    code = "too_many_lines"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"A cart holds at most {limit} different products; "
            "remove one before adding another, or check out in two orders."
        )
        self.limit = limit


class UnknownCheckoutSession(DomainError):
    code = "unknown_checkout_session"

    def __init__(self, session_id: str) -> None:
        super().__init__(f"Checkout session {session_id} was not started by this cart.")
        self.session_id = session_id


class UnknownOrder(DomainError):
    code = "unknown_order"

    def __init__(self, order_id: object) -> None:
        super().__init__(f"There is no order {order_id}.")


class InvalidRefund(DomainError):
    """A refund naming what the order does not hold (a sku not among its lines)."""

    code = "invalid_refund"


class RefundExceedsRemaining(DomainError):
    code = "refund_exceeds_remaining"


class OrderNotCancellable(DomainError):
    code = "order_not_cancellable"

    def __init__(self, order_id: object, status: str) -> None:
        super().__init__(f"Order {order_id} is {status}: it cannot be cancelled.")


class OrderNotRefundable(RefundExceedsRemaining):
    """A refund of an order that was never placed, or whose payment is not captured (yet):
    nothing of it remains to refund."""

    def __init__(self, order_id: object, status: str) -> None:
        super().__init__(f"Order {order_id} is {status}: none of its payment can be refunded.")


class InvalidTransition(DomainError):
    code = "invalid_transition"


def _some(skus: Sequence[str], shown: int = 3) -> str:
    """A few SKUs by name: a message stays a sentence even for a hundred lines."""
    names = ", ".join(skus[:shown])
    return names if len(skus) <= shown else f"{names} and {len(skus) - shown} more"
