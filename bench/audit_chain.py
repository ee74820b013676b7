"""The hash chain over the event log: how fast the projection links a long log, and how fast
`verify_chain` checks it, each beside a baseline measured in the same run on the same rows.

On a scratch database on a PostgreSQL server, the log is seeded with real domain events to
exactly `--events` events by `common.seed_log` (the application service, no HTTP, in bulk:
carts saved 500 to a commit, their orders placed with `Ledger.place_orders` 200 to a commit;
untimed for the chain; its rate is reported).
Then, each alone, from position 0 to the head:

- projection catch-up: a `Workers` runner applying `HashChainProjection` (one INSERT ...
  SELECT per event that hashes the stored row inside PostgreSQL), beside two baselines run
  the same way: `noop` (the runner reading and decoding the events, applying nothing) and
  `insert_position` (one plain INSERT of the position per event, no hashing);
- verification: `verify_chain` (streams rows and links, recomputes every link in Python),
  beside the same rows streamed through a server-side cursor with one sha256 of each row's
  state: `stream_sha256` through `records.stream` (text protocol, as the export reads),
  `stream_binary_sha256` through a binary cursor (as `verify_chain` reads them).

    .venv/bin/python bench/audit_chain.py [--url postgresql://postgres@127.0.0.1:5432/postgres]
                                          [--events 100000]

Progress on stderr; JSON on stdout: `events`, `seeding` (seconds, events/s), `projection`
(seconds and events/s of each run, `ratio_vs_noop` and `ratio_vs_insert_position`: the
chain's time over the baseline's), `verify` (the same for `verify_chain` and both streams,
`ratio_vs_*`: verify's time over the stream's, `meets_goal`: at least 20,000 events/s),
`source`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from typing import Any

from common import log_head, progress, scratch_database, seed_log, source_version

from ledger.storage import Database
from projections import DomainEvent, Projection, Writer
from projections.audit import records
from projections.audit.chain import HashChainProjection
from projections.audit.chain_verification import verify_chain
from web.logs import configure_logging
from workers import Workers

VERIFY_GOAL_EVENTS_PER_S = 20_000


class Noop(Projection):
    """The runner's own cost: reading, decoding, tracking; nothing applied."""

    name = "bench_noop"
    tables = ("bench_noop",)

    def create_tables(self, db: Writer) -> None:
        db.execute("CREATE TABLE {bench_noop} (position bigint PRIMARY KEY)")

    def apply(self, db: Writer, event: DomainEvent, position: int) -> None:
        pass


class InsertPosition(Projection):
    """One statement per event, as the chain has, without hashing or reading the row."""

    name = "bench_insert_position"
    tables = ("bench_insert_position",)

    def create_tables(self, db: Writer) -> None:
        db.execute("CREATE TABLE {bench_insert_position} (position bigint PRIMARY KEY)")

    def apply(self, db: Writer, event: DomainEvent, position: int) -> None:
        db.execute("INSERT INTO {bench_insert_position} VALUES (%s)", (position,))


def catch_up(database: Database, projection: Projection, target: int) -> dict[str, Any]:
    progress(f"projection {projection.name}: catching up over {target} events")
    runner = Workers(database, [projection], poll_interval=0.5, lock_interval=0.5)
    started = time.perf_counter()
    runner.start()
    try:
        if not runner.wait_until_processed(projection.name, target, timeout=3600):
            raise RuntimeError(f"{projection.name} did not catch up")
        seconds = time.perf_counter() - started
    finally:
        runner.stop()
    return {"seconds": round(seconds, 3), "events_per_s": round(target / seconds, 1)}


def stream_sha256(database: Database) -> tuple[int, float]:
    """The rows as `records.stream` gives them (text protocol), one sha256 of each state."""
    started = time.perf_counter()
    count = 0
    with database.connect() as conn, conn.transaction():
        for row in records.stream(conn, chunk=5000):
            hashlib.sha256(row[4]).digest()
            count += 1
    return count, time.perf_counter() - started


def stream_binary_sha256(database: Database) -> tuple[int, float]:
    """The rows through a binary server-side cursor, as `verify_chain` reads them (without
    the links), one sha256 of each state: the floor for any verification in Python."""
    started = time.perf_counter()
    count = 0
    with (
        database.connect() as conn,
        conn.transaction(),
        conn.cursor(name="bench_rows", binary=True) as cursor,
    ):
        cursor.itersize = 5000
        cursor.execute(
            "SELECT notification_id, originator_id, originator_version, topic, state"
            " FROM ledger_events ORDER BY notification_id"
        )
        for row in cursor:
            hashlib.sha256(row[4]).digest()
            count += 1
    return count, time.perf_counter() - started


def run(database: Database, events: int) -> dict[str, Any]:
    progress(f"seeding the log to {events:,} events")
    seeding = seed_log(database, events)
    target = log_head(database)
    count = events
    chain = catch_up(database, HashChainProjection(), target)
    noop = catch_up(database, Noop(), target)
    inserting = catch_up(database, InsertPosition(), target)

    progress("verify_chain over the whole log")
    started = time.perf_counter()
    report = verify_chain(database, None, progress)
    verify_s = time.perf_counter() - started
    if not report.ok or report.linked != count:
        raise RuntimeError(f"the chain did not verify: {report.summary()}")
    progress("baselines: the same rows streamed, one sha256 each")
    streamed, baseline_s = stream_sha256(database)
    _, binary_s = stream_binary_sha256(database)
    verify_rate = count / verify_s
    return {
        "bench": "audit_chain",
        "events": count,
        "seeding": seeding,
        "projection": {
            "hash_chain": chain,
            "noop": noop,
            "insert_position": inserting,
            "ratio_vs_noop": round(chain["seconds"] / noop["seconds"], 2),
            "ratio_vs_insert_position": round(chain["seconds"] / inserting["seconds"], 2),
        },
        "verify": {
            "verify_chain": {
                "seconds": round(verify_s, 3),
                "events_per_s": round(verify_rate, 1),
            },
            "stream_sha256": {
                "events": streamed,
                "seconds": round(baseline_s, 3),
                "events_per_s": round(streamed / baseline_s, 1),
            },
            "stream_binary_sha256": {
                "seconds": round(binary_s, 3),
                "events_per_s": round(streamed / binary_s, 1),
            },
            "ratio_vs_stream_sha256": round(verify_s / baseline_s, 2),
            "ratio_vs_stream_binary_sha256": round(verify_s / binary_s, 2),
            "goal_events_per_s": VERIFY_GOAL_EVENTS_PER_S,
            "meets_goal": verify_rate >= VERIFY_GOAL_EVENTS_PER_S,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    configure_logging("WARNING")  # stdout carries the JSON result alone
    source = source_version()
    with scratch_database(Database.from_url(args.url), "ledger_bench_chain_") as database:
        result = {**run(database, args.events), "source": source}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
