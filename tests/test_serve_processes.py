"""`ledger serve --workers 2`: one port, two processes, through real parts (real PostgreSQL, the
stripe SDK against a stand-in served on its own port by this test).

The flash sale of `test_hot_product` goes to the one port: every delivery answered 200, one
outcome per session, one refund per refund owed. Both processes answered deliveries (every line
of a child carries its `pid`, its request lines too; each logs how many requests it answered as
it stops), and each read model and side effect ran in exactly one of them (its "running it
here" line, by pid).

`/metrics` reports the service, whichever process answers the scrape: every scrape counts
exactly the requests and webhook deliveries sent, though each process answered a part of them,
and the figures read from the database are there once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.storage import Database
from tests.processes import (
    LEDGER,
    alive,
    clean_env,
    run_ledger,
    serving,
    serving_stopped_by,
)
from tests.shop import deliver, free_port, paid_session
from tests.test_observability import READ_MODELS, ROUTE_COUNT, by_label, families, samples, value
from tests.test_stock_holds import (
    add_product,
    available,
    event_counts,
    ledger_env,
    stand_in_serving,
    wait_for_statuses,
)
from tests.waiting import wait_until
from workers.leadership import Share

SESSIONS = 300
UNITS = 250
CONCURRENT_DELIVERIES = 32
SKU = "print"
# Read models and side effects that must each have run somewhere, and in one process only.
PROCESSORS = {"products", "orders", "order_status", "refunds"}


def log_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a shared serve log (the parent's plain stderr lines skipped)."""
    lines = []
    for text in path.read_text().splitlines():
        if text.startswith("{"):
            lines.append(json.loads(text))
    return lines


def serve_log(workdir: Path, url: str) -> Path:
    return workdir / f"serve-{url.rsplit(':', 1)[1]}.log"  # as `tests.processes` names it


def test_flash_sale_over_one_port_served_by_two_processes(
    tmp_path: Path, database: Database
) -> None:
    with stand_in_serving() as (stand_in, stripe_url):
        env = ledger_env(database, stripe_url)
        # Stopped with SIGTERM, as a service manager stops it.
        with (
            serving_stopped_by(signal.SIGTERM, tmp_path, "--workers", "2", **env) as url,
            httpx.Client(base_url=url, timeout=30) as api,
        ):
            add_product(api, SKU, UNITS)
            sessions = [paid_session(api, stand_in, SKU) for _ in range(SESSIONS)]
            # Each event twice, in random order, 32 in flight, on connections of their own:
            # whichever process accepts a connection answers what comes on it.
            deliveries = [sid for sid in sessions for _ in range(2)]
            random.Random(18).shuffle(deliveries)
            limits = httpx.Limits(max_connections=CONCURRENT_DELIVERIES)
            with (
                httpx.Client(timeout=60, limits=limits) as stripe,
                ThreadPoolExecutor(CONCURRENT_DELIVERIES) as pool,
            ):
                answers = list(pool.map(lambda s: deliver(stripe, stand_in, url, s), deliveries))
            assert Counter(answers) == {200: 2 * SESSIONS}

            # The refund worker (in whichever process holds it) pays back the 50 it owes.
            wait_for_statuses(api, sessions, {"confirmed": UNITS, "refunded": SESSIONS - UNITS})
            assert available(api, SKU) == 0
            refunds = stand_in.refunds()
            assert len(refunds) == SESSIONS - UNITS
            assert len({r["payment_intent"] for r in refunds}) == SESSIONS - UNITS  # once each
        assert event_counts(database, SKU) == {
            "orders": SESSIONS,
            "stock_taken": UNITS,
            "refunds": SESSIONS - UNITS,
        }

    lines = log_lines(serve_log(tmp_path, url))
    served = {
        line["pid"]: line["requests"] for line in lines if line["event"] == "serve_process_stopped"
    }
    # Both children stopped gracefully on the parent's SIGTERM, and both answered requests.
    assert len(served) == 2, served
    total = sum(served.values())
    assert total >= 2 * SESSIONS + SESSIONS  # deliveries, and the checkouts before them
    for pid in served:
        assert not alive(pid)
    # The set-up's requests all go on one kept-alive connection, so one process; the deliveries
    # come on up to 32, which the kernel spreads: each process must have answered its part.
    webhooks = Counter(
        line["pid"]
        for line in lines
        # A webhook's one line is its own (`webhook_handled`, ...), with the request's fields.
        if line.get("path") == "/webhooks/stripe" and "status" in line
    )
    assert sum(webhooks.values()) == 2 * SESSIONS and webhooks.keys() == served.keys(), webhooks
    assert min(webhooks.values()) >= 0.1 * 2 * SESSIONS, webhooks
    print(f"requests per process: {served}, webhooks: {webhooks}")

    running_here: dict[str, set[int]] = defaultdict(set)
    for line in lines:
        if line["event"].startswith("worker ") and line["event"].endswith(": running it here"):
            running_here[line["event"].split()[1].rstrip(":")].add(line["pid"])
    assert running_here.keys() >= PROCESSORS, running_here
    assert all(len(pids) == 1 for pids in running_here.values()), running_here
    # The read models run in one process, the side effects in the other: both cores work.
    assert {pid for pids in running_here.values() for pid in pids} == served.keys(), running_here


def request_lines(lines: list[dict[str, Any]], method: str, path: str) -> Counter[int]:
    """How many `method path` requests each process answered, by pid (their request lines)."""
    return Counter(
        line["pid"]
        for line in lines
        if line.get("method") == method and line.get("path") == path and "status" in line
    )


def test_metrics_report_every_process_whichever_answers_the_scrape(
    tmp_path: Path, database: Database
) -> None:
    reads, paid, scrapes = 120, 10, 24
    deliveries = 2 * paid  # each event twice, as Stripe may: the second is a duplicate
    product_path = f"/api/products/{SKU}"
    # The service's temporary files here, where the test sees them: the metrics directory.
    temp = tmp_path / "temp"
    temp.mkdir()
    with stand_in_serving() as (stand_in, stripe_url):
        env = ledger_env(database, stripe_url, TMPDIR=str(temp))
        # No connection kept alive: each request on a connection of its own, which the kernel
        # gives to either process.
        limits = httpx.Limits(max_keepalive_connections=0)
        with (
            serving_stopped_by(signal.SIGTERM, tmp_path, "--workers", "2", **env) as url,
            httpx.Client(base_url=url, timeout=30) as api,
            httpx.Client(base_url=url, timeout=30, limits=limits) as fresh,
        ):
            (metrics_dir,) = temp.iterdir()  # made by the parent for this run
            assert metrics_dir.name.startswith("ledger-metrics-")
            add_product(api, SKU, 100)
            sessions = [paid_session(api, stand_in, SKU) for _ in range(paid)]
            with ThreadPoolExecutor(8) as pool:
                answers = list(
                    pool.map(lambda _: fresh.get(product_path).status_code, range(reads))
                )
                answers += pool.map(lambda s: deliver(fresh, stand_in, url, s), sessions * 2)
            assert Counter(answers) == {200: reads + deliveries}

            texts = []
            for _ in range(scrapes):
                r = fresh.get("/metrics")
                assert r.status_code == 200, r.text
                texts.append(r.text)
            # Every process wrote its files there.
            assert len(list(metrics_dir.glob("*.db"))) >= 2

        # The parent removed the directory as it stopped.
        assert list(temp.iterdir()) == []

    for seen_before, text in enumerate(texts):
        # Exactly what was sent, whichever process answered; each scrape is counted once
        # answered, so a scrape sees the ones before it.
        product_reads = value(
            text, ROUTE_COUNT, route="/api/products/{sku}", method="GET", status="200"
        )
        assert product_reads == reads, (product_reads, text)
        scraped = value(text, ROUTE_COUNT, route="/metrics", method="GET", status="200")
        assert (scraped or 0) == seen_before  # no series before the first scrape was answered
        outcomes = by_label(text, "ledger_webhook_events_total", "outcome")
        assert sum(outcomes.values()) == deliveries, outcomes
        assert value(text, "ledger_webhook_seconds_count") == deliveries
        webhook_route = value(
            text, ROUTE_COUNT, route="/webhooks/stripe", method="POST", status="200"
        )
        assert webhook_route == deliveries
        # Each refund outcome once, at 0 (every process made it at 0, and none was refunded).
        refunds = by_label(text, "ledger_refunds_total", "outcome")
        assert refunds.keys() >= {"pending", "succeeded", "failed"}
        assert set(refunds.values()) == {0.0}
        assert value(text, "ledger_version_conflicts_total") is not None
        # The figures read from the database: once each (not once per process, no pid label).
        lag = [s for s in samples(text) if s.name == "ledger_projection_lag_seconds"]
        assert sorted(s.labels["read_model"] for s in lag) == READ_MODELS
        assert all(s.labels.keys() == {"read_model"} for s in lag)
        backlog = [s for s in samples(text) if s.name == "ledger_worker_backlog_events"]
        assert len(backlog) == len({s.labels["worker"] for s in backlog}) > 0
        # One process's own figures would be a fraction presented as the whole: left out.
        assert not {f for f in families(text) if f.startswith(("process_", "python_"))}

    lines = log_lines(serve_log(tmp_path, url))
    # Both processes answered their part of the reads, of the deliveries and of the scrapes.
    for method, path, count in [
        ("GET", product_path, reads),
        ("POST", "/webhooks/stripe", deliveries),
        ("GET", "/metrics", scrapes),
    ]:
        answered = request_lines(lines, method, path)
        assert sum(answered.values()) == count and len(answered) == 2, (path, answered)
    print(
        "answered by pid: reads",
        dict(request_lines(lines, "GET", product_path)),
        "scrapes",
        dict(request_lines(lines, "GET", "/metrics")),
    )


def test_one_process_keeps_its_own_registry_whatever_the_environment_says(
    tmp_path: Path, database: Database
) -> None:
    # A directory of another run's files, named from outside: one process does not add them up.
    stale = tmp_path / "stale"
    stale.mkdir()
    bump = (
        "from web.metrics import WEBHOOK_OUTCOMES; WEBHOOK_OUTCOMES.labels('confirmed').inc(1000)"
    )
    env = {"PROMETHEUS_MULTIPROC_DIR": str(stale)}
    subprocess.run([sys.executable, "-c", bump], env=clean_env(**env), check=True)
    files = sorted(stale.iterdir())
    assert files
    with (
        serving(tmp_path, LEDGER_DATABASE_URL=database.conninfo_url(), **env) as url,
        httpx.Client(base_url=url, timeout=30) as api,
    ):
        text = api.get("/metrics").text
    assert value(text, "ledger_webhook_events_total", outcome="confirmed") is None
    assert "process_cpu_seconds_total" in text  # the process's own figures: one process
    assert sorted(stale.iterdir()) == files  # nothing written there either


def test_a_child_that_dies_ends_the_service_with_a_non_zero_status(
    tmp_path: Path, database: Database
) -> None:
    with stand_in_serving() as (_, stripe_url):
        port = free_port()
        log_path = tmp_path / "serve.log"
        with log_path.open("w") as log_file:
            parent = subprocess.Popen(
                [*LEDGER, "serve", "--port", str(port), "--workers", "2"],
                cwd=tmp_path,
                env=clean_env(**ledger_env(database, stripe_url)),
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
            try:

                def both_ready() -> bool:
                    return "from 2 processes" in log_path.read_text()

                wait_until(both_ready, 60, log_path.read_text)
                children = sorted({line["pid"] for line in log_lines(log_path)})
                assert len(children) == 2 and parent.pid not in children
                os.kill(children[0], signal.SIGKILL)
                assert parent.wait(timeout=40) != 0
            finally:
                if parent.poll() is None:
                    parent.kill()
                    parent.wait()
        text = log_path.read_text()
        assert f"process {children[0]} ended" in text
        deadline = time.monotonic() + 5
        while alive(children[1]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(children[1])  # the survivor was stopped, not left orphaned
        assert "serve_process_stopped" in text  # ... gracefully


def test_several_processes_without_a_stripe_key_is_refused_in_one_line(tmp_path: Path) -> None:
    # The built-in stand-in keeps its state in one process's memory.
    result = run_ledger(tmp_path, "serve", "--workers", "2", "--port", str(free_port()))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "STRIPE_API_KEY" in result.stderr, result.stderr


def test_the_processes_shares_cover_every_side_effect_once() -> None:
    shares = [Share.parse(f"{index}/3") for index in range(3)]
    for side_effect in range(5):
        assert sum(share.prefers(side_effect) for share in shares) == 1
        assert not shares[0].prefers(side_effect)  # the first runs the read models
    assert Share.parse("0/1").prefers(0)
    for text in ("3/3", "-1/2", "a/2", "1"):
        with pytest.raises(ValueError):
            Share.parse(text)
