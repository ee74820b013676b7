"""A shopper's cart and the checkout sessions started from it."""

from __future__ import annotations

from collections.abc import Collection, Sized
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.domain.errors import (
    CartClosed,
    CurrencyMismatch,
    EmptyCart,
    InvalidQuantity,
    InvalidTransition,
    TooManyLines,
    UnknownCheckoutSession,
)
from ledger.domain.vocabulary import SESSION_PAYABLE, SESSION_PENDING, CartStatus, SessionState

MAX_LINE_QUANTITY = 10_000
# Distinct products in one cart: Stripe Checkout takes at most this many line items.
MAX_LINES = 100


class Cart(Aggregate):
    STREAM = "cart"

    @event("CartCreated")
    def __init__(self, user_id: str | None, cause: str) -> None:
        self.user_id = user_id
        self.lines: dict[str, int] = {}
        # What the lines were priced in when last set, so that adding one need not read every
        # other product; None while empty, or when a line was set before carts recorded it.
        self.currency: str | None = None
        # Each checkout session started from the cart, by its Stripe id: what it was priced
        # at and what became of it, {"state": SessionState, "lines", "amount_total", "currency"}.
        self.sessions: dict[str, dict[str, Any]] = {}
        # Stock held for its checkouts (`LEDGER_STOCK_HOLD`), by hold id: what was priced and
        # held, until when, and the session started on it (None until Stripe made one).
        self.holds: dict[str, dict[str, Any]] = {}
        self.order_id: UUID | None = None

    @property
    def status(self) -> CartStatus:
        if self.order_id is not None:
            return CartStatus.CONVERTED
        if any(s["state"] in SESSION_PENDING for s in self.sessions.values()):
            return CartStatus.CHECKING_OUT
        return CartStatus.OPEN

    def set_line(
        self,
        sku: str,
        quantity: int,
        cause: str,
        currency: str | None = None,
        others: Collection[str] | None = None,
    ) -> None:
        """Sets how many of a SKU the cart holds; 0 removes the line.

        `currency` is the product's: a cart's lines share one. The currency the cart recorded
        stands for its other lines, unless the caller read their products' currencies now and
        passes them as `others` (it must when `has_other_lines`).
        """
        self._refuse_if_converted()
        if not 0 <= quantity <= MAX_LINE_QUANTITY:
            raise InvalidQuantity(f"Quantity must be between 0 and {MAX_LINE_QUANTITY}.")
        if quantity and sku not in self.lines and len(self.lines) >= MAX_LINES:
            raise TooManyLines(MAX_LINES)
        if quantity and currency is not None:
            if others is None:
                others = {self.currency} if self.currency and self.has_other_lines(sku) else set()
            foreign = sorted(set(others) - {currency})
            if foreign:
                raise CurrencyMismatch(foreign[0], currency)
        if self.lines.get(sku, 0) != quantity:
            self._line_set(sku=sku, quantity=quantity, currency=currency, cause=cause)

    def has_other_lines(self, sku: str) -> bool:
        """Whether the cart holds lines other than `sku`. Their products' currencies must then
        be read now and passed to `set_line` as `others`: what the cart recorded is the
        currency of the line set last, as it was then, and any product's currency may have
        changed since (a line in USD whose product is now in EUR must refuse another in USD)."""
        return len(self.lines) > (sku in self.lines)

    class CartLineSet(Aggregate.Event):
        sku: str
        quantity: int
        currency: str | None
        cause: str

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            # Recorded before lines carried their product's currency: unknown, so the cart's
            # next line asks the products.
            state["currency"] = None

    @event(CartLineSet)
    def _line_set(self, sku: str, quantity: int, currency: str | None, cause: str) -> None:
        if quantity:
            self.lines[sku] = quantity
            self.currency = currency
        else:
            self.lines.pop(sku, None)
            if not self.lines:
                self.currency = None

    def place_hold(
        self,
        hold_id: str,
        lines: list[dict[str, Any]],
        amount_total: int,
        currency: str,
        held_until: str,
        cause: str,
    ) -> None:
        """Records stock held for a checkout of these lines as priced (the items record the
        units held, in the same commit), before Stripe is asked for its session."""
        self.check_checkout(lines)
        self._hold_placed(
            hold_id=hold_id,
            lines=lines,
            amount_total=amount_total,
            currency=currency,
            held_until=held_until,
            cause=cause,
        )

    @event("HoldPlaced")
    def _hold_placed(
        self,
        hold_id: str,
        lines: list[dict[str, Any]],
        amount_total: int,
        currency: str,
        held_until: str,
        cause: str,
    ) -> None:
        self.holds[hold_id] = {
            "lines": lines,
            "amount_total": amount_total,
            "currency": currency,
            "held_until": held_until,
            "session_id": None,
        }

    def release_hold(self, hold_id: str, reason: str, cause: str) -> None:
        """The hold ended without an order (the items release its units in the same commit)."""
        if hold_id in self.holds:
            self._hold_released(hold_id=hold_id, reason=reason, cause=cause)

    @event("HoldReleased")
    def _hold_released(self, hold_id: str, reason: str, cause: str) -> None:
        del self.holds[hold_id]

    def hold_of(self, session_id: str) -> str | None:
        """The live hold of the session's stock, if it has one."""
        hold_id = self.session(session_id).get("hold_id")
        return hold_id if hold_id in self.holds else None

    @property
    def held_until(self) -> str | None:
        """Until when the cart's stock is held for its newest checkout (ISO-8601 UTC)."""
        return max((h["held_until"] for h in self.holds.values()), default=None)

    def start_checkout(
        self,
        session_id: str,
        lines: list[dict[str, Any]],
        amount_total: int,
        currency: str,
        cause: str,
        hold_id: str | None = None,
    ) -> None:
        """Records a Stripe checkout session and exactly what it was priced at (once), on the
        stock held for it, if any."""
        if session_id in self.sessions:
            return
        self.check_checkout(lines)
        hold = self.holds.get(hold_id or "")
        self._checkout_started(
            session_id=session_id,
            lines=lines,
            amount_total=amount_total,
            currency=currency,
            hold_id=hold_id if hold is not None else None,
            held_until=None if hold is None else hold["held_until"],
            cause=cause,
        )

    def check_checkout(self, lines: Sized) -> None:
        """Refuses a checkout of these lines that start_checkout would refuse: called before
        Stripe is asked for a session too."""
        self._refuse_if_converted()
        if not lines:
            raise EmptyCart()
        # Carts filled before the limit existed may hold more: Stripe would refuse them.
        if len(lines) > MAX_LINES:
            raise TooManyLines(MAX_LINES)

    class CheckoutStarted(Aggregate.Event):
        session_id: str
        lines: list[dict[str, Any]]
        amount_total: int
        currency: str
        hold_id: str | None
        held_until: str | None
        cause: str

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["hold_id"] = state["held_until"] = None  # recorded before holds existed

    @event(CheckoutStarted)
    def _checkout_started(
        self,
        session_id: str,
        lines: list[dict[str, Any]],
        amount_total: int,
        currency: str,
        hold_id: str | None,
        held_until: str | None,
        cause: str,
    ) -> None:
        self.sessions[session_id] = {
            "state": SessionState.PROCESSING,
            "lines": lines,
            "amount_total": amount_total,
            "currency": currency,
            "hold_id": hold_id,
        }
        if hold_id is not None:
            self.holds[hold_id]["session_id"] = session_id

    def session(self, session_id: str) -> dict[str, Any]:
        """What the cart recorded of that session: priced when it started, and its state."""
        try:
            return self.sessions[session_id]
        except KeyError:
            raise UnknownCheckoutSession(session_id) from None

    def record_awaiting_payment(self, session_id: str, cause: str) -> None:
        self._move(session_id, SessionState.AWAITING_PAYMENT, {SessionState.PROCESSING})
        self._awaiting_payment(session_id=session_id, cause=cause)

    @event("CheckoutAwaitingPayment")
    def _awaiting_payment(self, session_id: str, cause: str) -> None:
        self.sessions[session_id]["state"] = SessionState.AWAITING_PAYMENT

    def record_payment_failed(self, session_id: str, cause: str) -> None:
        self._move(session_id, SessionState.PAYMENT_FAILED, SESSION_PENDING)
        self._payment_failed(session_id=session_id, cause=cause)

    @event("CheckoutPaymentFailed")
    def _payment_failed(self, session_id: str, cause: str) -> None:
        self.sessions[session_id]["state"] = SessionState.PAYMENT_FAILED

    def record_expired(self, session_id: str, cause: str) -> None:
        self._move(session_id, SessionState.EXPIRED, {SessionState.PROCESSING})
        self._expired(session_id=session_id, cause=cause)

    @event("CheckoutExpired")
    def _expired(self, session_id: str, cause: str) -> None:
        self.sessions[session_id]["state"] = SessionState.EXPIRED

    def record_rejected(self, session_id: str, order_id: UUID, reason: str, cause: str) -> None:
        """A paid session that will not become the order: its money goes back."""
        self._move(session_id, SessionState.REJECTED, SESSION_PAYABLE)
        self._rejected(session_id=session_id, order_id=order_id, reason=reason, cause=cause)

    @event("CheckoutRejected")
    def _rejected(self, session_id: str, order_id: UUID, reason: str, cause: str) -> None:
        self.sessions[session_id]["state"] = SessionState.REJECTED

    def convert(self, session_id: str, order_id: UUID, cause: str) -> None:
        """The paid session became the order; the cart is closed for good."""
        self._refuse_if_converted()
        self._move(session_id, SessionState.CONVERTED, SESSION_PAYABLE)
        self._converted(session_id=session_id, order_id=order_id, cause=cause)

    @event("CartConverted")
    def _converted(self, session_id: str, order_id: UUID, cause: str) -> None:
        self.sessions[session_id]["state"] = SessionState.CONVERTED
        self.order_id = order_id
        # The session's hold, if it had one, became the order's stock.
        self.holds.pop(self.sessions[session_id].get("hold_id") or "", None)

    def reopen(self, session_id: str, order_id: UUID, reason: str, cause: str) -> None:
        """The cart's order failed after all (Stripe refused to capture its payment): the cart
        is open again, and that session counts as a failed payment."""
        if self.order_id != order_id:
            return
        self._reopened(session_id=session_id, order_id=order_id, reason=reason, cause=cause)

    @event("CartReopened")
    def _reopened(self, session_id: str, order_id: UUID, reason: str, cause: str) -> None:
        self.sessions[session_id]["state"] = SessionState.PAYMENT_FAILED
        self.order_id = None

    def _move(
        self, session_id: str, target: SessionState, allowed_from: Collection[SessionState]
    ) -> None:
        state = self.session(session_id)["state"]
        if state not in allowed_from:
            raise InvalidTransition(f"Checkout {session_id} is {state}; it cannot become {target}.")

    def _refuse_if_converted(self) -> None:
        if self.order_id is not None:
            raise CartClosed()
