"""Helpers every bench script shares, kept in one copy so that their outputs stay comparable.

The scripts run as `python bench/<script>.py`, so Python puts bench/ first on sys.path and they
import this module as `common`. It imports nothing of the ledger at run time: hot_product.py
starts its Stripe stand-in from its own script, and that process has no use for the ledger.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psycopg import sql

if TYPE_CHECKING:
    from ledger.storage import Database

REPO_DIR = Path(__file__).resolve().parents[1]


def progress(message: str) -> None:
    """A timestamped line on stderr: stdout carries the JSON result alone."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentiles(samples: list[float]) -> dict[str, float | None]:
    """Nearest-rank percentiles of seconds, in milliseconds (2 decimals); None when empty.

    One format for every bench (p50, p90, p95, p99, max, mean), so results can be compared
    across scripts and runs without translating key names or precision.
    """
    if not samples:
        return dict.fromkeys(("p50", "p90", "p95", "p99", "max", "mean"))
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {
        "p50": at(0.50),
        "p90": at(0.90),
        "p95": at(0.95),
        "p99": at(0.99),
        "max": round(ordered[-1] * 1000, 2),
        "mean": round(statistics.fmean(ordered) * 1000, 2),
    }


def source_version() -> dict[str, Any]:
    """The commit the ledger runs from and whether src/ differs from it (read-only git).

    A result is only worth comparing with another when both ran the same code.
    """

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", "--no-optional-locks", *args],
                cwd=REPO_DIR,
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout

    changed = git("status", "--porcelain", "--", "src")
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip() or None,
        "src_changed": [line[3:] for line in changed.splitlines()],
    }


def create_database(admin: Database, prefix: str) -> Database:
    """A new, empty database on `admin`'s server, named `prefix` and a random suffix.

    Every run measures from an empty store, and runs side by side never share one.
    """
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    with admin.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return replace(admin, params={**admin.params, "dbname": name})


def drop_database(admin: Database, name: str) -> None:
    """Drops `name` with FORCE: a run cut short may leave connections to it open."""
    with admin.connect(autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextmanager
def scratch_database(admin: Database, prefix: str) -> Iterator[Database]:
    """A database of `create_database` for the block, dropped afterwards whatever happens."""
    database = create_database(admin, prefix)
    try:
        yield database
    finally:
        drop_database(admin, database.params["dbname"])
