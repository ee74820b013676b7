"""`ledger audit export` and `ledger audit verify` over 10,000 and 100,000 events: time, rate
and the process's memory, the export being verify's baseline (the same log, read in the same
order, in the same run).

On a scratch database on a PostgreSQL server, the log is seeded to exactly 10,000, then
100,000 events by `common.seed_log` (real domain events through the application service, no
HTTP: one product, carts with one line and a started checkout saved 500 to a commit, their
orders placed with `place_orders` 200 to a commit (`--order-chunk`), 7 events an order). At
each level:

1. catch-up: `workers.Workers` with `default_projections()` (the read models and the hash
   chain) run until every tracking position reaches the log's head, then stop: `ledger audit
   verify` compares the read models with a fresh replay and recomputes the chain, so they must
   be caught up first. Its rate is the projections' own catch-up rate (from the previous level).
2. `ledger audit export` runs as a subprocess (the console command as an operator runs it:
   `python -m web.cli audit export`, env LEDGER_DATABASE_URL, no .env), its stdout to a file
   that is then checked (one JSON line per event, positions in order, none missing).
3. `ledger audit verify` the same way (replays the log for the invariants, compares every read
   model with a fresh replay (each rebuilt by the server from the decoded log, set-based, while
   the invariants' passes run), recomputes the hash chain); it must exit 0. (On a log whose
   orders were decided many to a commit, the replay of commit 37d3d11 counts the stock
   reservations stored before their order's OrderPlaced as strays and exits 1: still timed,
   `violations` says so; `--order-chunk 1` seeds a log it passes.)

With `--repeat N`, export and verify run N times at each level, alternating which goes first
(a noisy neighbour's load falls on both), and the ratio quoted is the median of the pairs'.

    .venv/bin/python bench/audit.py [--url postgresql://postgres@127.0.0.1:5432/postgres]
                                    [--levels 10000,100000] [--repeat 1] [--order-chunk 200]

Progress on stderr; JSON on stdout:
- `levels[]`: `events` (the log's length);
  - `catch_up`: `events` applied (since the previous level), `seconds` (workers' start to the
    last projection at the head), `events_per_s`, `per_projection_s` (when each reached the
    head), `positions` (the tracking table afterwards: each equals `head`);
  - `export` and `verify`: `wall_seconds` (process start to exit: interpreter start-up and
    imports included), `events_per_s_wall`, `events_per_s` (the command's own rate, from the
    line it prints at the end), `peak_rss_mb` (the subprocess's peak resident set, `ru_maxrss`
    from wait4), `exit_code`; the export adds `output_mb`; verify adds `seconds` (its own),
    `checks` (its table: `ok` each), `violations` (when it exits 1: how many, the first 3)
    and `split_s` (from when its stderr lines arrived: `start_to_read_models` (process start
    to the end of the invariants' replay: start-up and imports included), `read_models` (what
    is left of the read models' replays and comparisons once the invariants are checked: they
    run meanwhile), `hash_chain_to_exit` (the chain recomputed,
    the report printed, the process's exit), `outside_own` (wall - own seconds: start-up and
    exit));
  - `verify_vs_export`: verify's events/s over the export's (own rates, and wall rates);
  - `repeats` (with `--repeat` > 1): each pair's own rates and ratio.
- `empty_export`: an export with nothing to write (`--after` the head): the command's fixed cost;
- `goal`: `events_per_s` (20,000) and whether each command's own rate meets it at every level,
  the export's `peak_rss_ratio_last_vs_first` (memory flat in the log's length: at most 1.1),
  verify's for comparison, and whether every verify exited 0;
- `seeding`: events written, their rate, and `order_chunk`;
- `source`: the commit the ledger ran from and the files under src/ that differed from it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    count_events,
    log_head,
    progress,
    run_until_caught_up,
    scratch_database,
    seed_log,
    source_version,
)

from ledger.storage import Database
from projections import ReadStore, default_projections
from web.logs import configure_logging

GOAL_EVENTS_PER_S = 20_000
FLAT_RSS_RATIO = 1.1  # "flat": the last level's peak RSS at most this times the first's
CATCH_UP_TIMEOUT_S = 3600.0
_EXPORT_DONE = re.compile(r"done: .*? ([\d,]+) events/s")
_VERIFY_DONE = re.compile(
    r"ledger audit verify: ([\d,]+) events up to position ([\d,]+),"
    r" checked in ([\d.]+) s \(([\d,]+) events/s\)"
)
_READ_MODELS_STEP = "comparing the read models with a fresh replay"
_CHAIN_STEP = "recomputing the hash chain"


@dataclass
class Finished:
    """A `ledger` subprocess, run to its end."""

    exit_code: int
    wall_seconds: float
    peak_rss_mb: float
    stdout: Path
    stderr: list[tuple[float, str]]  # (seconds since the start, line) as each line arrived

    def basics(self, events: int) -> dict[str, Any]:
        return {
            "events": events,
            "wall_seconds": round(self.wall_seconds, 3),
            "events_per_s_wall": round(events / self.wall_seconds, 1),
            "peak_rss_mb": self.peak_rss_mb,
            "exit_code": self.exit_code,
        }

    def stderr_text(self) -> str:
        return "".join(line for _, line in self.stderr)


def run_ledger(database: Database, workdir: Path, *args: str) -> Finished:
    """`python -m web.cli <args>` with LEDGER_DATABASE_URL alone of the ledger's settings, in
    a directory without a .env; stdout to a file, stderr's lines timestamped as they come."""
    out_path = workdir / f"{args[1]}.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "STRIPE_", "PG"))}
    env["LEDGER_DATABASE_URL"] = database.conninfo_url()
    lines: list[tuple[float, str]] = []
    with out_path.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "web.cli", *args],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        with proc.stderr:
            for line in proc.stderr:
                lines.append((time.perf_counter() - started, line))
        # wait4 gives this child's own rusage: its peak RSS, exactly, after it exits.
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    return Finished(
        exit_code=proc.returncode,
        wall_seconds=wall,
        peak_rss_mb=round(usage.ru_maxrss / 1024, 1),  # Linux: kilobytes
        stdout=out_path,
        stderr=lines,
    )


def run_export(database: Database, workdir: Path, *args: str) -> dict[str, Any]:
    """One `ledger audit export`: its time, peak RSS and what it wrote (checked)."""
    done = run_ledger(database, workdir, "audit", "export", *args)
    stderr = done.stderr_text()
    if done.exit_code != 0:
        raise RuntimeError(f"export exited {done.exit_code}: {stderr}")
    exported = 0
    previous = -1
    with done.stdout.open("rb") as lines:
        for line in lines:
            position = json.loads(line)["position"]
            if position <= previous:
                raise RuntimeError(f"positions out of order at {position}")
            previous = position
            exported += 1
    match = _EXPORT_DONE.search(stderr)
    return {
        **done.basics(exported),
        "events_per_s": int(match[1].replace(",", "")) if match else None,
        "output_mb": round(done.stdout.stat().st_size / 2**20, 2),
    }


def run_verify(database: Database, workdir: Path) -> dict[str, Any]:
    """One `ledger audit verify`: its time, peak RSS, exit code, checks and phases."""
    done = run_ledger(database, workdir, "audit", "verify")
    stdout = done.stdout.read_text()
    match = _VERIFY_DONE.search(stdout)
    events = int(match[1].replace(",", "")) if match else 0
    rate = int(match[4].replace(",", "")) if match else 0
    # Its own seconds: from the rate (an integer) rather than the 0.1 s it prints.
    own_seconds = events / rate if rate else (float(match[3]) if match else None)
    checks: dict[str, str] = {}
    table = stdout.split("\ncheck", 1)[1] if "\ncheck" in stdout else ""
    for line in table.split("\n\n", 1)[0].splitlines()[1:]:
        checks[line[:36].strip()] = line[36:].strip()
    at = {
        step: t
        for t, line in done.stderr
        for step in (_READ_MODELS_STEP, _CHAIN_STEP)
        if step in line
    }
    split: dict[str, float | None] = dict.fromkeys(
        ("start_to_read_models", "read_models", "hash_chain_to_exit", "outside_own")
    )
    if len(at) == 2:
        split = {
            "start_to_read_models": round(at[_READ_MODELS_STEP], 3),
            "read_models": round(at[_CHAIN_STEP] - at[_READ_MODELS_STEP], 3),
            "hash_chain_to_exit": round(done.wall_seconds - at[_CHAIN_STEP], 3),
            "outside_own": (
                round(done.wall_seconds - own_seconds, 3) if own_seconds is not None else None
            ),
        }
    result = {
        **done.basics(events),
        "events_per_s": rate or None,
        "seconds": round(own_seconds, 3) if own_seconds is not None else None,
        "checks": checks,
        "split_s": split,
    }
    if done.exit_code != 0:
        violations = [x for x in stdout.splitlines() if x.startswith("VIOLATION")]
        if not violations:  # not a verdict: the command failed
            raise RuntimeError(f"verify exited {done.exit_code}: {done.stderr_text()[-4000:]}")
        result["violations"] = {"count": len(violations), "first": violations[:3]}
        progress(
            f"  verify exited {done.exit_code}: {len(violations):,} violations;"
            f" the first: {violations[0]}"
        )
    return result


def catch_up(database: Database, events: int) -> dict[str, Any]:
    """Runs every read model and the hash chain until each has applied the log up to its head;
    `events`: how many events they had to apply (for the rate)."""
    projections = default_projections()
    names = [p.name for p in projections]
    target, reached, seconds = run_until_caught_up(database, projections, CATCH_UP_TIMEOUT_S)
    store = ReadStore(database, min_size=1, max_size=1)
    try:
        positions = {name: store.positions().get(name) for name in names}
    finally:
        store.close()
    if any(position != target for position in positions.values()):
        raise RuntimeError(f"tracking positions {positions}, head {target}")
    return {
        "events": events,
        "head": target,
        "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds, 1),
        "per_projection_s": {name: round(reached[name], 3) for name in names},
        "positions": positions,
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def measure_level(database: Database, workdir: Path, level: int, repeat: int) -> dict[str, Any]:
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for i in range(repeat):
        if i % 2 == 0:
            progress(f"ledger audit export over {level:,} events")
            export = run_export(database, workdir)
            progress(f"ledger audit verify over {level:,} events")
            verify = run_verify(database, workdir)
        else:
            progress(f"ledger audit verify over {level:,} events")
            verify = run_verify(database, workdir)
            progress(f"ledger audit export over {level:,} events")
            export = run_export(database, workdir)
        if export["events"] != level:
            raise RuntimeError(f"exported {export['events']} of {level} events")
        progress(
            f"  export {export['events_per_s']} events/s, verify {verify['events_per_s']}"
            f" events/s (exit {verify['exit_code']})"
        )
        pairs.append((export, verify))
    export, verify = pairs[0]
    result: dict[str, Any] = {"export": export, "verify": verify}
    own = [ratio(v["events_per_s"], e["events_per_s"]) for e, v in pairs]
    wall = [ratio(v["events_per_s_wall"], e["events_per_s_wall"]) for e, v in pairs]
    result["verify_vs_export"] = {
        "events_per_s": statistics.median(x for x in own if x is not None) if any(own) else None,
        "events_per_s_wall": statistics.median(x for x in wall if x is not None),
    }
    if repeat > 1:
        result["repeats"] = [
            {
                "export_events_per_s": e["events_per_s"],
                "verify_events_per_s": v["events_per_s"],
                "verify_vs_export": r,
            }
            for (e, v), r in zip(pairs, own, strict=True)
        ]
    return result


def run(database: Database, levels: list[int], repeat: int, order_chunk: int) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    seeded, seed_seconds, applied = 0, 0.0, 0
    with tempfile.TemporaryDirectory(prefix="ledger_bench_audit_") as tmp:
        workdir = Path(tmp)
        for level in levels:
            progress(f"seeding the log to {level:,} events")
            seeding = seed_log(database, level, order_chunk)
            seeded += seeding["events"]
            seed_seconds += seeding["seconds"]
            progress(f"projections catching up with {level - applied:,} events")
            caught_up = catch_up(database, level - applied)
            applied = level
            progress(f"  {json.dumps(caught_up)}")
            results.append(
                {
                    "events": level,
                    "catch_up": caught_up,
                    **measure_level(database, workdir, level, repeat),
                }
            )
        progress("ledger audit export with nothing to write")
        empty = run_export(database, workdir, "--after", str(log_head(database)))
    first, last = results[0], results[-1]
    return {
        "bench": "audit",
        "levels": results,
        "empty_export": empty,
        "goal": {
            "events_per_s": GOAL_EVENTS_PER_S,
            "export_meets": all(
                (r["export"]["events_per_s"] or 0) >= GOAL_EVENTS_PER_S for r in results
            ),
            "verify_meets": all(
                (r["verify"]["events_per_s"] or 0) >= GOAL_EVENTS_PER_S for r in results
            ),
            "export_peak_rss_ratio_last_vs_first": ratio(
                last["export"]["peak_rss_mb"], first["export"]["peak_rss_mb"]
            ),
            "export_peak_rss_flat": last["export"]["peak_rss_mb"]
            <= FLAT_RSS_RATIO * first["export"]["peak_rss_mb"],
            "verify_peak_rss_ratio_last_vs_first": ratio(
                last["verify"]["peak_rss_mb"], first["verify"]["peak_rss_mb"]
            ),
            "verify_exit_codes": [r["verify"]["exit_code"] for r in results],
            "verify_all_ok": all(r["verify"]["exit_code"] == 0 for r in results),
        },
        "seeding": {
            "events": seeded,
            "seconds": round(seed_seconds, 2),
            "events_per_s": round(seeded / seed_seconds, 1) if seed_seconds else None,
            "order_chunk": order_chunk,
        },
        "log_events": count_events(database),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--levels", default="10000,100000")
    parser.add_argument("--repeat", type=int, default=1, help="export/verify pairs per level")
    parser.add_argument("--order-chunk", type=int, default=200, help="orders to a commit")
    args = parser.parse_args()
    levels = sorted(int(x) for x in args.levels.split(","))
    if min(args.repeat, args.order_chunk, *levels) < 1:
        parser.error("--repeat, --order-chunk and every level must be at least 1")
    configure_logging("WARNING")  # stdout carries the JSON result alone
    source = source_version()
    with scratch_database(Database.from_url(args.url), "ledger_bench_audit_") as database:
        result = {**run(database, levels, args.repeat, args.order_chunk), "source": source}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
