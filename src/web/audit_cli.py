"""`ledger audit ...`: the auditors' commands, for people without HTTP access.

Here the ones that replay the whole log and check it (verify, report, digest); the reads of the
log as recorded (history, stock, export) are in `web.audit_log_cli`.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING

from ledger.domain.vocabulary import RefundStatus
from web.audit_log_cli import add_read_commands
from web.command_line import PROGRESS_EVERY, Subcommands, load_settings, open_database, say

if TYPE_CHECKING:
    from ledger.storage import Database
    from projections.audit.invariants import Balance, Money
    from projections.audit.replay import Replay
    from projections.audit.report import CurrencyReport, RefundsByStatus


def add_audit_commands(commands: Subcommands) -> None:
    audit = commands.add_parser("audit", help="read, replay and verify the event log")
    actions = audit.add_subparsers(dest="action", required=True)
    verify_cmd = actions.add_parser(
        "verify", help="replay the whole log and check the ledger's invariants"
    )
    verify_cmd.add_argument(
        "--digest", help="POSITION:HASH from `ledger audit digest`: prove the log up to there"
    )
    verify_cmd.set_defaults(handler=verify)
    report_cmd = actions.add_parser(
        "report",
        help="per currency: payments, orders, refunds, disputes, authorizations (manual"
        " capture); what needs a person",
    )
    report_cmd.add_argument(
        "--from", dest="start", type=_instant, help="ISO-8601 time (UTC if bare)"
    )
    report_cmd.add_argument("--to", dest="end", type=_instant, help="ISO-8601 time (UTC if bare)")
    report_cmd.add_argument("--json", action="store_true", help="JSON instead of a table")
    report_cmd.set_defaults(handler=report)
    add_read_commands(actions)
    _add_digest_command(actions)


# How long `ledger audit digest` waits for the hash chain to link what is already recorded.
DIGEST_WAIT_SECONDS = 10.0


def _add_digest_command(actions: Subcommands) -> None:
    actions.add_parser(
        "digest", help="print the hash chain's head, POSITION:HASH, to keep outside the database"
    ).set_defaults(handler=digest)


def digest(args: argparse.Namespace) -> int:
    from projections.audit.chain import chain_head, wait_for_chain
    from projections.audit.links import format_digest

    database = open_database()
    behind = wait_for_chain(database, DIGEST_WAIT_SECONDS)
    head = chain_head(database)
    if head is None:
        say(
            "ledger audit digest: there is no hash chain yet"
            + (
                f" ({behind:,} events wait for it): run the workers (`ledger serve` or"
                " `ledger work`), which build it"
                if behind
                else ": the log is empty"
            )
        )
        return 2
    if behind:
        say(
            f"ledger audit digest: {behind:,} events recorded after this head are not linked"
            " yet (are the workers running?)"
        )
    # The last word is the digest itself, for scripts: `... | awk '{print $NF}'`.
    print(f"hash chain head: {format_digest(head)}")
    return 0


def verify(args: argparse.Namespace) -> int:
    from projections.audit.chain_verification import verify_chain
    from projections.audit.invariants import CHAIN, CHECKS
    from projections.audit.links import parse_digest
    from projections.audit.streamed import verify_streamed

    digest = parse_digest(args.digest) if args.digest else None
    database = open_database()
    started = time.monotonic()
    # The hash chain is recomputed on a thread of its own meanwhile: its reads and hashing
    # fill the time the replays spend waiting for the server (each check is the same).
    with ThreadPoolExecutor(1, thread_name_prefix="hash-chain") as pool:
        chain_checked = pool.submit(verify_chain, database, digest, say)
        # Memory bounded by one order however long the log (see projections.audit.streamed).
        verification = verify_streamed(database, say)
        say("recomputing the hash chain")
        chain = chain_checked.result()
    seconds = time.monotonic() - started
    rate = verification.events / seconds if seconds else 0.0
    print(
        f"ledger audit verify: {verification.events:,} events up to position"
        f" {verification.head:,},"
        f" checked in {seconds:.1f} s ({rate:,.0f} events/s)"
    )
    print()
    width = max(36, *(len(check) + 1 for check in CHECKS))
    print(f"{'check':<{width}} result")
    for check in CHECKS:
        failed = verification.failed(check)
        print(f"{check:<{width}} {'VIOLATED (' + str(len(failed)) + ')' if failed else 'ok'}")
    print(f"{CHAIN:<{width}} {'ok' if chain.ok else 'VIOLATED'} ({chain.summary()})")
    paid = verification.balances
    if paid:
        print()
        _balance_table(paid)
        _authorization_table(paid)
    if verification.violations or not chain.ok:
        print()
        for violation in verification.violations:
            print(f"VIOLATION {violation}")
        for line in chain.lines():
            print(f"VIOLATION {CHAIN}: {line}")
        return 1
    return 0


def report(args: argparse.Namespace) -> int:
    from projections.audit.report import build_report
    from projections.payments import Payments
    from projections.store import ReadStore

    settings = load_settings()
    database = open_database(settings)
    replay = _replay(database)
    store = ReadStore(database, min_size=1, max_size=1)
    try:
        waiting = Payments(store).sessions_waiting(settings.resync_after, 1000)
    finally:
        store.close()
    threshold = f"{settings.resync_after.total_seconds():.0f}s"
    built = build_report(replay, args.start, args.end, waiting, threshold)
    if args.json:
        print(json.dumps(built.as_json(), indent=2))
        return 0
    span = f"{args.start.isoformat() if args.start else 'the beginning'} to "
    span += args.end.isoformat() if args.end else "now"
    print(f"ledger audit report: payments decided from {span}")
    print()
    if built.currencies:
        _balance_table({c: r.balance for c, r in built.currencies.items()})
        _authorization_table({c: r.balance for c, r in built.currencies.items()})
        print()
        print(f"{'currency':<9} {'disputes':>9} {'lost':>6} {'outside refunds':>22}")
        for currency, r in built.currencies.items():
            outside = f"{r.outside_refunds.count} / {r.outside_refunds.amount}"
            print(f"{currency:<9} {r.disputes:>9} {r.disputes_lost:>6} {outside:>22}")
        _after_sale_lines(built.currencies)
    else:
        print("no payments in that period")
    print()
    print(f"refunds Stripe refused or failed (refund_failed): {len(built.refund_failed)}")
    for order in built.refund_failed:
        print(
            f"  order {order.order_id}  session {order.session_id}"
            f"  {order.amount} {order.currency}  {order.refund_failure}"
        )
    failed = built.merchant_refunds_failed
    print(f"merchant refunds Stripe refused or failed: {len(failed)}")
    for f in failed:
        print(
            f"  order {f.order.order_id}  refund {f.refund.refund_id}"
            f"  {f.refund.amount} {f.refund.currency}  {f.refund.code}"
        )
    print(f"captures Stripe refused (capture_failed): {len(built.capture_failed)}")
    for order in built.capture_failed:
        print(
            f"  order {order.order_id}  session {order.session_id}"
            f"  {order.amount} {order.currency}  {order.capture_failure}"
        )
    print(f"sessions without an outcome for over {threshold}: {len(built.waiting)}")
    for session_id, status, since in built.waiting:
        print(f"  {session_id}  {status} since {since.isoformat()}")
    return 0


def _balance_table(paid: dict[str, Balance]) -> None:
    header = ("payments", "orders", "refunds issued", "pending", "failed")
    print(f"{'currency':<9}" + "".join(f"{h:>22}" for h in header))
    for currency, b in paid.items():
        refunds = (RefundStatus.SUCCEEDED, RefundStatus.PENDING, RefundStatus.FAILED)
        cells = (b.payments, b.orders, *(b.refunds[state] for state in refunds))
        print(f"{currency:<9}" + "".join(f"{f'{m.count} / {m.amount}':>22}" for m in cells))
    print("(count / amount in minor units)")


def _authorization_table(paid: dict[str, Balance]) -> None:
    """Manual capture's figures, only when some payment was an authorization (a shop that
    captures automatically sees what it always saw), one line per currency written as the
    invariant reads. Not a table row like the balance table's: scripts read those by their
    currency and width."""
    authorized = {c: b for c, b in paid.items() if b.authorizations.count or b.captured.count}
    if not authorized:
        return
    print()
    print("manual capture (count / amount in minor units, as Stripe authorized and captured them)")
    for currency, b in authorized.items():
        parts = (
            ("captured", b.captured),
            ("released", b.released),
            ("capture failed", b.capture_failed),
            ("awaiting capture", b.awaiting_capture),
        )
        print(
            f"{currency}: authorizations {_figure(b.authorizations)} = "
            + " + ".join(f"{name} {_figure(m)}" for name, m in parts)
        )


def _after_sale_lines(currencies: dict[str, CurrencyReport]) -> None:
    """The merchant's refunds and cancellations, per currency, only when there are some (a
    shop that never refunds sees what it always saw): a line of totals by status, a line per
    reason, then the cancellations."""
    after_sale = {
        c: r for c, r in currencies.items() if r.merchant_refunds.total.count or r.cancellations
    }
    if not after_sale:
        return
    print()
    print("after the sale (count / amount in minor units; refunds as Stripe last reported them)")
    for currency, r in after_sale.items():
        print(f"{currency}: merchant refunds {_by_status(r.merchant_refunds)}")
        for reason, refunds in sorted(r.refund_reasons.items()):
            print(f"  reason {reason!r}: {_by_status(refunds)}")
        print(
            f"{currency}: cancellations {r.cancellations}"
            f" ({r.cancellations_released} released an authorization instead of a refund)"
        )


def _by_status(refunds: RefundsByStatus) -> str:
    states = (RefundStatus.SUCCEEDED, RefundStatus.PENDING, RefundStatus.FAILED)
    parts = ", ".join(f"{state} {_figure(refunds.by_status[state])}" for state in states)
    return f"{_figure(refunds.total)} ({parts})"


def _figure(money: Money) -> str:
    return f"{money.count} / {money.amount}"


def _replay(database: Database) -> Replay:
    """The whole log, replayed in one pass in constant memory per record."""
    from projections.audit import records
    from projections.audit.replay import Replay

    last = time.monotonic()

    def progress(events: int, position: int) -> None:
        nonlocal last
        if time.monotonic() - last >= PROGRESS_EVERY:
            last = time.monotonic()
            say(f"read {events:,} events (position {position:,})")

    with database.connect() as conn, conn.transaction():
        return Replay().read(records.stream(conn, binary=True), progress)


def _instant(text: str) -> datetime:
    from projections.audit.stock import parse_instant

    try:
        return parse_instant(text)
    except ValueError as error:  # argparse says what was wrong, not only that it was
        raise argparse.ArgumentTypeError(str(error)) from None
