"""Rules the aggregates refuse to break, as exceptions the edges translate for people."""


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
        super().__init__(f"Only {on_hand} of {sku} on hand; {requested} were asked for.")
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

    def __init__(self, cart_currency: str, product_currency: str) -> None:
        super().__init__(
            f"This cart is priced in {cart_currency.upper()}; "
            f"a product priced in {product_currency.upper()} cannot join it."
        )


class UnknownCheckoutSession(DomainError):
    code = "unknown_checkout_session"

    def __init__(self, session_id: str) -> None:
        super().__init__(f"Checkout session {session_id} was not started by this cart.")
        self.session_id = session_id


class InvalidTransition(DomainError):
    code = "invalid_transition"
