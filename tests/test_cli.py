"""The `ledger` command as an operator runs it: real processes, the embedded default store."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import httpx

from ledger.storage import Database
from tests.processes import LEDGER, clean_env, run_ledger, serving, serving_stopped_by
from tests.shop import free_port
from tests.waiting import wait_until


def test_serve_with_no_configuration_walks_the_whole_flow(tmp_path: Path) -> None:
    admin = {"Authorization": "Bearer s3cret"}
    with serving(tmp_path, LEDGER_ADMIN_TOKEN="s3cret") as url, httpx.Client(base_url=url) as api:
        assert (
            api.put(
                "/api/products/mug",
                json={"name": "Mug", "unit_amount": 1250, "currency": "usd"},
                headers=admin,
            ).status_code
            == 201
        )
        assert api.post("/api/products/mug/stock", json={"quantity": 3}, headers=admin).json() == {
            "sku": "mug",
            "on_hand": 3,
        }
        cart_id = api.post("/api/carts", json={}).json()["cart_id"]
        api.put(f"/api/carts/{cart_id}/items/mug", json={"quantity": 2})
        checkout = api.post(f"/api/carts/{cart_id}/checkout").json()
        pay_page = httpx.get(checkout["url"])
        assert pay_page.status_code == 200
        action = re.search(r'action="([^"]*/pay)"', pay_page.text)
        assert action, pay_page.text
        paid = httpx.post(httpx.URL(checkout["url"]).join(action.group(1)))
        assert paid.status_code == 303
        assert paid.headers["location"] == (
            f"{url}/checkout/success?session_id={checkout['checkout_session_id']}"
        )
        wait_until(
            lambda: api.get(f"/api/carts/{cart_id}").json()["status"] == "converted",
            15,
            lambda: "the stand-in's webhook never converted the cart",
        )
        assert api.get("/api/products/mug").json()["available"] == 1

    # Structured logs: one JSON object per line; a webhook's lines carry its ids and outcome.
    (log_file,) = tmp_path.glob("serve-*.log")
    records = [
        json.loads(line) for line in log_file.read_text().splitlines() if line.startswith("{")
    ]
    handled = [r for r in records if r.get("event") == "webhook_handled"]
    assert handled, records
    for record in handled:
        assert record["request_id"] and record["stripe_event_id"].startswith("evt_")
        assert record["session_id"] == checkout["checkout_session_id"]
        assert record["outcome"] == "confirmed"
    assert "s3cret" not in log_file.read_text()

    # The embedded store keeps everything across a restart.
    with serving(tmp_path) as url:
        assert httpx.get(f"{url}/api/products/mug").json()["available"] == 1
        assert httpx.get(f"{url}/api/carts/{cart_id}").json()["status"] == "converted"
    assert (tmp_path / ".ledger" / "pgdata" / "PG_VERSION").exists()


def test_sigterm_stops_serve_and_its_embedded_database(tmp_path: Path) -> None:
    # As `docker stop` or systemd stop it: the embedded server must stop with it, and must
    # not be kept alive by a handle the stopped process failed to release.
    pid_file = tmp_path / ".ledger" / "pgdata" / "postmaster.pid"
    for _ in range(2):
        with serving_stopped_by(signal.SIGTERM, tmp_path):
            assert pid_file.exists()
        wait_until(
            lambda: not pid_file.exists(),
            15,
            lambda: "the embedded PostgreSQL outlived ledger serve",
        )


def test_serve_demo_lists_products_for_the_storefront(tmp_path: Path) -> None:
    with serving(tmp_path, "--demo") as url:
        products = httpx.get(f"{url}/api/products").json()["products"]
        page = httpx.get(f"{url}/")
    assert len(products) == 4
    assert all(p["available"] > 0 for p in products)
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]

    # A second start adds nothing twice.
    with serving(tmp_path, "--demo") as url:
        again = httpx.get(f"{url}/api/products").json()["products"]
    assert again == products


def test_workers_in_their_own_process_and_a_rebuild(tmp_path: Path, database: Database) -> None:
    url_env = {"LEDGER_DATABASE_URL": database.conninfo_url(), "LEDGER_ADMIN_TOKEN": "s3cret"}
    admin = {"Authorization": "Bearer s3cret"}
    with serving(tmp_path, "--no-workers", **url_env) as url, httpx.Client(base_url=url) as api:
        api.put(
            "/api/products/mug",
            json={"name": "Mug", "unit_amount": 900, "currency": "usd"},
            headers=admin,
        )
        api.post("/api/products/mug/stock", json={"quantity": 4}, headers=admin)
        # Nobody runs the read models yet: the catalog does not know the product.
        assert api.get("/api/products/mug").status_code == 404

        worker = subprocess.Popen(
            [*LEDGER, "work"],
            cwd=tmp_path,
            env=clean_env(**url_env, LEDGER_PUBLIC_URL=url),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(
                lambda: api.get("/api/products/mug").status_code == 200,
                20,
                lambda: "ledger work never built the read model",
            )
            assert api.get("/api/products/mug").json()["available"] == 4

            # A refund is issued from this process, through the stand-in `ledger serve` serves.
            sessions = []
            for _ in range(2):
                cart = api.post("/api/carts", json={}).json()["cart_id"]
                api.put(f"/api/carts/{cart}/items/mug", json={"quantity": 3})
                sessions.append(api.post(f"/api/carts/{cart}/checkout").json())
            for session in sessions:
                assert httpx.post(f"{session['url']}/pay").status_code == 303
            wait_until(
                lambda: statuses(api, sessions) == ["confirmed", "refunded"],
                20,
                lambda: statuses(api, sessions),
            )

            rebuilt = run_ledger(tmp_path, "projections", "rebuild", **url_env)
            assert rebuilt.returncode == 0, rebuilt.stderr
            assert "order_status" in rebuilt.stdout and "products" in rebuilt.stdout
            assert api.get("/api/products").json()["products"] == [
                {"sku": "mug", "name": "Mug", "unit_amount": 900, "currency": "usd", "available": 1}
            ]
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=20) == 0


def statuses(api: httpx.Client, sessions: list[dict[str, str]]) -> list[str]:
    return [
        api.get(f"/api/checkout-sessions/{s['checkout_session_id']}/order").json()["status"]
        for s in sessions
    ]


def test_a_stripe_key_without_a_webhook_secret_is_one_clear_line(tmp_path: Path) -> None:
    result = run_ledger(tmp_path, "serve", STRIPE_API_KEY="sk_test_x")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "STRIPE_WEBHOOK_SECRET" in lines[0]
    assert "Traceback" not in result.stderr


def test_an_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    result = run_ledger(
        tmp_path,
        "serve",
        LEDGER_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{port}/ledger",
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "database" in lines[0]
    assert "Traceback" not in result.stderr


def test_a_malformed_database_url_is_one_clear_line(tmp_path: Path) -> None:
    result = run_ledger(tmp_path, "serve", LEDGER_DATABASE_URL="postgresql://[::1")
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_empty_variables_count_as_unset(tmp_path: Path) -> None:
    # As a compose file's `STRIPE_API_KEY: ${STRIPE_API_KEY:-}` leaves them.
    with serving(tmp_path, STRIPE_API_KEY="", STRIPE_WEBHOOK_SECRET="") as url:
        assert httpx.get(f"{url}/readyz").status_code == 200


def test_a_dotenv_file_configures_the_ledger(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("STRIPE_API_KEY=sk_test_from_dotenv\n")
    result = run_ledger(tmp_path, "serve")
    assert result.returncode != 0
    assert "STRIPE_WEBHOOK_SECRET" in result.stderr
