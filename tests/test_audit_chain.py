"""The hash chain over the event log: kept by the real runner on a real PostgreSQL, written to
by a real `Ledger`, tampered with by hand in SQL on the stored rows, and verified."""

from __future__ import annotations

import hashlib
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ledger.application import Ledger
from ledger.domain import PaidSession
from ledger.storage import Database
from projections import default_projections, rebuild, verify
from projections.audit import records
from projections.audit.chain import HashChainProjection, chain_head
from projections.audit.chain_report import ChainReport
from projections.audit.chain_verification import verify_chain
from projections.audit.links import GENESIS, link, link_in_sql, parse_digest
from tests.processes import run_ledger
from workers import Workers

NAME = HashChainProjection.name


# ---- helpers ---------------------------------------------------------------------------------


def query(database: Database, text: str, *params: Any) -> list[tuple[Any, ...]]:
    with database.connect() as conn:
        return conn.execute(text, params or None).fetchall()


def execute(database: Database, text: str, *params: Any) -> None:
    with database.connect() as conn:
        conn.execute(text, params or None)


def head(database: Database) -> int:
    return int(query(database, "SELECT coalesce(max(notification_id), 0) FROM ledger_events")[0][0])


def positions(database: Database) -> list[int]:
    return [r[0] for r in query(database, "SELECT notification_id FROM ledger_events ORDER BY 1")]


def record_orders(app: Ledger, tag: str, orders: int = 3) -> None:
    """A product, stock, and `orders` carts checked out and paid: a few dozen events."""
    sku = f"mug-{tag}"
    app.put_product(sku, f"Mug {tag}", 1250, "usd", "test")
    app.adjust_stock(sku, orders + 5, "delivery", "test")
    for n in range(orders):
        cart = app.create_cart(None, "test")
        app.set_cart_line(cart.id, sku, 1, "test")
        priced = app.price(app.get_cart(cart.id))
        session_id = f"cs_{tag}_{n}"
        app.start_checkout(priced, session_id, "test")
        app.place_order(
            PaidSession(session_id, cart.id, priced.amount_total, "usd", f"pi_{session_id}"),
            "test",
        )


@contextmanager
def running_chain(database: Database) -> Iterator[Workers]:
    runner = Workers(database, [HashChainProjection()], poll_interval=0.2, lock_interval=0.2)
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


def link_everything(database: Database) -> None:
    """Runs the projection until it has linked every record recorded so far."""
    with running_chain(database) as runner:
        assert runner.wait_until_processed(NAME, head(database), timeout=20)


def problems(report: ChainReport) -> list[tuple[str, int]]:
    return [(p.kind, p.position) for p in report.problems]


@pytest.fixture
def chained(database: Database, ledger: Ledger) -> Database:
    """A log of a few dozen events, every one linked by the projection."""
    record_orders(ledger, "a")
    record_orders(ledger, "b")
    link_everything(database)
    return database


# ---- the chain on a clean log ------------------------------------------------------------------


def test_a_clean_log_verifies_and_each_stored_link_is_the_python_one(chained: Database) -> None:
    report = verify_chain(chained)
    assert report.ok, report.lines()
    count = len(positions(chained))
    assert count > 30
    assert (report.records, report.linked, report.unlinked) == (count, count, 0)
    # The links the database computed (the projection) are those Python computes.
    previous = GENESIS
    with chained.connect() as conn:
        rows = records.page(conn.cursor(), 0, 10_000)
        stored = dict(conn.execute("SELECT position, link FROM hash_chain").fetchall())
    for row in rows:
        previous = link(previous, row)
        assert stored[row[0]] == previous, row[0]
    assert chain_head(chained) == (rows[-1][0], previous.hex())
    assert report.head == chain_head(chained)
    assert f"{count} of {count} records" in report.summary()


def test_sql_and_python_give_the_same_link_for_unusual_records(database: Database) -> None:
    link_everything(database)  # sets the log up (an empty chain)
    forged = [
        (10, "ledger.domain.cart:Cart.Créé→🛒", b'{"a": 1}'),  # non-ASCII topic
        (11, "t", b""),  # empty state
        (12, "x" * 5000, bytes(range(256)) * 40),  # long, binary
        (13, "", b"\x00\x00"),  # empty topic
        (14, "ab", b"c"),  # slid: must differ from (topic "a", state "bc")
        (15, "a", b"bc"),
    ]
    with database.connect(autocommit=True) as conn:
        for position, topic, state in forged:
            conn.execute(
                "INSERT INTO ledger_events (notification_id, originator_id, originator_version,"
                " topic, state) VALUES (%s, %s, %s, %s, %s)",
                (position, uuid.uuid4(), position * 1000 + 7, topic, state),
            )
        conn.execute(  # NULLs (which the library never writes) hash as empty, both sides
            "INSERT INTO ledger_events (notification_id, originator_id, originator_version,"
            " topic, state) VALUES (16, %s, 1, NULL, NULL)",
            (uuid.uuid4(),),
        )
        cur = conn.cursor()
        rows = records.page(cur, 9, 6)  # not the NULL row: records.Row cannot hold it
        previous = hashlib.sha256(b"any previous link").digest()
        links = set()
        for row in rows:
            in_python = link(previous, row)
            assert link_in_sql(cur, previous, row[0]) == in_python, row[0]
            links.add(in_python)
        assert len(links) == len(rows)  # topic/state boundaries cannot slide
        ids = conn.execute(
            "SELECT originator_id, originator_version FROM ledger_events WHERE notification_id = 16"
        ).fetchone()
        assert ids is not None
        null_row = (16, *ids, "", b"")
        assert link_in_sql(cur, previous, 16) == link(previous, null_row)
        assert link_in_sql(cur, previous, 999) is None


# ---- tampering, found without a digest -----------------------------------------------------------


def test_an_edited_record_is_reported_at_its_position_and_nothing_else(chained: Database) -> None:
    target = positions(chained)[7]
    execute(
        chained,
        "UPDATE ledger_events SET state = convert_to(replace(convert_from(state, 'UTF8'),"
        " 'test', 'tset'), 'UTF8') WHERE notification_id = %s",
        target,
    )
    report = verify_chain(chained)
    assert problems(report) == [("edited", target)]
    assert not report.ok
    assert f"at position {target}" in report.lines()[0]


def test_a_deleted_record_is_reported_at_its_position(chained: Database) -> None:
    everything = positions(chained)
    first, middle, last = everything[0], everything[11], everything[-1]
    execute(
        chained,
        "DELETE FROM ledger_events WHERE notification_id IN (%s, %s, %s)",
        first,
        middle,
        last,
    )
    assert problems(verify_chain(chained)) == [
        ("deleted", first),
        ("deleted", middle),
        ("deleted", last),
    ]


def test_a_forged_record_in_a_gap_or_in_place_of_a_deleted_one_is_reported(
    database: Database, ledger: Ledger
) -> None:
    record_orders(ledger, "a")
    # Positions skipped (as a rolled-back write leaves them): a gap in the log.
    gap = head(database) + 1
    execute(
        database,
        "SELECT setval(pg_get_serial_sequence('ledger_events', 'notification_id'), %s)",
        gap + 2,
    )
    record_orders(ledger, "b")
    link_everything(database)
    assert verify_chain(database).ok
    execute(
        database,
        "INSERT INTO ledger_events (notification_id, originator_id, originator_version, topic,"
        " state) SELECT %s, gen_random_uuid(), 1, topic, state FROM ledger_events"
        " WHERE notification_id = 2",
        gap,
    )
    replaced = positions(database)[5]
    execute(
        database,
        "WITH gone AS (DELETE FROM ledger_events WHERE notification_id = %s RETURNING *)"
        " INSERT INTO ledger_events (notification_id, originator_id, originator_version, topic,"
        " state) SELECT notification_id, originator_id, originator_version, topic,"
        " state || ' '::bytea FROM gone",
        replaced,
    )
    assert problems(verify_chain(database)) == [("edited", replaced), ("inserted", gap)]


def test_swapped_or_reordered_records_are_reported_at_both_positions(chained: Database) -> None:
    everything = positions(chained)
    a, b = everything[3], everything[20]
    execute(
        chained,
        "UPDATE ledger_events e SET state = o.state FROM ledger_events o"
        " WHERE (e.notification_id, o.notification_id) IN ((%s, %s), (%s, %s))",
        a,
        b,
        b,
        a,
    )
    assert problems(verify_chain(chained)) == [("edited", a), ("edited", b)]
    # Two neighbours moved past each other (their positions swapped).
    c, d = everything[30], everything[31]
    execute(
        chained,
        "UPDATE ledger_events SET notification_id = CASE notification_id WHEN %s THEN -1"
        " ELSE notification_id END WHERE notification_id = %s",
        c,
        c,
    )
    execute(
        chained, "UPDATE ledger_events SET notification_id = %s WHERE notification_id = %s", c, d
    )
    execute(chained, "UPDATE ledger_events SET notification_id = %s WHERE notification_id = -1", d)
    assert problems(verify_chain(chained)) == [("edited", x) for x in (a, b, c, d)]


def test_an_altered_link_is_reported_once_and_the_records_after_it_still_verify(
    chained: Database,
) -> None:
    target = positions(chained)[9]
    execute(chained, "UPDATE hash_chain SET link = sha256(link) WHERE position = %s", target)
    assert problems(verify_chain(chained)) == [("edited", target)]


def test_links_taken_off_the_chains_end_are_reported_as_unlinked_records(
    chained: Database,
) -> None:
    last_two = positions(chained)[-2:]
    execute(chained, "DELETE FROM hash_chain WHERE position >= %s", last_two[0])
    # The projection's position says it linked them: they did not just arrive.
    assert problems(verify_chain(chained)) == [("inserted", p) for p in last_two]


def test_records_appended_after_the_chains_head_are_not_violations(
    chained: Database, ledger: Ledger
) -> None:
    before = len(positions(chained))
    record_orders(ledger, "late", orders=1)
    report = verify_chain(chained)
    assert report.ok, report.lines()
    assert report.unlinked == len(positions(chained)) - before > 0
    assert "not linked yet" in report.summary()
    link_everything(chained)
    assert verify_chain(chained).unlinked == 0


def test_verifying_while_the_log_grows_and_the_chain_follows_finds_nothing(
    database: Database, ledger: Ledger
) -> None:
    # One snapshot for records, links and the projection's position: a record committed or
    # linked mid-verification is never taken for a forged or a deleted one.
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            record_orders(ledger, f"w{n}", orders=1)

    writer = threading.Thread(target=write)
    with running_chain(database):
        writer.start()
        try:
            # At least 15, and on until the chain has linked some of what is written (the
            # chain is not a prompt read model: it gathers a moment's commits per step).
            reports: list[ChainReport] = []
            deadline = time.monotonic() + 30
            while len(reports) < 15 or not any(r.linked for r in reports):
                reports.append(verify_chain(database))
                if time.monotonic() > deadline:
                    break
        finally:
            stop.set()
            writer.join()
    assert all(r.ok for r in reports), [r.lines() for r in reports]
    assert reports[-1].records > reports[0].records
    assert any(r.linked for r in reports)


# ---- a digest ------------------------------------------------------------------------------------


def test_a_digest_proves_the_log_up_to_it_and_accepts_what_came_after(
    chained: Database, ledger: Ledger
) -> None:
    digest = chain_head(chained)
    assert digest is not None
    record_orders(ledger, "after", orders=2)
    link_everything(chained)
    report = verify_chain(chained, digest)
    assert report.ok and report.digest_ok, report.lines()
    assert "matches" in report.summary()

    # A change after the digest's position: no concern of the digest (the chain sees it).
    after = positions(chained)[-3]
    execute(
        chained, "UPDATE ledger_events SET state = state || ' ' WHERE notification_id = %s", after
    )
    report = verify_chain(chained, digest)
    assert report.digest_ok and problems(report) == [("edited", after)]
    execute(
        chained,
        "UPDATE ledger_events SET state = rtrim(state, ' ') WHERE notification_id = %s",
        after,
    )

    # A change before it, hidden from the chain by recomputing the chain from the changed log
    # (a rebuild): only the digest, kept outside the database, still tells.
    before = positions(chained)[4]
    execute(chained, "DELETE FROM ledger_events WHERE notification_id = %s", before)
    rebuild(chained, HashChainProjection())
    assert verify_chain(chained).ok
    report = verify_chain(chained, digest)
    assert not report.digest_ok
    assert problems(report) == [("digest_mismatch", digest[0])]
    assert "does NOT match" in report.summary()


def test_a_digest_of_a_removed_record_or_past_the_log_is_reported(chained: Database) -> None:
    digest = chain_head(chained)
    assert digest is not None
    position, hex_link = digest
    assert problems(verify_chain(chained, (position + 50, hex_link))) == [
        ("digest_beyond_log", position + 50)
    ]
    assert problems(verify_chain(chained, (position, "0" * 64))) == [("digest_mismatch", position)]
    middle = positions(chained)[10]
    with chained.connect() as conn:
        at_middle = conn.execute(
            "SELECT link FROM hash_chain WHERE position = %s", (middle,)
        ).fetchone()
    assert at_middle is not None
    assert verify_chain(chained, (middle, at_middle[0].hex())).digest_ok
    execute(chained, "DELETE FROM ledger_events WHERE notification_id = %s", middle)
    assert problems(verify_chain(chained, (middle, at_middle[0].hex()))) == [
        ("deleted", middle),
        ("digest_mismatch", middle),
    ]
    # The tail removed with its links: the chain cannot tell, the digest can.
    execute(chained, "DELETE FROM ledger_events WHERE notification_id > %s", middle)
    execute(chained, "DELETE FROM hash_chain WHERE position > %s", middle)
    execute(chained, "UPDATE projection_tracking SET position = %s WHERE name = %s", middle, NAME)
    assert problems(verify_chain(chained, digest)) == [
        ("deleted", middle),
        ("digest_beyond_log", position),
    ]


def test_parse_digest() -> None:
    hex_link = "AB" * 32
    assert parse_digest(f" 12:{hex_link}\n") == (12, hex_link.lower())
    for bad in (
        "",
        "12",
        f"12:{hex_link[:-1]}",
        f"x:{hex_link}",
        f"0:{hex_link}",
        f"-1:{hex_link}",
    ):
        with pytest.raises(ValueError, match=r"POSITION:HASH|position must be"):
            parse_digest(bad)


# ---- as a read model ---------------------------------------------------------------------------


def test_it_is_a_default_read_model_that_rebuilds_and_verifies_like_the_others(
    chained: Database,
) -> None:
    assert NAME in [p.name for p in default_projections()]
    assert verify(chained, HashChainProjection()) == []
    before = query(chained, "SELECT position, link FROM hash_chain ORDER BY 1")
    rebuild(chained, HashChainProjection())
    assert query(chained, "SELECT position, link FROM hash_chain ORDER BY 1") == before
    # A fresh replay hashes the log as it is now: a changed record shows as a difference.
    execute(chained, "UPDATE ledger_events SET state = state || ' ' WHERE notification_id = 3")
    assert verify(chained, HashChainProjection())


# ---- the command ---------------------------------------------------------------------------------


def digest_command(database: Database, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_ledger(cwd, "audit", "digest", LEDGER_DATABASE_URL=database.conninfo_url())


def test_ledger_audit_digest_prints_the_head_last(
    tmp_path: Path, database: Database, ledger: Ledger
) -> None:
    done = digest_command(database, tmp_path)  # an empty log: no chain
    assert done.returncode == 2, done
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "no hash chain" in done.stderr

    record_orders(ledger, "a", orders=1)
    done = digest_command(database, tmp_path)  # events, but nobody has built the chain
    assert done.returncode == 2 and "no hash chain" in done.stderr, done

    link_everything(database)
    done = digest_command(database, tmp_path)
    assert done.returncode == 0, done
    last = done.stdout.split()[-1]
    assert re.fullmatch(r"\d+:[0-9a-f]{64}", last), done.stdout
    assert parse_digest(last) == chain_head(database)
    assert verify_chain(database, parse_digest(last)).digest_ok

    record_orders(ledger, "b", orders=1)  # recorded after: the head stays, with a note
    done = digest_command(database, tmp_path)
    assert done.returncode == 0 and done.stdout.split()[-1] == last, done
    assert "not linked yet" in done.stderr
