"""The ledger's invariants, checked against a replay of the whole log (`ledger audit verify`):

- stock on hand never below zero, at any point in history;
- stock held for open checkouts never above what is on hand, at any point (taken stock has
  left on hand already, so this is "held + taken never exceeds what was on hand");
- each hold placed once and ended once (released, or taken by its own cart's order);
- each paid checkout session ends in exactly one outcome: one order (stock taken once for each
  of its lines, its cart converted once), or one refund owed, or (manual capture) one
  authorization released;
- per currency, in Stripe's amounts: payments captured = orders kept + refunds (issued,
  pending or failed); authorizations = captured + released + capture failed + awaiting capture;
- each authorization captured or released once (a cancel before the capture releases it), and
  a capture Stripe refused returns the order's stock, each line once;
- per order, its refunds that have not failed (the merchant's, those made in Stripe's Dashboard
  and its own refund when rejected) never add up to more than was captured;
- per order and product, stock put back (StockReturned for the order) never above what the
  order took (its StockReserved of that product);
- every read model equals what a fresh replay of the log produces.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from ledger.domain.vocabulary import RefundStatus
from ledger.storage import Database
from projections.audit.chain import HashChainProjection
from projections.audit.facts import OrderFacts
from projections.audit.replay import Replay
from projections.read_models import default_projections
from projections.verification import verify_all

STOCK = "stock never below zero"
HELD = "held + taken never above on hand"
HOLDS = "each hold placed and ended once"
ONE_OUTCOME = "one outcome per paid session"
BALANCE = "payments = orders + refunds"
AUTHORIZATIONS = "authorized = captured + released + failed + awaiting"
CAPTURE = "one capture or release per authorization"
RETURNED = "a failed capture returns its stock"
REFUNDED = "refunds never above what was captured"
RESTOCKED = "restocks never above what the order took"
READ_MODELS = "read models equal a fresh replay"
CHECKS = (
    STOCK,
    HELD,
    HOLDS,
    ONE_OUTCOME,
    BALANCE,
    AUTHORIZATIONS,
    CAPTURE,
    RETURNED,
    REFUNDED,
    RESTOCKED,
    READ_MODELS,
)
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
    """One currency's payments, and where each went (the invariant's two sides); and its
    authorizations (manual capture), and where each went (the other invariant's sides)."""

    payments: Money = field(default_factory=Money)  # money captured: charges and captures
    orders: Money = field(default_factory=Money)  # kept by orders
    refunds: dict[RefundStatus, Money] = field(
        default_factory=lambda: {state: Money() for state in RefundStatus}
    )
    authorizations: Money = field(default_factory=Money)
    captured: Money = field(default_factory=Money)
    released: Money = field(default_factory=Money)  # cancelled by the ledger: never charged
    capture_failed: Money = field(default_factory=Money)  # Stripe refused the capture
    awaiting_capture: Money = field(default_factory=Money)

    @property
    def accounted(self) -> Money:
        total = self.orders
        for part in self.refunds.values():
            total = total + part
        return total

    @property
    def authorizations_accounted(self) -> Money:
        return self.captured + self.released + self.capture_failed + self.awaiting_capture


def refund_state(order: OrderFacts) -> RefundStatus:
    """Where the order's refund stands; pending until Stripe reports otherwise."""
    return order.refund or RefundStatus.PENDING


def balances(orders: list[OrderFacts]) -> dict[str, Balance]:
    """Per currency: each paid order counted once as a payment, and each outcome the log
    records counted where it went. A session with two outcomes shows as a difference."""
    by_currency: dict[str, Balance] = defaultdict(Balance)
    for order in orders:
        account(order, by_currency)
    return dict(sorted(by_currency.items()))


def account(order: OrderFacts, by_currency: dict[str, Balance]) -> None:
    """Counts one order into `by_currency` (a defaultdict(Balance)): `balances`, one order at
    a time, for a verification that keeps no order once its events are read."""
    if not (order.confirmed or order.rejected):
        return  # not paid (awaiting payment, or the payment failed)
    balance = by_currency[order.currency]
    if order.authorized:
        _authorization(order, balance, by_currency)
        return
    one = Money(1, order.amount)
    balance.payments = balance.payments + one
    for _ in order.confirmed:
        balance.orders = balance.orders + one
    for _ in order.rejected:
        state = refund_state(order)
        balance.refunds[state] = balance.refunds[state] + one


def _authorization(order: OrderFacts, balance: Balance, by_currency: dict[str, Balance]) -> None:
    """A manual-capture order: one authorization, and each thing the log says became of it
    counted where it went (counted per event, so that two captures, or a capture and a
    release, show as a difference). Money is taken only by a capture: then it is a payment,
    kept by the order (once per confirmation, as for a charge)."""
    one = Money(1, order.amount)  # as Stripe authorized it
    balance.authorizations = balance.authorizations + one
    if not order.release_failed:  # else it was captured after all (counted below)
        for _ in order.release_requested:
            balance.released = balance.released + one
        # Cancelled before its capture: released instead (`awaiting_capture` is false then).
        for _ in (c for c in order.cancellations if c.release):
            balance.released = balance.released + one
    for _ in order.capture_failed:
        balance.capture_failed = balance.capture_failed + one
    if order.awaiting_capture:
        balance.awaiting_capture = balance.awaiting_capture + one
    for _, amount, currency in order.captures:
        taken = Money(1, amount)
        # As Stripe captured it: a capture in another currency is counted there, and the
        # authorization's currency shows the difference.
        captured_in = by_currency[currency]
        balance.captured = balance.captured + taken
        captured_in.payments = captured_in.payments + taken
    if order.captures:
        _, amount, currency = order.captures[0]
        kept_in = by_currency[currency]
        for _ in order.confirmed:
            kept_in.orders = kept_in.orders + Money(1, amount)
        if order.release_failed:  # captured for an order that was not served: owed back
            state = refund_state(order)
            for _ in order.rejected:
                kept_in.refunds[state] = kept_in.refunds[state] + Money(1, amount)


def check_replay(replay: Replay) -> list[Violation]:
    """The invariants that the log alone decides."""
    found = [
        Violation(STOCK, (position,), f"{sku}: {on_hand} on hand")
        for position, sku, on_hand in replay.negative_stock
    ]
    found += [
        Violation(HELD, (o.position,), f"{o.sku}: {o.held} held, {o.on_hand} on hand")
        for o in replay.over_held
    ]
    found += [
        Violation(HOLDS, (p.position,), f"{p.sku}: {p.message}") for p in replay.hold_problems
    ]
    for order in replay.orders.values():
        found.extend(order_violations(order))
    failed_to_capture = {o.order_id for o in replay.orders.values() if o.capture_failed}
    found += reopen_violations(replay.reopened, failed_to_capture)
    for cart_id, positions in replay.conversions.items():
        if len(positions) > 1:
            found.append(conversion_violation(cart_id, positions))
    found += stray_violations(replay.strays)
    found += balance_violations(balances(list(replay.orders.values())))
    return found


def order_violations(order: OrderFacts) -> list[Violation]:
    """The checks of one order, on its facts alone."""
    found = _outcome_violations(order)
    if order.authorized or order.captures or order.capture_failed or order.released:
        found.extend(_capture_violations(order))
    if order.capture_failed or order.returned:
        found.extend(_return_violations(order))
    found.extend(_refund_violations(order))
    found.extend(_restock_violations(order))
    return found


def reopen_violations(
    reopened: list[tuple[int, str, str]], failed_to_capture: set[str]
) -> list[Violation]:
    """A cart is reopened only for its order whose capture failed (`failed_to_capture`)."""
    return [
        Violation(
            RETURNED,
            (position,),
            f"cart {cart_id} reopened, but its order {order_id} never failed to capture",
        )
        for position, cart_id, order_id in reopened
        if order_id not in failed_to_capture
    ]


def conversion_violation(cart_id: str, positions: list[int]) -> Violation:
    return Violation(ONE_OUTCOME, tuple(positions), f"cart {cart_id} converted more than once")


def stray_violations(strays: list[tuple[int, str]]) -> list[Violation]:
    return [
        Violation(ONE_OUTCOME, (position,), f"an event about order {order_id}, never placed")
        for position, order_id in strays
    ]


def balance_violations(paid: dict[str, Balance]) -> list[Violation]:
    """Per currency, both sides of the balance and of the authorizations agree."""
    found = []
    for currency, balance in paid.items():
        if balance.payments != balance.accounted:
            found.append(
                Violation(
                    BALANCE,
                    (),
                    f"{currency}: {balance.payments.count} payments of {balance.payments.amount}"
                    f" but {balance.accounted.count} outcomes of {balance.accounted.amount}",
                )
            )
        accounted = balance.authorizations_accounted
        if balance.authorizations != accounted:
            found.append(
                Violation(
                    AUTHORIZATIONS,
                    (),
                    f"{currency}: {balance.authorizations.count} authorizations of"
                    f" {balance.authorizations.amount} but {accounted.count} captured, released,"
                    f" failed or awaiting, of {accounted.amount}",
                )
            )
    return found


def _capture_violations(order: OrderFacts) -> list[Violation]:
    """A manual-capture order's authorization: its capture or its release requested once (with
    the decision it goes with), captured or refused at most once, only once requested, and
    captured as authorized."""
    found = []
    about = f"order {order.order_id} (session {order.session_id})"
    captures = [p for p, _, _ in order.captures]

    def violation(positions: list[int], message: str) -> None:
        found.append(Violation(CAPTURE, tuple(sorted(positions)), f"{about}: {message}"))

    # A cancel before the capture asks for the release too, but as the merchant's decision
    # after the order was placed (its capture requested): not a second decision of the payment.
    asked_release = bool(order.release_requested) or order.cancel_released
    decided = order.capture_requested + order.release_requested
    if len(decided) > 1:
        violation(decided, "capture or release requested more than once")
    if order.capture_requested and not order.confirmed:
        violation(order.capture_requested, "capture requested, never confirmed")
    if order.release_requested and not order.rejected:
        violation(order.release_requested, "release requested, never rejected")
    if order.release_requested and order.refund_positions and not order.release_failed:
        violation(order.refund_positions, "a refund of an authorization that was released")
    if order.release_failed and not asked_release:
        violation(order.release_failed, "release refused, never asked for")
    outcomes = captures + order.capture_failed
    # A release Stripe refused because the payment was captured elsewhere records that
    # capture: the one capture that is not requested.
    captured_elsewhere = bool(order.release_failed) and not order.capture_failed
    if outcomes and not order.capture_requested and not captured_elsewhere:
        violation(outcomes, "captured or refused, never requested")
    if len(outcomes) > 1:
        violation(outcomes, f"{len(captures)} captures, {len(order.capture_failed)} refused")
    for position, amount, currency in order.captures:
        if order.authorization is not None and (amount, currency) != order.authorization:
            authorized, authorized_in = order.authorization
            violation([position], f"captured {amount} {currency} of {authorized} {authorized_in}")
    if order.released and not (asked_release or order.capture_failed):
        violation(order.released, "authorization released, never asked to be")
    return found


def _return_violations(order: OrderFacts) -> list[Violation]:
    """A capture Stripe refused gives back the order's stock: each line once, as taken;
    stock comes back for no other order."""
    about = f"order {order.order_id} (session {order.session_id})"
    returned = sorted(p for positions in order.returned.values() for p, _ in positions)
    if not order.capture_failed:
        return [
            Violation(RETURNED, tuple(returned), f"{about}: stock returned, capture never failed")
        ]
    found = []
    for sku, quantity in order.lines.items():
        back = order.returned.get(sku, [])
        if [q for _, q in back] != [quantity]:
            where = tuple(p for p, _ in back) or (order.capture_failed[0],)
            found.append(
                Violation(
                    RETURNED,
                    where,
                    f"{about}: {sku} ({quantity} taken) returned as {[q for _, q in back]}",
                )
            )
    for sku in sorted(order.returned.keys() - order.lines.keys()):
        found.append(
            Violation(
                RETURNED,
                tuple(p for p, _ in order.returned[sku]),
                f"{about}: {sku} returned, not a line of the order",
            )
        )
    return found


def captured(order: OrderFacts) -> int:
    """What Stripe holds of the order's payment, all a refund may give back: a charge as
    charged; an authorization only once captured (its captures: a second one is the capture
    check's to report); nothing for a payment never taken."""
    if order.captures:
        return sum(amount for _, amount, _ in order.captures)
    if order.authorized or not (order.confirmed or order.rejected):
        return 0
    return order.amount


def _refund_violations(order: OrderFacts) -> list[Violation]:
    """The order's refunds that have not failed, in the order they were asked for, never
    add up to more than was captured: the first one that goes over is named. Their last
    status counts (a refund Stripe failed later gave nothing back), so a refund asked for
    while another was on its way, and refused by Stripe since, is no violation."""
    refunds: list[tuple[int, str, int]] = [
        (r.position, f"merchant refund {r.refund_id}", r.amount)
        for r in order.merchant_refunds.values()
        if r.status != RefundStatus.FAILED
    ]
    refunds += [
        (order.outside_refunded_at[refund_id], f"refund {refund_id} made outside", amount)
        for refund_id, (status, amount) in order.outside_refunds.items()
        if RefundStatus.of(status) != RefundStatus.FAILED
    ]
    if order.rejected and order.refund_positions and refund_state(order) != RefundStatus.FAILED:
        # Its own refund (owed when rejected): all of the payment, as charged or captured.
        refunds.append((order.refund_positions[0], "its own refund", order.amount))
    if not refunds:
        return []
    limit, total = captured(order), 0
    about = f"order {order.order_id} (session {order.session_id})"
    for position, what, amount in sorted(refunds):
        total += amount
        if total > limit:
            return [
                Violation(
                    REFUNDED,
                    (position,),
                    f"{about}: {what} of {amount} brings its refunds to {total}"
                    f" {order.currency}, {limit} captured",
                )
            ]
    return []


def _restock_violations(order: OrderFacts) -> list[Violation]:
    """Per product, what came back for the order (the merchant's restocks and a failed
    capture's return, together) never exceeds what the order took: the first StockReturned
    that goes over is named."""
    found = []
    about = f"order {order.order_id} (session {order.session_id})"
    for sku in sorted(order.restocked.keys() | order.returned.keys()):
        back = sorted(order.restocked.get(sku, []) + order.returned.get(sku, []))
        took, total = order.taken.get(sku, 0), 0
        for position, quantity in back:
            total += quantity
            if total > took:
                found.append(
                    Violation(
                        RESTOCKED,
                        (position,),
                        f"{about}: {sku} back {total}, {took} taken",
                    )
                )
                break
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
