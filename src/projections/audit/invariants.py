"""The ledger's invariants, checked against a replay of the whole log (`ledger audit verify`):

- stock on hand never below zero, at any point in history;
- each paid checkout session ends in exactly one outcome: one order (stock taken once for each
  of its lines, its cart converted once), or one refund owed;
- payments taken = orders confirmed + refunds (issued, pending or failed), per currency;
- every read model equals what a fresh replay of the log produces.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from ledger.domain.vocabulary import RefundStatus
from ledger.storage import Database
from projections.audit.chain import HashChainProjection
from projections.audit.replay import OrderFacts, Replay
from projections.read_models import default_projections
from projections.verification import verify_all

STOCK = "stock never below zero"
ONE_OUTCOME = "one outcome per paid session"
BALANCE = "payments = orders + refunds"
READ_MODELS = "read models equal a fresh replay"
CHECKS = (STOCK, ONE_OUTCOME, BALANCE, READ_MODELS)
CHAIN = "hash chain"  # checked by projections.audit.chain


@dataclass(frozen=True)
class Violation:
    check: str
    positions: tuple[int, ...]  # where in the log (empty when no single event is to blame)
    message: str

    def __str__(self) -> str:
        where = f" at position{'s' if len(self.positions) > 1 else ''} " if self.positions else ""
        return f"{self.check}{where}{', '.join(map(str, self.positions))}: {self.message}"


@dataclass(frozen=True)
class Money:
    count: int = 0
    amount: int = 0

    def __add__(self, other: Money) -> Money:
        return Money(self.count + other.count, self.amount + other.amount)


@dataclass
class Balance:
    """One currency's payments, and where each went (the invariant's two sides)."""

    payments: Money = field(default_factory=Money)
    orders: Money = field(default_factory=Money)
    refunds: dict[RefundStatus, Money] = field(
        default_factory=lambda: {state: Money() for state in RefundStatus}
    )

    @property
    def accounted(self) -> Money:
        total = self.orders
        for part in self.refunds.values():
            total = total + part
        return total


def refund_state(order: OrderFacts) -> RefundStatus:
    """Where the order's refund stands; pending until Stripe reports otherwise."""
    return order.refund or RefundStatus.PENDING


def balances(orders: list[OrderFacts]) -> dict[str, Balance]:
    """Per currency: each paid order counted once as a payment, and each outcome the log
    records counted where it went. A session with two outcomes shows as a difference."""
    by_currency: dict[str, Balance] = defaultdict(Balance)
    for order in orders:
        if not (order.confirmed or order.rejected):
            continue  # not paid (awaiting payment, or the payment failed)
        balance = by_currency[order.currency]
        one = Money(1, order.amount)
        balance.payments = balance.payments + one
        for _ in order.confirmed:
            balance.orders = balance.orders + one
        for _ in order.rejected:
            state = refund_state(order)
            balance.refunds[state] = balance.refunds[state] + one
    return dict(sorted(by_currency.items()))


def check_replay(replay: Replay) -> list[Violation]:
    """The invariants that the log alone decides."""
    found = [
        Violation(STOCK, (position,), f"{sku}: {on_hand} on hand")
        for position, sku, on_hand in replay.negative_stock
    ]
    for order in replay.orders.values():
        found.extend(_outcome_violations(order))
    for cart_id, positions in replay.conversions.items():
        if len(positions) > 1:
            found.append(
                Violation(ONE_OUTCOME, tuple(positions), f"cart {cart_id} converted more than once")
            )
    for position, order_id in replay.strays:
        found.append(
            Violation(ONE_OUTCOME, (position,), f"an event about order {order_id}, never placed")
        )
    for currency, balance in balances(list(replay.orders.values())).items():
        if balance.payments != balance.accounted:
            found.append(
                Violation(
                    BALANCE,
                    (),
                    f"{currency}: {balance.payments.count} payments of {balance.payments.amount}"
                    f" but {balance.accounted.count} outcomes of {balance.accounted.amount}",
                )
            )
    return found


def _outcome_violations(order: OrderFacts) -> list[Violation]:
    found = []
    about = f"order {order.order_id} (session {order.session_id})"
    outcomes = [p for p, _ in order.confirmed] + [p for p, _ in order.rejected]
    if len(outcomes) > 1:
        found.append(Violation(ONE_OUTCOME, tuple(sorted(outcomes)), f"{about}: two outcomes"))
    reserved = [p for positions in order.reserved.values() for p in positions]
    if order.confirmed:
        for sku in order.lines:
            taken = order.reserved.get(sku, [])
            if len(taken) != 1:
                where = tuple(taken) or (order.confirmed[0][0],)
                found.append(
                    Violation(ONE_OUTCOME, where, f"{about}: {sku} taken {len(taken)} times")
                )
    elif reserved:
        found.append(
            Violation(ONE_OUTCOME, tuple(reserved), f"{about}: stock taken, but not confirmed")
        )
    if order.refund_positions and not order.rejected:
        found.append(
            Violation(ONE_OUTCOME, tuple(order.refund_positions), f"{about}: a refund, never owed")
        )
    return found


def check_read_models(database: Database) -> list[Violation]:
    # The hash chain is checked link by link against the stored records (verify_chain),
    # which is stricter than a replay and does not need one.
    models = [p for p in default_projections() if not isinstance(p, HashChainProjection)]
    return [
        Violation(READ_MODELS, (), problem)
        for problems in verify_all(database, models).values()
        for problem in problems
    ]


@dataclass
class Verification:
    replay: Replay
    violations: list[Violation]

    def failed(self, check: str) -> list[Violation]:
        return [v for v in self.violations if v.check == check]


def verify_ledger(
    database: Database,
    replay: Replay,
    progress: Callable[[str], None] = lambda _: None,
) -> Verification:
    """Checks every invariant on a replay of the log (`replay`, already read) and the read
    models against a fresh replay of their own."""
    violations = check_replay(replay)
    progress("comparing the read models with a fresh replay")
    violations += check_read_models(database)
    return Verification(replay, violations)
