"""What the log's version guard (`ledger.event_recorder`) costs a commit: stock adjustments
on one product, one at a time, by a ledger whose recorder checks that each aggregate's new
events follow the version the log holds, and by one with the library's recorder as it comes,
in alternating rounds on scratch databases of their own (same run, same machine).

Reported per commit: wall time, and this process's CPU time (user + system, the client's
share); and the CPU of the PostgreSQL backends serving the round's database, from /proc.

    .venv/bin/python bench/version_guard.py [--url postgresql://postgres@127.0.0.1:5432/postgres]
        [--commits 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common


def backend_cpu_seconds(database: Any) -> float:
    """User + system CPU of the server's backends serving `database` now, from /proc (the
    pool's connections, which live through a round; the machine's other clients excluded)."""
    with database.connect() as conn:
        pids = [
            row[0]
            for row in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            ).fetchall()
        ]
    ticks = 0
    for pid in pids:
        try:
            parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(parts[11]) + int(parts[12])
        except (OSError, IndexError, ValueError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


def one_round(admin: Any, guarded: bool, commits: int) -> dict[str, float]:
    from eventsourcing.postgres import PostgresApplicationRecorder

    from ledger.application import Ledger
    from ledger.storage import LedgerPostgresFactory

    class Unguarded(LedgerPostgresFactory):
        application_recorder_class = PostgresApplicationRecorder

    with common.scratch_database(admin, "bench_guard") as database:
        env = dict(database.eventsourcing_env())
        if not guarded:
            env["PERSISTENCE_MODULE"] = f"{__name__}:Unguarded"
            globals()["Unguarded"] = Unguarded
        ledger = Ledger(env=env)
        try:
            ledger.put_product("mug", "Mug", 500, "usd", "bench")
            ledger.adjust_stock("mug", 1, None, "bench")
            pg = backend_cpu_seconds(database)
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(commits):
                ledger.adjust_stock("mug", 1, None, "bench")
            wall = time.perf_counter() - wall
            cpu = time.process_time() - cpu
            pg = backend_cpu_seconds(database) - pg
        finally:
            ledger.close()
    return {
        "wall_ms_per_commit": round(wall / commits * 1000, 4),
        "client_cpu_ms_per_commit": round(cpu / commits * 1000, 4),
        "postgres_cpu_ms_per_commit": round(pg / commits * 1000, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from ledger.storage import Database

    admin = Database.from_url(args.url)
    runs: dict[str, list[dict[str, float]]] = {"guarded": [], "library": []}
    for i in range(args.rounds):
        for name in ("library", "guarded") if i % 2 else ("guarded", "library"):
            common.progress(f"round {i + 1} {name}")
            runs[name].append(one_round(admin, name == "guarded", args.commits))
    medians = {
        name: {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        for name, rounds in runs.items()
    }
    ratio = {
        k: round(medians["guarded"][k] / medians["library"][k], 3)
        for k in medians["guarded"]
        if medians["library"][k]
    }
    print(
        json.dumps(
            {
                "bench": "version_guard",
                "source": common.source_version(),
                "config": {"commits": args.commits, "rounds": args.rounds},
                "runs": runs,
                "median": medians,
                "guarded_over_library": ratio,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
