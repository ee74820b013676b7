"""The application service: the ledger's commands, each one decision saved in one commit."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence
from copy import deepcopy
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    IntegrityError,
    Recording,
)
from eventsourcing.utils import EnvType

from ledger.bulk_reads import BulkReader
from ledger.domain import Cart, InventoryItem, Order, inventory_item_id, order_id_for
from ledger.domain.cart import CONVERTED, SESSION_PROCESSING
from ledger.domain.errors import (
    CurrencyMismatch,
    DomainError,
    EmptyCart,
    UnknownCart,
    UnknownOrder,
    UnknownProduct,
)
from ledger.domain.order import PAYMENT_FAILED, REFUND_FAILED, REFUND_PENDING, REFUNDED
from ledger.group_commit import GroupCommit
from ledger.locks import AggregateLocks, ConcurrentModification
from ledger.payments import Dispute, Refund
from ledger.storage import LedgerPostgresFactory

T = TypeVar("T")
A = TypeVar("A")

# Writers take turns (see ledger.locks), so a version conflict means a writer without the
# locks changed one of our aggregates between our read and our save. Deciding again on fresh
# state is always safe; the bound keeps a pathological race from spinning forever (it then
# surfaces as a retryable failure).
MAX_ATTEMPTS = 10


@dataclass(frozen=True)
class PricedLine:
    sku: str
    name: str
    quantity: int
    unit_amount: int
    on_hand: int  # as read when the cart was priced
    currency: str


@dataclass(frozen=True)
class PricedCart:
    """A cart's lines at today's prices."""

    cart: Cart
    lines: list[PricedLine]
    currency: str | None

    @property
    def amount_total(self) -> int:
        return sum(line.unit_amount * line.quantity for line in self.lines)

    def snapshot(self) -> list[dict[str, Any]]:
        return [
            {"sku": x.sku, "name": x.name, "quantity": x.quantity, "unit_amount": x.unit_amount}
            for x in self.lines
        ]

    def checkout_currency(self) -> str:
        """The one currency the lines are priced in now, which the cart is charged in.

        A product's currency may change while it sits in a cart: a cart whose products no
        longer share one is refused rather than charged in whichever comes first.
        """
        skus_by_currency: dict[str, list[str]] = {}
        for line in self.lines:
            skus_by_currency.setdefault(line.currency, []).append(line.sku)
        if not skus_by_currency:
            raise EmptyCart()
        if len(skus_by_currency) > 1:
            raise CurrencyMismatch.within(skus_by_currency)
        return next(iter(skus_by_currency))

    def shortages(self) -> list[Shortage]:
        """Lines the stock on hand (when priced) cannot cover."""
        return [
            Shortage(x.sku, x.quantity, x.on_hand) for x in self.lines if x.quantity > x.on_hand
        ]


@dataclass(frozen=True)
class Shortage:
    sku: str
    requested: int
    available: int


@dataclass(frozen=True)
class _OrderRequest:
    paid: PaidCheckout
    cause: str


@dataclass(frozen=True)
class Recorded:
    """An order after a decision on news from Stripe, and the names of the events that
    decision recorded (none when the news changed nothing)."""

    order: Order
    events: tuple[str, ...]


@dataclass(frozen=True)
class PaidCheckout:
    """What Stripe says a checkout session charged, as the order decision needs it."""

    session_id: str
    cart_id: UUID
    amount_total: int
    currency: str
    payment_intent: str | None
    # Who paid, sealed (ledger.personal_data): recorded on the order, never in clear.
    customer: dict[str, str] | None = None


class Ledger(Application[UUID]):
    """Commands over the cart, inventory and order aggregates.

    Every command is read -> decide -> one `save()` of every aggregate the decision touches,
    while holding the locks of those aggregates, so writers of one aggregate queue instead of
    racing. A decision costs the same on a product's 40,000th order as on its first: recently
    used aggregates stay in memory and are brought up to date from the log (only the events
    since), and an inventory item is snapshotted every SNAPSHOT_INTERVAL events, so even a
    cold read replays at most that many.
    """

    name = "Ledger"
    env: ClassVar[dict[str, str]] = {"AGGREGATE_CACHE_MAXSIZE": "2000"}
    SNAPSHOT_INTERVAL = 100
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {InventoryItem: SNAPSHOT_INTERVAL}

    def __init__(self, env: EnvType | None = None) -> None:
        super().__init__(env)
        factory = self.factory
        self.locks = AggregateLocks(
            factory.lock_pool if isinstance(factory, LedgerPostgresFactory) else None
        )
        self._bulk = BulkReader(self)
        self._order_desk: GroupCommit[_OrderRequest, Order] = GroupCommit(self._decide_orders)
        # Decisions decided again after a version conflict: the safety net at work, which
        # should stay near zero while every writer takes its locks.
        self.version_conflicts = 0

    def close(self) -> None:
        self.locks.close()
        super().close()

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        recordings = super().save(*objs, **kwargs)
        # What was just saved is each aggregate's latest version (its writer holds its lock):
        # cached, the next read fast-forwards from it instead of decoding what we just wrote.
        # (The library caches on save only when it does not fast-forward.) A copy, so that
        # what the caller holds and what the cache brings up to date stay apart.
        cache = self.repository.cache
        if cache is not None:
            for obj in objs:
                if isinstance(obj, Aggregate):
                    cache.put(obj.id, deepcopy(obj))
        return recordings

    # ---- catalog and stock -------------------------------------------------------------

    def put_product(
        self, sku: str, name: str, unit_amount: int, currency: str, cause: str
    ) -> tuple[InventoryItem, bool]:
        """Lists a product or changes its details. Returns the item and whether it was new."""

        def decide() -> tuple[InventoryItem, bool]:
            item = self._find(InventoryItem, inventory_item_id(sku))
            if item is None:
                item = InventoryItem.new(sku, name, unit_amount, currency, cause)
                self.save(item)
                return item, True
            if item.change_details(name, unit_amount, currency, cause):
                self.save(item)
            return item, False

        return self._decide([inventory_item_id(sku)], decide)

    def adjust_stock(
        self, sku: str, quantity: int, reason: str | None, cause: str
    ) -> InventoryItem:
        def decide() -> InventoryItem:
            item = self.get_product(sku)
            item.adjust_stock(quantity, reason, cause)
            self.save(item)
            return item

        return self._decide([inventory_item_id(sku)], decide)

    def get_product(self, sku: str) -> InventoryItem:
        item = self._find(InventoryItem, inventory_item_id(sku))
        if item is None:
            raise UnknownProduct(sku)
        return item

    # ---- carts -------------------------------------------------------------------------

    def create_cart(self, user_id: str | None, cause: str) -> Cart:
        cart = Cart(user_id=user_id, cause=cause)
        self.save(cart)
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
            InventoryItem,
            ids.values(),
            lambda i: PricedLine(
                i.sku, i.name, cart.lines[i.sku], i.unit_amount, i.on_hand, i.currency
            ),
        )
        lines = []
        for sku, item_id in ids.items():
            line = priced.get(item_id)
            if line is None:
                raise UnknownProduct(sku)
            lines.append(line)
        return PricedCart(cart, lines, lines[0].currency if lines else None)

    def start_checkout(self, priced: PricedCart, session_id: str, cause: str) -> Cart:
        """Records that a checkout session was created for exactly this priced cart."""
        currency = priced.currency
        assert currency is not None

        def decide() -> Cart:
            cart = self.get_cart(priced.cart.id)
            cart.start_checkout(session_id, priced.snapshot(), priced.amount_total, currency, cause)
            self.save(cart)
            return cart

        return self._decide([priced.cart.id], decide)

    # ---- orders ------------------------------------------------------------------------

    def place_order(self, paid: PaidCheckout, cause: str) -> Order:
        """The decision for a paid session, saved in one commit with everything it touches.

        Either the order is confirmed, stock is reserved for every line and the cart is
        converted, or (stock gone, cart already converted, amount not what was priced) the
        order is rejected with a refund requested and the cart reopens. Idempotent: a session
        already decided returns the recorded order unchanged.

        Concurrent calls are decided together (group commit): the orders waiting for the same
        product take its locks, read it and commit once per batch, not once each.
        """
        return self._order_desk.submit(_OrderRequest(paid, cause))

    def place_orders(self, paid: Sequence[PaidCheckout], cause: str) -> list[Order]:
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
        then the items their snapshots name (known only once the carts are read).
        """
        sessions = {r.paid.cart_id for r in requests}
        sessions |= {order_id_for(r.paid.session_id) for r in requests}

        def decide() -> list[Order | BaseException]:
            commit = _Commit(self)
            carts = [
                commit.get(Cart, r.paid.cart_id, UnknownCart(r.paid.cart_id)) for r in requests
            ]
            items = {
                inventory_item_id(line["sku"])
                for r, cart in zip(requests, carts, strict=True)
                for line in cart.checkout(r.paid.session_id)["lines"]
            }
            with self.locks.held(items):
                orders = [self._decide_order(r.paid, commit, r.cause) for r in requests]
                self.save(*commit.changed())
            return list(orders)

        try:
            return self._decide(sessions, decide)
        except DomainError as refusal:
            if len(requests) == 1:
                return [refusal]
        return [self._decide_orders([r])[0] for r in requests]

    def _decide_order(self, paid: PaidCheckout, commit: _Commit, cause: str) -> Order:
        # The cart is read first: whoever decided this session converted or reopened the
        # cart in the same commit as the order, so a decided session shows on the cart.
        cart = commit.get(Cart, paid.cart_id, UnknownCart(paid.cart_id))
        snapshot = cart.checkout(paid.session_id)
        # A session's order is opened in the same commit that moves the session on from
        # `processing`, so a session still processing has none: no need to look for it.
        order = None
        if snapshot["state"] != SESSION_PROCESSING:
            order = commit.find(Order, order_id_for(paid.session_id))
        if order is not None and order.is_decided:
            return order
        if order is None:
            order = commit.add(
                self._open_order(paid.session_id, cart, paid.payment_intent, paid.customer, cause)
            )
        # Read each item once: the check and the reservation must see the same version,
        # so a concurrent change surfaces as a version conflict and we decide again.
        items = [
            commit.get(InventoryItem, inventory_item_id(line["sku"]), UnknownProduct(line["sku"]))
            for line in snapshot["lines"]
        ]
        reason = _rejection_reason(paid, cart, snapshot, items)
        if reason is not None:
            order.reject(reason, paid.payment_intent, cause)
            cart.record_rejected(paid.session_id, order.id, reason, cause)
            return order
        order.confirm_payment(paid.payment_intent, cause)
        for item, line in zip(items, snapshot["lines"], strict=True):
            item.reserve(order.id, line["quantity"], cause)
        cart.convert(paid.session_id, order.id, cause)
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
            order = self._open_order(session_id, cart, payment_intent, customer, cause)
            order.await_payment(cause)
            cart.record_awaiting_payment(session_id, cause)
            self.save(order, cart)
            return order

        return self._decide([cart_id, order_id_for(session_id)], decide)

    def record_payment_failed(
        self, session_id: str, cart_id: UUID, cause: str, customer: dict[str, str] | None = None
    ) -> Order:
        """The delayed payment failed: the order ends unpaid and the cart reopens."""

        def decide() -> Order:
            cart = self.get_cart(cart_id)
            order = self._find(Order, order_id_for(session_id))
            if order is not None and (order.is_decided or order.status == PAYMENT_FAILED):
                return order
            if order is None:
                order = self._open_order(session_id, cart, None, customer, cause)
            order.fail_payment(cause)
            cart.record_payment_failed(session_id, cause)
            self.save(order, cart)
            return order

        return self._decide([cart_id, order_id_for(session_id)], decide)

    def record_expired(self, session_id: str, cart_id: UUID, cause: str) -> Cart:
        """The session expired unpaid: the cart is open again. No order exists for it."""

        def decide() -> Cart:
            cart = self.get_cart(cart_id)
            if cart.checkout(session_id)["state"] == SESSION_PROCESSING:
                cart.record_expired(session_id, cause)
                self.save(cart)
            return cart

        return self._decide([cart_id], decide)

    def record_refund(
        self, order_id: UUID, refund: Refund, cause: str, *, adopt: bool = False
    ) -> Recorded:
        """Records what Stripe says of a refund of the order's payment. The order's own refund
        (asked for by the ledger, or `adopt`ed: the one found when Stripe says the charge is
        refunded already, or one a person made for an order whose refund failed) moves the
        order on; any other is recorded as a refund made outside the ledger."""

        def decide() -> Recorded:
            order = self._require_order(order_id)
            if self._is_order_refund(order, refund, adopt):
                order.follow_refund(
                    refund.refund_id, refund.status, refund.amount, refund.failure_reason, cause
                )
            else:
                order.note_outside_refund(
                    refund.refund_id, refund.status, refund.amount, refund.currency, cause
                )
            return self._save_news(order)

        return self._decide([order_id], decide)

    def refuse_refund(self, order_id: UUID, code: str, cause: str) -> Recorded:
        """Stripe refused the order's refund for good (`code` is Stripe's error code)."""

        def decide() -> Recorded:
            order = self._require_order(order_id)
            if order.status == REFUND_PENDING and order.refund_id is None:
                order.refuse_refund(code, cause)
            return self._save_news(order)

        return self._decide([order_id], decide)

    def record_dispute(self, order_id: UUID, dispute: Dispute, cause: str) -> Recorded:
        def decide() -> Recorded:
            order = self._require_order(order_id)
            order.note_dispute(
                dispute.dispute_id,
                dispute.status,
                dispute.amount,
                dispute.currency,
                dispute.reason,
                cause,
            )
            return self._save_news(order)

        return self._decide([order_id], decide)

    def _save_news(self, order: Order) -> Recorded:
        """Saves what a piece of Stripe's news changed, and says what that was: the same news
        again (a redelivery, a webhook and a worker at once) records and reports nothing."""
        events = tuple(type(e).__name__ for e in order.pending_events)
        if events:
            self.save(order)
        return Recorded(order, events)

    @staticmethod
    def _is_order_refund(order: Order, refund: Refund, adopt: bool) -> bool:
        if order.status not in (REFUND_PENDING, REFUNDED, REFUND_FAILED):
            return False  # a confirmed order owes nothing back: any refund came from outside
        if refund.refund_id == order.refund_id or refund.order_id == str(order.id):
            return True
        if order.status == REFUND_FAILED:
            return refund.succeeded  # a person refunded it by hand: the money is back
        return adopt and order.refund_id is None

    def get_order(self, order_id: UUID) -> Order | None:
        return self._find(Order, order_id)

    def _require_order(self, order_id: UUID) -> Order:
        order = self._find(Order, order_id)
        if order is None:
            raise UnknownOrder(order_id)
        return order

    # ---- helpers -----------------------------------------------------------------------

    def _open_order(
        self,
        session_id: str,
        cart: Cart,
        payment_intent: str | None,
        customer: dict[str, str] | None,
        cause: str,
    ) -> Order:
        snapshot = cart.checkout(session_id)
        return Order(
            checkout_session_id=session_id,
            cart_id=cart.id,
            lines=snapshot["lines"],
            amount_total=snapshot["amount_total"],
            currency=snapshot["currency"],
            payment_intent=payment_intent,
            cause=cause,
            customer=customer,
        )

    def _find(self, kind: type[A], aggregate_id: UUID) -> A | None:
        try:
            aggregate: object = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        if not isinstance(aggregate, kind):
            return None
        return aggregate

    def _decide(self, aggregate_ids: Iterable[UUID], decide: Callable[[], T]) -> T:
        """Runs `decide` (read, decide, save) holding the locks of the aggregates it writes."""
        with self.locks.held(aggregate_ids):
            return self._retrying(decide)

    def _retrying(self, decide: Callable[[], T]) -> T:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return decide()
            except IntegrityError:
                self.version_conflicts += 1
                if attempt == MAX_ATTEMPTS:
                    break
                # Full jitter keeps racing writers from colliding again in lockstep.
                time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
        raise ConcurrentModification("The records kept changing; please retry.")


class _Commit:
    """The aggregates one commit reads and changes, each read once, so that several decisions
    in one commit see each other's changes."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.aggregates: dict[UUID, Any] = {}

    def find(self, kind: type[A], aggregate_id: UUID) -> A | None:
        if aggregate_id not in self.aggregates:
            self.aggregates[aggregate_id] = self.ledger._find(kind, aggregate_id)
        found = self.aggregates[aggregate_id]
        return found if isinstance(found, kind) else None

    def get(self, kind: type[A], aggregate_id: UUID, missing: DomainError) -> A:
        found = self.find(kind, aggregate_id)
        if found is None:
            raise missing
        return found

    def add(self, aggregate: A) -> A:
        assert isinstance(aggregate, Aggregate)
        self.aggregates[aggregate.id] = aggregate
        return aggregate

    def changed(self) -> list[Aggregate]:
        """What the commit changed, orders first: the log then reads as the decision does
        (the order placed, the stock it took, its cart converted)."""
        changed = [a for a in self.aggregates.values() if a is not None and a.pending_events]
        return sorted(changed, key=lambda a: _SAVE_ORDER.get(type(a), len(_SAVE_ORDER)))


_SAVE_ORDER: dict[type[Aggregate], int] = {Order: 0, InventoryItem: 1, Cart: 2}


def _rejection_reason(
    paid: PaidCheckout, cart: Cart, snapshot: dict[str, Any], items: list[InventoryItem]
) -> str | None:
    """Why a paid session cannot become an order, or None when it can."""
    if (paid.amount_total, paid.currency) != (snapshot["amount_total"], snapshot["currency"]):
        return "amount_mismatch"
    if cart.status == CONVERTED:
        return "cart_already_converted"
    for item, line in zip(items, snapshot["lines"], strict=True):
        if not item.can_supply(line["quantity"]):
            return "out_of_stock"
    return None


__all__ = [
    "ConcurrentModification",
    "DomainError",
    "Ledger",
    "PaidCheckout",
    "PricedCart",
    "PricedLine",
    "Recorded",
    "Shortage",
]
