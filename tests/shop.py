"""A whole shop for end-to-end tests: the ledger and the Stripe stand-in, each in its own real
HTTP server, the ledger talking to the stand-in through the real stripe SDK."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from ledger.settings import Settings
from ledger.storage import Database
from stripe_standin import StripeStandIn
from tests.waiting import wait_until
from web.app import create_app
from web.bootstrap import Services, background_workers, bootstrap
from web.serving import RunningServer, run_in_thread

ADMIN = "admin-secret"
AUDITOR = "auditor-secret"
# Two, comma-separated in LEDGER_STOREFRONT_TOKEN: either opens the storefront's endpoints.
STOREFRONT = "storefront-secret"
OTHER_STOREFRONT = "storefront-other"
WEBHOOK_SECRET = "whsec_test_current"
OLD_WEBHOOK_SECRET = "whsec_test_previous"
STRIPE_KEY = "sk_test_ledger"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Shop:
    url: str
    api: httpx.Client
    stripe: StripeStandIn
    services: Services

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN}"}

    def product(self, sku: str, unit_amount: int = 1250, stock: int = 10) -> None:
        r = self.api.put(
            f"/api/products/{sku}",
            json={"name": f"Product {sku}", "unit_amount": unit_amount, "currency": "usd"},
            headers=self.admin(),
        )
        assert r.status_code in (200, 201), r.text
        if stock:
            r = self.api.post(
                f"/api/products/{sku}/stock", json={"quantity": stock}, headers=self.admin()
            )
            assert r.status_code == 200, r.text

    def cart(self, **lines: int) -> str:
        r = self.api.post("/api/carts", json={"user_id": "user-1"})
        assert r.status_code == 201, r.text
        cart_id: str = r.json()["cart_id"]
        for sku, quantity in lines.items():
            r = self.api.put(f"/api/carts/{cart_id}/items/{sku}", json={"quantity": quantity})
            assert r.status_code == 200, r.text
        return cart_id

    def checkout(self, cart_id: str) -> str:
        r = self.api.post(f"/api/carts/{cart_id}/checkout")
        assert r.status_code == 201, r.text
        session_id: str = r.json()["checkout_session_id"]
        return session_id

    def get_cart(self, cart_id: str) -> dict[str, Any]:
        r = self.api.get(f"/api/carts/{cart_id}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def available(self, sku: str) -> int:
        r = self.api.get(f"/api/products/{sku}")
        assert r.status_code == 200, r.text
        available: int = r.json()["available"]
        return available

    def post_webhook(self, payload: bytes, signature: str | None) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if signature is not None:
            headers["Stripe-Signature"] = signature
        return self.api.post("/webhooks/stripe", content=payload, headers=headers)

    def deliver(self, event_type: str, session_id: str) -> httpx.Response:
        payload, signature = self.stripe.build_event(event_type, session_id)
        return self.post_webhook(payload, signature)

    def status(self, session_id: str) -> str:
        """What the storefront's status poll answers for the session."""
        r = self.api.get(f"/api/checkout-sessions/{session_id}/order")
        assert r.status_code == 200, r.text
        status: str = r.json()["status"]
        return status

    def order(self, session_id: str) -> Any:
        from ledger.domain import order_id_for

        return self.services.ledger.get_order(order_id_for(session_id))


def paid_session(api: httpx.Client, stand_in: StripeStandIn, sku: str) -> str:
    """A cart of one unit of `sku`, checked out over `api` and paid at the stand-in; no event
    delivered yet."""
    cart_id = api.post("/api/carts", json={}).json()["cart_id"]
    r = api.put(f"/api/carts/{cart_id}/items/{sku}", json={"quantity": 1})
    assert r.status_code == 200, r.text
    r = api.post(f"/api/carts/{cart_id}/checkout")
    assert r.status_code == 201, r.text
    session_id: str = r.json()["checkout_session_id"]
    stand_in.complete(session_id, "pay")
    return session_id


def deliver(client: httpx.Client, stand_in: StripeStandIn, url: str, session_id: str) -> int:
    """One signed checkout.session.completed for the session, posted to the ledger at `url` as
    Stripe posts it: the answer's status."""
    payload, signature = stand_in.build_event("checkout.session.completed", session_id)
    r = client.post(
        f"{url}/webhooks/stripe",
        content=payload,
        headers={"Content-Type": "application/json", "Stripe-Signature": signature},
    )
    return r.status_code


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    wait_until(check, timeout)


@contextmanager
def running_shop(database: Database, **settings: Any) -> Iterator[Shop]:
    stand_in = StripeStandIn(
        api_key=STRIPE_KEY,
        webhook_url=None,
        webhook_secret=WEBHOOK_SECRET,
        public_base_url="http://127.0.0.1",
    )
    stripe_server: RunningServer = run_in_thread(stand_in.app)
    stand_in.public_base_url = stripe_server.url
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings.setdefault("LEDGER_STOREFRONT_TOKEN", SecretStr(f"{STOREFRONT},{OTHER_STOREFRONT}"))
    config = Settings(
        LEDGER_DATABASE_URL=database.conninfo_url(),
        LEDGER_ADMIN_TOKEN=SecretStr(ADMIN),
        LEDGER_AUDITOR_TOKEN=SecretStr(AUDITOR),
        LEDGER_PUBLIC_URL=url,
        STRIPE_API_KEY=SecretStr(STRIPE_KEY),
        STRIPE_WEBHOOK_SECRET=SecretStr(f"{WEBHOOK_SECRET},{OLD_WEBHOOK_SECRET}"),
        STRIPE_API_BASE=stripe_server.url,
        **settings,
    )
    services = bootstrap(config, database, listen_url=url)
    workers = background_workers(services)
    workers.start()
    server = run_in_thread(create_app(services), port=port)
    stand_in.webhook_url = f"{url}/webhooks/stripe"
    try:
        with httpx.Client(base_url=url, timeout=30) as api:
            yield Shop(url=url, api=api, stripe=stand_in, services=services)
    finally:
        server.stop()
        stand_in.close()
        stripe_server.stop()
        workers.stop()
        services.close()


# ---------------------------------------------------------------- what Stripe recorded

Figure = dict[str, int]  # {"count": n, "amount": minor units}


def _add(figure: Figure, amount: int) -> None:
    figure["count"] += 1
    figure["amount"] += amount


STRIPE_FIGURES = (
    "charged",  # money taken from customers: succeeded PaymentIntents' amount_received
    "authorizations",  # card holds placed (capture_method=manual), whatever became of them
    "captured",  # holds captured
    "released",  # holds cancelled by the merchant (the ledger)
    "lapsed",  # holds Stripe gave up (cancellation_reason "automatic")
    "awaiting_capture",  # holds still requires_capture
    "refunded",  # refunds succeeded or pending
    "refunds_failed",
)


def money_at_stripe(stand_in: StripeStandIn) -> dict[str, dict[str, Figure]]:
    """Per currency, what the stand-in recorded as charged, authorized, captured, released,
    lapsed, awaiting capture and refunded (each a count and an amount)."""
    figures: dict[str, dict[str, Figure]] = {}

    def of(currency: str) -> dict[str, Figure]:
        return figures.setdefault(currency, {k: {"count": 0, "amount": 0} for k in STRIPE_FIGURES})

    for intent in stand_in.payment_intents():
        mine = of(intent["currency"])
        if intent["amount_received"]:
            _add(mine["charged"], int(intent["amount_received"]))
        if intent.get("capture_method") != "manual" or intent["latest_charge"] is None:
            continue
        _add(mine["authorizations"], int(intent["amount"]))
        if intent["status"] == "succeeded":
            _add(mine["captured"], int(intent["amount_received"]))
        elif intent["status"] == "requires_capture":
            _add(mine["awaiting_capture"], int(intent["amount"]))
        elif intent["status"] == "canceled":
            kind = "lapsed" if intent["cancellation_reason"] == "automatic" else "released"
            _add(mine[kind], int(intent["amount"]))
    for refund in stand_in.refunds():
        kind = "refunds_failed" if refund["status"] in ("failed", "canceled") else "refunded"
        _add(of(refund["currency"])[kind], int(refund["amount"]))
    return figures


def stripe_calls(stand_in: StripeStandIn, method: str, path_end: str) -> list[dict[str, Any]]:
    """The stand-in's logged /v1 calls of `method` whose path ends with `path_end`, in order."""
    return [
        r for r in stand_in.requests() if r["method"] == method and r["path"].endswith(path_end)
    ]


def done_once_each(stand_in: StripeStandIn, action: str) -> dict[str, int]:
    """For `action` ("capture" or "cancel"): per PaymentIntent, how many calls the stand-in
    carried out (answered 200, not an idempotent replay). Fails the test unless every call
    about one PaymentIntent carried the same Idempotency-Key."""
    done: dict[str, int] = {}
    keys: dict[str, set[str | None]] = {}
    for call in stand_in.requests():
        parts = call["path"].split("/")  # ["", "v1", "payment_intents", id, action]
        if call["method"] != "POST" or parts[2:3] != ["payment_intents"] or parts[-1] != action:
            continue
        intent = parts[3]
        keys.setdefault(intent, set()).add(call["idempotency_key"])
        carried_out = call["status"] == 200 and not call["replayed"]
        done[intent] = done.get(intent, 0) + carried_out
    several = {i: k for i, k in keys.items() if len(k) != 1 or None in k}
    assert not several, f"{action} of one PaymentIntent under several (or no) keys: {several}"
    return done
