"""`ledger audit ...`: the auditors' commands, for people without HTTP access."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ledger.storage import Database
    from projections.audit.invariants import Balance
    from projections.audit.replay import Replay

# Progress lines on stderr at most this often (seconds).
PROGRESS_EVERY = 2.0


def add_audit_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        "report", help="per currency: payments, orders, refunds, disputes; what needs a person"
    )
    report_cmd.add_argument("--from", dest="start", type=_time, help="ISO-8601 time (UTC if bare)")
    report_cmd.add_argument("--to", dest="end", type=_time, help="ISO-8601 time (UTC if bare)")
    report_cmd.add_argument("--json", action="store_true", help="JSON instead of a table")
    report_cmd.set_defaults(handler=report)


def verify(args: argparse.Namespace) -> int:
    from projections.audit.invariants import CHECKS, balances, verify_ledger

    database = _database()
    started = time.monotonic()
    replay = _replay(database)
    verification = verify_ledger(database, replay, _say)
    seconds = time.monotonic() - started
    rate = replay.events / seconds if seconds else 0.0
    print(
        f"ledger audit verify: {replay.events:,} events up to position {replay.head:,},"
        f" checked in {seconds:.1f} s ({rate:,.0f} events/s)"
    )
    print()
    print(f"{'check':<36} result")
    for check in CHECKS:
        failed = verification.failed(check)
        print(f"{check:<36} {'VIOLATED (' + str(len(failed)) + ')' if failed else 'ok'}")
    paid = balances(list(replay.orders.values()))
    if paid:
        print()
        _balance_table(paid)
    if verification.violations:
        print()
        for violation in verification.violations:
            print(f"VIOLATION {violation}")
        return 1
    return 0


def report(args: argparse.Namespace) -> int:
    from projections.audit.report import build_report
    from projections.order_status import Payments
    from projections.store import ReadStore
    from web.cli import load_settings

    settings = load_settings()
    database = _database()
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
        print()
        print(f"{'currency':<9} {'disputes':>9} {'lost':>6} {'outside refunds':>22}")
        for currency, r in built.currencies.items():
            outside = f"{r.outside_refunds.count} / {r.outside_refunds.amount}"
            print(f"{currency:<9} {r.disputes:>9} {r.disputes_lost:>6} {outside:>22}")
    else:
        print("no payments in that period")
    print()
    print(f"refunds Stripe refused or failed (refund_failed): {len(built.refund_failed)}")
    for order in built.refund_failed:
        print(
            f"  order {order.order_id}  session {order.session_id}"
            f"  {order.amount} {order.currency}  {order.refund_failure}"
        )
    print(f"sessions without an outcome for over {threshold}: {len(built.waiting)}")
    for session_id, status, since in built.waiting:
        print(f"  {session_id}  {status} since {since.isoformat()}")
    return 0


def _balance_table(paid: dict[str, Balance]) -> None:
    header = ("payments", "orders", "refunds issued", "pending", "failed")
    print(f"{'currency':<9}" + "".join(f"{h:>22}" for h in header))
    for currency, b in paid.items():
        cells = (b.payments, b.orders, *(b.refunds[k] for k in ("issued", "pending", "failed")))
        print(f"{currency:<9}" + "".join(f"{f'{m.count} / {m.amount}':>22}" for m in cells))
    print("(count / amount in minor units)")


def _database() -> Database:
    from ledger.storage import resolve_database
    from web.cli import load_settings

    settings = load_settings()
    database = resolve_database(settings.database_url, settings.data_dir)
    database.check()
    return database


def _replay(database: Database) -> Replay:
    """The whole log, replayed in one pass in constant memory per record."""
    from projections.audit import records
    from projections.audit.replay import Replay

    last = time.monotonic()

    def progress(events: int, position: int) -> None:
        nonlocal last
        if time.monotonic() - last >= PROGRESS_EVERY:
            last = time.monotonic()
            _say(f"read {events:,} events (position {position:,})")

    with database.connect() as conn, conn.transaction():
        return Replay().read(records.stream(conn), progress)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _time(text: str) -> datetime:
    """An ISO-8601 time; one without a timezone is taken as UTC."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
