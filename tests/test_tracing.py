"""Tracing (issue 18): with OTEL_EXPORTER_OTLP_ENDPOINT set, `ledger serve` exports each request,
each call to Stripe and each commit as spans of one trace over OTLP/HTTP, to a real receiver;
unset, it installs nothing and exports nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.storage import Database
from tests.otlp import OtlpReceiver, Span
from tests.processes import clean_env, serving
from tests.waiting import wait_until

ADMIN = {"Authorization": "Bearer s3cret"}
# A caller's W3C trace context (the spec's own example ids).
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def _log_records(workdir: Path) -> list[dict[str, Any]]:
    (log_file,) = workdir.glob("serve-*.log")
    return [json.loads(line) for line in log_file.read_text().splitlines() if line.startswith("{")]


def _paid_checkout(api: httpx.Client) -> tuple[str, str]:
    """A product, a cart, its checkout paid on the stand-in: (cart id, session id)."""
    api.put(
        "/api/products/mug",
        json={"name": "Mug", "unit_amount": 1250, "currency": "usd"},
        headers=ADMIN,
    ).raise_for_status()
    api.post("/api/products/mug/stock", json={"quantity": 3}, headers=ADMIN).raise_for_status()
    cart_id = api.post("/api/carts", json={}).json()["cart_id"]
    api.put(f"/api/carts/{cart_id}/items/mug", json={"quantity": 1}).raise_for_status()
    checkout = api.post(f"/api/carts/{cart_id}/checkout").json()
    assert httpx.post(f"{checkout['url']}/pay").status_code == 303
    wait_until(
        lambda: api.get(f"/api/carts/{cart_id}").json()["status"] == "converted",
        15,
        lambda: "the stand-in's webhook never converted the cart",
    )
    return cart_id, checkout["checkout_session_id"]


def _named(spans: list[Span], name: str) -> list[Span]:
    return [s for s in spans if s.name == name]


def test_a_paid_webhook_is_one_trace_with_the_request_the_stripe_fetch_and_the_commit(
    tmp_path: Path, database: Database
) -> None:
    with (
        OtlpReceiver() as receiver,
        serving(
            tmp_path,
            LEDGER_DATABASE_URL=database.conninfo_url(),
            LEDGER_ADMIN_TOKEN="s3cret",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
            OTEL_BSP_SCHEDULE_DELAY="50",  # ms: the test waits for spans, not for a batch
        ) as url,
        httpx.Client(base_url=url) as api,
    ):
        _cart_id, session_id = _paid_checkout(api)

        wait_until(
            lambda: bool(_named(receiver.spans(), "POST /webhooks/stripe")),
            10,
            lambda: sorted({s.name for s in receiver.spans()}),
        )
        (webhook,) = _named(receiver.spans(), "POST /webhooks/stripe")
        assert webhook.kind == "SERVER" and webhook.service == "ledger"
        assert webhook.attributes["http.route"] == "/webhooks/stripe"

        def stripe_fetches(spans: list[Span]) -> list[Span]:
            return [
                s
                for s in spans
                if s.kind == "CLIENT"
                and f"/v1/checkout/sessions/{session_id}"
                in str(s.attributes.get("url.full") or s.attributes.get("http.url"))
            ]

        def commits(spans: list[Span]) -> list[Span]:
            return [s for s in spans if s.name.startswith("commit ") and "Order." in s.name]

        # The whole trace arrives in a batch or two: wait for the parts, then check its shape.
        wait_until(
            lambda: (
                bool(stripe_fetches(receiver.trace(webhook.trace_id)))
                and bool(commits(receiver.trace(webhook.trace_id)))
            ),
            10,
            lambda: [(s.name, s.kind) for s in receiver.trace(webhook.trace_id)],
        )
        in_trace = receiver.trace(webhook.trace_id)
        by_id = {s.span_id: s for s in in_trace}

        def under_webhook(span: Span) -> bool:
            while span.parent_id in by_id:
                span = by_id[span.parent_id]
                if span == webhook:
                    return True
            return False

        # The Stripe fetch, inside the webhook's request, carried its traceparent: the
        # stand-in's own request span (served by the same process) is its child.
        fetch = stripe_fetches(in_trace)[0]
        assert under_webhook(fetch)
        assert any(s.kind == "SERVER" and s.parent_id == fetch.span_id for s in in_trace)
        commit = commits(in_trace)[0]
        assert under_webhook(commit)
        assert commit.attributes["ledger.events"] >= 1

        # The e-mail the confirmed order sends is handled by a worker in a trace of its own,
        # linked to the commit that recorded it.
        def linked_to_commit() -> list[Span]:
            ids = {(c.trace_id, c.span_id) for c in commits(receiver.trace(webhook.trace_id))}
            return [s for s in receiver.spans() if s.kind == "CONSUMER" and set(s.links) & ids]

        wait_until(
            lambda: bool(linked_to_commit()),
            15,
            lambda: [
                (s.name, s.links, s.attributes)
                for s in receiver.spans()
                if s.kind == "CONSUMER" or s.name.startswith("commit")
            ],
        )
        assert all(s.trace_id != webhook.trace_id for s in linked_to_commit())

        # A caller's `traceparent` is honoured: the request continues the caller's trace.
        answer = api.get(
            "/api/products/mug", headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
        )
        assert answer.status_code == 200
        wait_until(
            lambda: bool(receiver.trace(CALLER_TRACE)),
            10,
            lambda: "no span of the caller's trace",
        )
        (product_read,) = receiver.trace(CALLER_TRACE)
        assert product_read.name == "GET /api/products/{sku}"
        assert product_read.parent_id == CALLER_SPAN

    # Log lines carry the trace id of the request they were written in.
    records = _log_records(tmp_path)
    handled = [r for r in records if r.get("event") == "webhook_handled"]
    assert handled and all(r["trace_id"] == webhook.trace_id for r in handled), handled
    reads = [
        r for r in records if r.get("event") == "http_request" and r["path"] == "/api/products/mug"
    ]
    assert [r.get("trace_id") for r in reads][-1] == CALLER_TRACE


def test_off_without_an_endpoint_nothing_is_installed_and_nothing_exported(
    tmp_path: Path, database: Database
) -> None:
    # In a process of its own, as `ledger serve` wires it: the app, the commits and the
    # workers, a request served over HTTP (with a caller's traceparent) and a commit made.
    # Nothing of OpenTelemetry is even imported, so no tracer provider exists and nothing can
    # be exported.
    script = """
import sys
import httpx
from ledger.settings import Settings
from web.app import create_app
from web.bootstrap import background_workers, bootstrap
from web.cli import _logging_and_tracing
from web.serving import run_in_thread

tracing = _logging_and_tracing()
assert tracing is None
services = bootstrap(Settings())
background_workers(services)
with run_in_thread(create_app(services)) as server:
    answer = httpx.put(
        f"{server.url}/api/products/mug",
        json={"name": "Mug", "unit_amount": 1250, "currency": "usd"},
        headers={"Authorization": "Bearer s3cret", "traceparent": sys.argv[1]},
    )
    assert answer.status_code == 201, answer.text
services.close()
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
assert not loaded, loaded
print("ok")
"""
    with OtlpReceiver() as receiver:
        done = subprocess.run(
            [sys.executable, "-c", script, f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"],
            cwd=tmp_path,
            env=clean_env(
                LEDGER_DATABASE_URL=database.conninfo_url(),
                LEDGER_ADMIN_TOKEN="s3cret",
                # Everything but the endpoint: still off.
                OTEL_SERVICE_NAME="ledger",
                OTEL_BSP_SCHEDULE_DELAY="50",
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "ok"
        assert receiver.posts == 0
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any(r.get("event") == "http_request" for r in lines), done.stderr
    assert not any("trace_id" in r for r in lines)


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_only_an_endpoint_turns_tracing_on(environ: dict[str, str], wanted: bool) -> None:
    from web.tracing import tracing_wanted

    assert tracing_wanted(environ) is wanted


def test_an_endpoint_in_dotenv_turns_tracing_on_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from web.tracing import _dotenv_otel

    (tmp_path / ".env").write_text(
        "OTEL_EXPORTER_OTLP_ENDPOINT=http://from-dotenv:4318\n"
        "OTEL_SERVICE_NAME=from-dotenv\nLEDGER_ADMIN_TOKEN=not-ours\n"
    )
    monkeypatch.chdir(tmp_path)
    environ = {"OTEL_SERVICE_NAME": "from-environment"}
    _dotenv_otel(environ)
    assert environ == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://from-dotenv:4318",
        "OTEL_SERVICE_NAME": "from-environment",
    }
