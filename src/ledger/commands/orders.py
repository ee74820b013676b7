"""Order commands: what became of each checkout session's payment.

The decision itself (order or refund) is `Order.fulfil`; here it is loaded, locked and saved,
and concurrent decisions are committed together (group commit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast
from uuid import UUID

from eventsourcing.utils import EnvType

from ledger.commands.holds import HoldCommands
from ledger.decisions import Commit
from ledger.domain import Cart, InventoryItem, Order, inventory_item_id, order_id_for
from ledger.domain.errors import DomainError, UnknownCart, UnknownOrder, UnknownProduct
from ledger.domain.holds import skus_held
from ledger.domain.order import PaidSession
from ledger.domain.vocabulary import HoldEnd, OrderStatus, SessionState
from ledger.group_commit import GroupCommit


@dataclass(frozen=True)
class _OrderRequest:
    paid: PaidSession
    cause: str


class OrderCommands(HoldCommands):
    def __init__(self, env: EnvType | None = None) -> None:
        super().__init__(env)
        self._order_desk: GroupCommit[_OrderRequest, Order] = GroupCommit(self._decide_orders)

    def place_order(self, paid: PaidSession, cause: str) -> Order:
        """The decision for a paid session (`Order.fulfil`), saved in one commit with
        everything it touches: the order, the stock of every line and the cart. Idempotent: a
        session already decided returns the recorded order unchanged.

        Concurrent calls are decided together (group commit): the orders waiting for the same
        product take its locks, read it and commit once per batch, not once each.
        """
        return self._order_desk.submit(_OrderRequest(paid, cause))

    def place_orders(self, paid: Sequence[PaidSession], cause: str) -> list[Order]:
        """`place_order` for several sessions, decided in turn and saved in one commit (each
        decision stays whole: it commits with the others or not at all). The orders are
        returned in the order of `paid`; the first refusal raises."""
        outcomes = self._decide_orders([_OrderRequest(p, cause) for p in paid])
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return cast(list[Order], outcomes)

    def _decide_orders(self, requests: Sequence[_OrderRequest]) -> list[Order | BaseException]:
        """Decides the requests in one commit; when one of them is refused (a domain error),
        decides each alone instead, so that only the refused one fails.

        Locks are taken in two steps, always in this order: the sessions' carts and orders,
        then the items their sessions' lines name (known only once the carts are read).
        """
        sessions = {r.paid.cart_id for r in requests}
        sessions |= {order_id_for(r.paid.session_id) for r in requests}

        def decide() -> list[Order | BaseException]:
            commit = Commit(self)
            carts = [
                commit.get(Cart, r.paid.cart_id, UnknownCart(r.paid.cart_id)) for r in requests
            ]
            items = {
                inventory_item_id(line["sku"])
                for r, cart in zip(requests, carts, strict=True)
                for line in cart.session(r.paid.session_id)["lines"]
            }
            with self.locks.held(items):
                orders = [self._decide_order(r.paid, commit, r.cause) for r in requests]
                changed = commit.changed()
                # The commit is dropped once saved: only the orders go back to the callers.
                returned = {id(order) for order in orders}
                self.save(*changed, handed_over=[a for a in changed if id(a) not in returned])
            return list(orders)

        try:
            return self._decide(sessions, decide)
        except DomainError as refusal:
            if len(requests) == 1:
                return [refusal]
        return [self._decide_orders([r])[0] for r in requests]

    def _decide_order(self, paid: PaidSession, commit: Commit, cause: str) -> Order:
        # The cart is read first: whoever decided this session converted or reopened the
        # cart in the same commit as the order, so a decided session shows on the cart.
        cart = commit.get(Cart, paid.cart_id, UnknownCart(paid.cart_id))
        session = cart.session(paid.session_id)
        # A session's order is opened in the same commit that moves the session on from
        # `processing`, so a session still processing has none: no need to look for it.
        order = None
        if session["state"] != SessionState.PROCESSING:
            order = commit.find(Order, order_id_for(paid.session_id))
        if order is not None and order.is_decided:
            return order
        if order is None:
            order = commit.add(
                Order.open(paid.session_id, cart, paid.payment_intent, paid.customer, cause)
            )
        # Read each item once: the check and the reservation must see the same version,
        # so a concurrent change surfaces as a version conflict and we decide again.
        items = [
            commit.get(InventoryItem, inventory_item_id(line["sku"]), UnknownProduct(line["sku"]))
            for line in order.lines
        ]
        order.fulfil(paid, cart, items, cause)
        return order

    def record_awaiting_payment(
        self,
        session_id: str,
        cart_id: UUID,
        payment_intent: str | None,
        cause: str,
        customer: dict[str, str] | None = None,
    ) -> Order:
        """A completed session whose (delayed) payment has not cleared yet: no stock taken."""

        def decide() -> Order:
            cart = self.get_cart(cart_id)
            order = self._find(Order, order_id_for(session_id))
            if order is not None:
                return order
            order = Order.open(session_id, cart, payment_intent, customer, cause)
            order.await_payment(cause)
            cart.record_awaiting_payment(session_id, cause)
            self.save(order, cart)
            return order

        return self._decide([cart_id, order_id_for(session_id)], decide)

    def record_payment_failed(
        self, session_id: str, cart_id: UUID, cause: str, customer: dict[str, str] | None = None
    ) -> Order:
        """The delayed payment failed: the order ends unpaid, the session's hold ends and the
        cart reopens."""
        order_id = order_id_for(session_id)

        def decide(commit: Commit, cart: Cart) -> Order:
            order = commit.find(Order, order_id)
            if order is not None and (
                order.is_decided or order.status == OrderStatus.PAYMENT_FAILED
            ):
                return order
            if order is None:
                order = commit.add(Order.open(session_id, cart, None, customer, cause))
            order.fail_payment(cause)
            cart.record_payment_failed(session_id, cause)
            self._end_hold(commit, cart, session_id, HoldEnd.PAYMENT_FAILED, cause)
            return order

        return self._with_items(cart_id, self._hold_skus(session_id), decide, (order_id,))

    def record_expired(
        self, session_id: str, cart_id: UUID, cause: str, reason: HoldEnd = HoldEnd.EXPIRED
    ) -> Cart:
        """The session expired unpaid: its hold ends (`reason`: why it was expired) and the
        cart is open again. No order exists for it."""

        def decide(commit: Commit, cart: Cart) -> Cart:
            if cart.session(session_id)["state"] == SessionState.PROCESSING:
                cart.record_expired(session_id, cause)
                self._end_hold(commit, cart, session_id, reason, cause)
            return cart

        return self._with_items(cart_id, self._hold_skus(session_id), decide)

    def refuse_capture(self, order_id: UUID, code: str, cause: str) -> Order:
        """Stripe refused to capture the order's payment for good: the order's payment failed,
        its stock goes back and its cart reopens, in one commit (`Order.capture_refused`)."""
        order = self._find(Order, order_id)
        if order is None:
            raise UnknownOrder(order_id)
        skus = [line["sku"] for line in order.lines]

        def decide(commit: Commit, cart: Cart) -> Order:
            found = commit.get(Order, order_id, UnknownOrder(order_id))
            items = [self._item(commit, line["sku"]) for line in found.lines]
            found.capture_refused(code, cart, items, cause)
            return found

        return self._with_items(order.cart_id, lambda _: skus, decide, (order_id,))

    def _end_hold(
        self, commit: Commit, cart: Cart, session_id: str, reason: HoldEnd, cause: str
    ) -> None:
        hold_id = cart.hold_of(session_id)
        if hold_id is not None:
            self._release(commit, cart, hold_id, reason, cause)

    @staticmethod
    def _hold_skus(session_id: str) -> Callable[[Cart], list[str]]:
        """The skus a decision about the session may release the hold of."""

        def skus(cart: Cart) -> list[str]:
            hold_id = cart.hold_of(session_id) if session_id in cart.sessions else None
            return [] if hold_id is None else skus_held(cart, hold_id)

        return skus
