"""The caller's CPU per commit of new events to the log: the ledger's recorder
(`ledger.event_recorder`, the events as four arrays in binary) against the library's
(`eventsourcing.postgres.PostgresApplicationRecorder`, one array of a composite type dumped in
text), in one run, on one scratch database, each on its own table.

Each commit holds `--events` events: a quarter as many aggregates, four events each, the state
`--state-bytes` random bytes (an order's events are 200-600 bytes). `time.process_time()` over
`--commits` commits of each recorder, after a warm-up; the recorders take turns over `--rounds`
rounds and the best round of each is kept (the machine is shared: the least disturbed round is
the closest to the cost). PostgreSQL's own CPU is not counted.

    .venv/bin/python bench/event_insert.py [--events 40] [--commits 300] [--rounds 3]

Measured on 2026-12-07 (2 shared cores), the whole commit (the table lock, NOTIFY, the insert,
its ids, the commit): 40 events, the ledger's 1,263 µs against the library's 3,118 µs (0.41x);
8 events, 888 against 1,372 µs (0.65x).

One JSON document on stdout: `cpu_us_per_commit` (best round) and `all_rounds` per recorder,
and the ledger's ratio to the library's.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from typing import Any

from common import progress, scratch_database, source_version
from eventsourcing.persistence import ApplicationRecorder, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder

from ledger.storage import Database, LedgerPostgresFactory

TOPIC = "ledger.domain.order:Order.PaymentConfirmed"


def commits(count: int, events: int, state_bytes: int) -> list[list[StoredEvent]]:
    """`count` commits of `events` new events each: aggregates of four events, versions 1-4."""
    out = []
    for _ in range(count):
        ids = [uuid.uuid4() for _ in range(max(1, events // 4))]
        out.append(
            [
                StoredEvent(i, version, TOPIC, os.urandom(state_bytes))
                for i in ids
                for version in range(1, 5)
            ][:events]
        )
    return out


def cpu_per_commit(recorder: ApplicationRecorder, batches: list[list[StoredEvent]]) -> float:
    started = time.process_time()
    for batch in batches:
        recorder.insert_events(batch)
    return (time.process_time() - started) / len(batches) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--state-bytes", type=int, default=400)
    parser.add_argument("--commits", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with scratch_database(Database.from_url(args.url), "bench_event_insert") as database:
        factory = LedgerPostgresFactory(database.eventsourcing_env())
        ledger = factory.application_recorder()
        library = PostgresApplicationRecorder(factory.datastore, events_table_name="library_events")
        library.create_table()
        recorders: dict[str, ApplicationRecorder] = {"ledger": ledger, "library": library}
        for recorder in recorders.values():  # warm-up: connections, prepared statements
            cpu_per_commit(recorder, commits(20, args.events, args.state_bytes))
        rounds: dict[str, list[float]] = {name: [] for name in recorders}
        for r in range(args.rounds):
            names = list(recorders)[r % 2 :] + list(recorders)[: r % 2]
            for name in names:
                batches = commits(args.commits, args.events, args.state_bytes)
                rounds[name].append(round(cpu_per_commit(recorders[name], batches)))
            progress(f"round {r + 1}: {', '.join(f'{n} {v[-1]} µs' for n, v in rounds.items())}")
        factory.close()
    best = {name: min(values) for name, values in rounds.items()}
    result: dict[str, Any] = {
        "source": source_version(),
        "config": vars(args) | {"url": None},
        "cpu_us_per_commit": best,
        "all_rounds": rounds,
        "ratio_ledger_to_library": round(best["ledger"] / best["library"], 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
