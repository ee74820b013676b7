"""`ledger audit ...`: the auditors' commands, for people without HTTP access."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

if TYPE_CHECKING:
    from collections.abc import Generator

    from ledger.storage import Database
    from projections.audit.invariants import Balance
    from projections.audit.replay import Replay
    from projections.store import ReadStore

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
    report_cmd.add_argument(
        "--from", dest="start", type=_instant, help="ISO-8601 time (UTC if bare)"
    )
    report_cmd.add_argument("--to", dest="end", type=_instant, help="ISO-8601 time (UTC if bare)")
    report_cmd.add_argument("--json", action="store_true", help="JSON instead of a table")
    report_cmd.set_defaults(handler=report)
    _add_read_commands(actions)
    _add_digest_command(actions)


# How long `ledger audit digest` waits for the hash chain to link what is already recorded.
DIGEST_WAIT_SECONDS = 10.0


def _add_digest_command(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    actions.add_parser(
        "digest", help="print the hash chain's head, POSITION:HASH, to keep outside the database"
    ).set_defaults(handler=digest)


def digest(args: argparse.Namespace) -> int:
    from projections.audit.chain import chain_head, format_digest, wait_for_chain

    database = _open_database()
    behind = wait_for_chain(database, DIGEST_WAIT_SECONDS)
    head = chain_head(database)
    if head is None:
        _say(
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
        _say(
            f"ledger audit digest: {behind:,} events recorded after this head are not linked"
            " yet (are the workers running?)"
        )
    # The last word is the digest itself, for scripts: `... | awk '{print $NF}'`.
    print(f"hash chain head: {format_digest(head)}")
    return 0


def verify(args: argparse.Namespace) -> int:
    from projections.audit.chain import parse_digest, verify_chain
    from projections.audit.invariants import CHAIN, CHECKS, balances, verify_ledger

    digest = parse_digest(args.digest) if args.digest else None
    database = _open_database()
    started = time.monotonic()
    replay = _replay(database)
    verification = verify_ledger(database, replay, _say)
    _say("recomputing the hash chain")
    chain = verify_chain(database, digest, _say)
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
    print(f"{CHAIN:<36} {'ok' if chain.ok else 'VIOLATED'} ({chain.summary()})")
    paid = balances(list(replay.orders.values()))
    if paid:
        print()
        _balance_table(paid)
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
    from projections.order_status import Payments
    from projections.store import ReadStore
    from web.cli import load_settings, open_database

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


def _open_database() -> Database:
    from web.cli import open_database  # web.cli imports this module

    return open_database()


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


# ---- history, stock, export: the log as recorded, read without replaying it ------------------

# An order's history waits at most this long for the order_history read model to catch up.
HISTORY_CATCH_UP_SECONDS = 600.0
# Events encoded and written to stdout per write (and flush).
EXPORT_CHUNK = 1000


def _add_read_commands(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    history_cmd = actions.add_parser(
        "history", help="an order's events and the cart and stock events its commits caused"
    )
    history_cmd.add_argument("order_id", type=_order_id, metavar="ORDER_ID")
    history_cmd.add_argument(
        "--json", action="store_true", help="JSON lines, one event each, instead of a table"
    )
    history_cmd.set_defaults(handler=history)
    stock_cmd = actions.add_parser("stock", help="a product's stock on hand as it stood then")
    stock_cmd.add_argument("sku", metavar="SKU")
    stock_cmd.add_argument(
        "--at", required=True, metavar="TIME", help="ISO-8601 time (UTC when it has no zone)"
    )
    stock_cmd.add_argument("--json", action="store_true", help='{"sku", "on_hand", "at"}')
    stock_cmd.set_defaults(handler=stock)
    export_cmd = actions.add_parser(
        "export", help="the log as JSON lines on stdout, one event each, in commit order"
    )
    export_cmd.add_argument(
        "--after", type=_position, default=0, metavar="N", help="only events after position N"
    )
    export_cmd.add_argument(
        "--until",
        metavar="TIME",
        help="stop at the first event recorded after TIME (ISO-8601, UTC when it has no zone)",
    )
    export_cmd.set_defaults(handler=export)


def history(args: argparse.Namespace) -> int:
    from projections.audit.history import OrderHistories, OrderHistoryProjection
    from projections.store import ReadStore
    from workers import Workers

    database = _open_database()
    # No `ledger serve` or `ledger work` may be running (an embedded store, a laptop): run
    # the order_history read model here until it has caught up, so the answer is complete
    # either way. When another process runs it, this one waits for that one instead.
    workers = Workers(database, [OrderHistoryProjection()])
    store = ReadStore(database, min_size=1, max_size=2, workers=workers)
    try:
        workers.start()
        histories = OrderHistories(store, consistent=False)
        _catch_up(store, OrderHistoryProjection.name)
        events = histories.events(args.order_id)
    finally:
        store.close()
        workers.stop()
    if events is None:
        _say(f"ledger audit history: there is no order {args.order_id} (it has no events)")
        return 1
    if args.json:
        for event in events:
            print(json.dumps(event, separators=(",", ":")))
        return 0
    print(f"order {args.order_id}: {len(events)} events")
    print()
    _events_table(events)
    return 0


def _catch_up(store: ReadStore, name: str) -> None:
    """Waits until read model `name` has applied the whole log; says how far it is meanwhile."""
    from ledger.storage import StoreUnavailable

    deadline = time.monotonic() + HISTORY_CATCH_UP_SECONDS
    while True:
        step = time.monotonic() + PROGRESS_EVERY
        if store.wait_for_head([name], PROGRESS_EVERY):
            return
        if time.monotonic() >= deadline:
            raise StoreUnavailable(
                f"the {name} read model did not catch up with the log in"
                f" {HISTORY_CATCH_UP_SECONDS:.0f} s; try again"
            )
        _say(f"{name} read model at position {store.position(name) or 0:,} of {store.head():,}")
        time.sleep(max(0.0, step - time.monotonic()))  # it answers at once when nobody runs it


def _events_table(events: list[dict[str, Any]]) -> None:
    print(f"{'position':>9}  {'recorded at':<32}  {'stream':<9}  {'type':<24}  {'cause':<28}  data")
    for e in events:
        data = e["data"]
        details = " ".join(
            f"{k}={v if isinstance(v, str | int) else json.dumps(v, separators=(',', ':'))}"
            for k, v in data.items()
            if k != "cause"
        )
        print(
            f"{e['position']:>9}  {e['recorded_at'] or '':<32}  {e['stream']:<9}"
            f"  {e['type']:<24}  {e['cause'] or '':<28}  {details}"
        )


def stock(args: argparse.Namespace) -> int:
    from projections.audit.stock import parse_instant, stock_at
    from projections.store import connect

    when = parse_instant(args.at)  # a bad time ends here (exit 2), before any connection
    database = _open_database()
    with connect(database, "audit-stock") as conn:
        found = stock_at(conn, args.sku, when)
    if found is None:
        _say(f"ledger audit stock: there was no product {args.sku!r} at {when.isoformat()}")
        return 1
    if args.json:
        print(json.dumps(found.json()))
    else:
        print(f"{found.sku} on hand at {found.json()['at']}: {found.on_hand}")
    return 0


def export(args: argparse.Namespace) -> int:
    import contextlib
    import os

    from projections.audit import records
    from projections.audit.records import Row
    from projections.audit.stock import parse_instant
    from projections.store import connect

    until = parse_instant(args.until) if args.until else None
    database = _open_database()
    out = sys.stdout.buffer
    encode = json.JSONEncoder(separators=(",", ":")).encode
    written, position = 0, args.after
    started = last_report = time.monotonic()
    chunk: list[str] = []

    def flush() -> None:
        if chunk:
            out.write(("\n".join(chunk) + "\n").encode())
            out.flush()
            chunk.clear()

    try:
        # One transaction: the export is the log as it stood when it began, read through a
        # server-side cursor (a chunk of rows at a time), never the whole log in memory.
        with (
            connect(database, "audit-export") as conn,
            conn.transaction(),
            contextlib.closing(
                cast("Generator[Row, None, None]", records.stream(conn, args.after))
            ) as rows,
        ):
            conn.execute("SET TRANSACTION READ ONLY")
            for row in rows:
                event = records.event_json(row)
                if until is not None and _recorded_after(event["recorded_at"], until):
                    break
                chunk.append(encode(event))
                written += 1
                position = row[0]
                if len(chunk) >= EXPORT_CHUNK:
                    flush()
                    now = time.monotonic()
                    if now - last_report >= PROGRESS_EVERY:
                        last_report = now
                        _say(_export_progress(written, position, now - started))
            flush()
    except BrokenPipeError:
        # The reader went away (`| head`): not an error of ours; keep Python's exit-time
        # flush of stdout from failing again on the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    _say(_export_progress(written, position, time.monotonic() - started, done=True))
    return 0


def _recorded_after(recorded_at: str | None, until: datetime) -> bool:
    return recorded_at is not None and datetime.fromisoformat(recorded_at) > until


def _export_progress(written: int, position: int, seconds: float, done: bool = False) -> str:
    rate = written / seconds if seconds > 0 else 0.0
    return (
        f"ledger audit export: {'done: ' if done else ''}{written:,} events written,"
        f" {'up to' if done else 'at'} position {position:,}, {rate:,.0f} events/s"
    )


def _instant(text: str) -> datetime:
    from projections.audit.stock import parse_instant

    try:
        return parse_instant(text)
    except ValueError as error:  # argparse says what was wrong, not only that it was
        raise argparse.ArgumentTypeError(str(error)) from None


def _order_id(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an order id (a UUID): {text!r}") from None


def _position(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a position (an integer >= 0): {text!r}")
    return int(text)
