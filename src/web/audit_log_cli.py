"""`ledger audit history|stock|export`: the log as recorded, read without replaying it."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

from web.command_line import PROGRESS_EVERY, Subcommands, open_database, say

if TYPE_CHECKING:
    from collections.abc import Generator

    from projections.store import ReadStore

# An order's history waits at most this long for the order_history read model to catch up.
HISTORY_CATCH_UP_SECONDS = 600.0
# Events encoded and written to stdout per write (and flush).
EXPORT_CHUNK = 1000


def add_read_commands(actions: Subcommands) -> None:
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

    database = open_database()
    # No `ledger serve` or `ledger work` may be running (an embedded store, a laptop): run
    # the order_history read model here until it has caught up, so the answer is complete
    # either way. When another process runs it, this one waits for that one instead.
    workers = Workers(database, [OrderHistoryProjection()])
    store = ReadStore(database, min_size=1, max_size=2)
    store.wait_on(workers)
    try:
        workers.start()
        histories = OrderHistories(store, consistent=False)
        _catch_up(store, OrderHistoryProjection.name)
        events = histories.events(args.order_id)
    finally:
        store.close()
        workers.stop()
    if events is None:
        say(f"ledger audit history: there is no order {args.order_id} (it has no events)")
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
        say(f"{name} read model at position {store.position(name) or 0:,} of {store.head():,}")
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
    database = open_database()
    with connect(database, "audit-stock") as conn:
        found = stock_at(conn, args.sku, when)
    if found is None:
        say(f"ledger audit stock: there was no product {args.sku!r} at {when.isoformat()}")
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
    database = open_database()
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
                        say(_export_progress(written, position, now - started))
            flush()
    except BrokenPipeError:
        # The reader went away (`| head`): not an error of ours; keep Python's exit-time
        # flush of stdout from failing again on the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    say(_export_progress(written, position, time.monotonic() - started, done=True))
    return 0


def _recorded_after(recorded_at: str | None, until: datetime) -> bool:
    return recorded_at is not None and datetime.fromisoformat(recorded_at) > until


def _export_progress(written: int, position: int, seconds: float, done: bool = False) -> str:
    rate = written / seconds if seconds > 0 else 0.0
    return (
        f"ledger audit export: {'done: ' if done else ''}{written:,} events written,"
        f" {'up to' if done else 'at'} position {position:,}, {rate:,.0f} events/s"
    )


def _order_id(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an order id (a UUID): {text!r}") from None


def _position(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a position (an integer >= 0): {text!r}")
    return int(text)
